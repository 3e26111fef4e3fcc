"""Peak memory of scoring accuracy (nas.measure.accuracy_many) on CIFAR-shaped data: the supernet
of experiments/cnn_gpu.toml (BatchNorm recalibrated on its 1,024 training images per subnet),
16 random subnets, random 32x32x3 images written as the user's .npz.

    .venv/bin/python benchmarks/eval_memory.py [--n-train 2000] [--eval-batch-size 4096]

The validation split is 20 % of --n-train. Prints accuracy of the first subnets (chance: random
labels), wall seconds and the process's peak RSS; an allocation past the machine's memory ends
in jax's RESOURCE_EXHAUSTED error instead. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    """Write the data and experiment, score 16 subnets once, report time and peak memory."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-train", type=int, default=2000)
    ap.add_argument("--eval-batch-size", type=int, default=4096, help="measure.eval_batch_size")
    args = ap.parse_args(argv)

    from flax import nnx

    from nas.context import prepare
    from nas.data import load_data
    from nas.measure import accuracy_many, accuracy_plan

    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        np.savez(Path(tmp) / "cifar.npz", x_train=rng.random((args.n_train, 32, 32, 3), np.float32),
                 y_train=rng.integers(0, 10, args.n_train), x_test=rng.random((200, 32, 32, 3), np.float32),
                 y_test=rng.integers(0, 10, 200))
        toml = (root / "experiments" / "cnn_gpu.toml").read_text()
        toml = toml.replace('dataset = "digits"', f'dataset = "npz"\npath = "{tmp}/cifar.npz"', 1)
        toml = toml.replace("[measure]", f"[measure]\neval_batch_size = {args.eval_batch_size}", 1)
        (Path(tmp) / "exp.toml").write_text(toml)
        ctx = prepare(Path(tmp) / "exp.toml", run_dir=Path(tmp) / "run")
        model = ctx.family.build(ctx.space, rngs=nnx.Rngs(0))
        data = load_data(ctx.exp.data)
        pick = np.random.default_rng(1)
        configs = [ctx.space.sample(pick) for _ in range(16)]
        t0 = time.perf_counter()
        acc = accuracy_many(ctx, model, configs, data.x_val, data.y_val)
        wall = time.perf_counter() - t0
    plan = accuracy_plan(len(data.x_val), ctx.exp.measure.calibration_samples, args.eval_batch_size)
    out = {"n_val": len(data.x_val), "calibration_samples": ctx.exp.measure.calibration_samples,
           "eval_batch_size": args.eval_batch_size, "configs_per_call": plan[0], "slice": plan[1],
           "slices": plan[2], "accuracy_first4": [round(float(a), 3) for a in acc[:4]], "wall_s": round(wall, 1),
           "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
