"""The fixed cost of one call of the timing loop, and what it adds to a loop-timed latency.

Synthetic programs (dense and 3x3-convolution stacks, 0.5-40 ms per call on a 2-core CPU) are
compiled with `nas.latency.compile_program`; each round runs every program at every loop count
(interleaved, as the measure stage's rounds are), and the per-iteration median at n is compared
with the one at 16 n (where the fixed cost is spread 16 times thinner). Also reported: the loop
count the harness picks at `--min-time-ms`, and the per-iteration time it would report there.

    .venv/bin/python benchmarks/loop_overhead.py --min-time-ms 10 --rounds 15

Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nas.latency import compile_program  # noqa: E402

# (name, width, depth, batch, image side or None for a dense stack)
PROGRAMS = (("dense256", 256, 3, 256, None), ("dense512", 512, 3, 256, None), ("conv16", 16, 2, 16, 16),
            ("conv24", 24, 2, 32, 24), ("conv32", 32, 3, 32, 32), ("conv48", 48, 3, 48, 32))


def program(width: int, depth: int, batch: int, side: int | None) -> tuple[Any, list[jax.Array], jax.Array]:
    """A stack of `depth` ReLU layers (dense, or 3x3 same-padded convolutions on side x side images)."""
    key = jax.random.PRNGKey(0)
    if side is None:
        weights = [jax.random.normal(key, (width, width)) * 0.05 for _ in range(depth)]
        return (lambda p, v: _dense(p, v)), weights, jnp.ones((batch, width))
    weights = [jax.random.normal(key, (3, 3, width, width)) * 0.1 for _ in range(depth)]
    return (lambda p, v: _conv(p, v)), weights, jnp.ones((batch, side, side, width))


def _dense(params: list[jax.Array], v: jax.Array) -> jax.Array:
    for w in params:
        v = jax.nn.relu(v @ w)
    return v


def _conv(params: list[jax.Array], v: jax.Array) -> jax.Array:
    for w in params:
        v = jax.nn.relu(jax.lax.conv_general_dilated(v, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")))
    return v


def main(argv: list[str] | None = None) -> int:
    """Per program: loop count picked, per-iteration ms at n and 16 n, the excess, the implied fixed cost."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--min-time-ms", type=float, default=10.0, help="the harness's measure.min_time_ms")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds")
    parser.add_argument("--warm", action="store_true", help="run each program once, untimed, before each timing")
    args = parser.parse_args(argv)
    device = jax.devices("cpu")[0]
    progs = [(name, compile_program(*program(*spec), device=device, min_time_ms=args.min_time_ms))
             for name, *spec in PROGRAMS]
    samples: dict[tuple[str, int], list[float]] = {}
    for _ in range(args.rounds):
        for name, prog in progs:
            for n in (prog.iterations, 16 * prog.iterations):
                if args.warm:
                    prog.run(1)
                samples.setdefault((name, n), []).append(prog.run(n) * 1e3 / n)
    rows = []
    for name, prog in progs:
        n = prog.iterations
        at_n, at_16n = float(np.median(samples[name, n])), float(np.median(samples[name, 16 * n]))
        row = {"program": name, "iterations": n, "ms_per_iter": round(at_n, 4), "ms_per_iter_at_16n": round(at_16n, 4),
               "excess": round(at_n / at_16n - 1, 4), "implied_fixed_ms": round((at_n - at_16n) * n * 16 / 15, 3)}
        rows.append(row)
        print(f"{name:9s} n={n:5d}  {at_n:9.4f} ms/iter  at 16n {at_16n:9.4f}  excess {row['excess']:+.1%}  "
              f"fixed ~{row['implied_fixed_ms']:.2f} ms", flush=True)
    print(json.dumps({"min_time_ms": args.min_time_ms, "rounds": args.rounds, "warm": args.warm, "programs": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
