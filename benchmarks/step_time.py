"""Train-step wall time of a family: one config vs the 4-config sandwich, in a given batching mode.

    .venv/bin/python benchmarks/step_time.py experiments/cnn.toml vmap|loop

Prints compile seconds and mean step milliseconds (5 steps) for 1 and 4 configs.
"""

from __future__ import annotations

import argparse
import time

import jax.numpy as jnp

from nas.context import prepare
from nas.data import load_data
from nas.train import init_state, sandwich_configs, train_step


def main() -> None:
    """Time one and four configs per step."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("experiment", help="experiment TOML file")
    ap.add_argument("batching", choices=["vmap", "loop"], help="how the sandwich's subnets are batched")
    args = ap.parse_args()
    experiment, batching = args.experiment, args.batching
    ctx = prepare(experiment, run_dir="/tmp/runs/step-time")
    cfg = ctx.exp.train
    splits = load_data(ctx.exp.data)
    x, y = jnp.asarray(splits.x_train[: cfg.batch_size]), jnp.asarray(splits.y_train[: cfg.batch_size])
    for n in (1, 4):
        g, p, r, o, tx = init_state(ctx)
        a = {k: jnp.asarray(v) for k, v in ctx.family.active(ctx.space, sandwich_configs(ctx, 0, 2)[:n]).items()}
        t0 = time.perf_counter()
        p, o, loss, _ = train_step(g, tx, cfg, p, o, r, x, y, a, batching=batching)
        loss.block_until_ready()
        compile_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(5):
            p, o, loss, _ = train_step(g, tx, cfg, p, o, r, x, y, a, batching=batching)
        loss.block_until_ready()
        print(f"{n} configs: compile {compile_s:.1f} s, step {(time.perf_counter() - t0) / 5 * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
