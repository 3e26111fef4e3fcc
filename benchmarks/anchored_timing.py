"""Timing under other load, with and without anchors: how far a slow spell moves measured latencies.

    .venv/bin/python benchmarks/anchored_timing.py [--run runs/quickstart] [--subnets 96]
                                                   [--load-start 5] [--load-seconds 25]

Random subnets of a finished run are timed three times: once on the quiet machine (the baseline),
then twice while a busy-loop process competes for the cores for `--load-seconds`, starting
`--load-start` s into the timing: with the run's `measure.anchors` (chunks whose anchors disagree
with the run's table are timed again, nas.latency.time_with_anchors) and with anchors off. Each
pass is compared with the baseline: share of subnets within ±5 / ±10 %, median relative difference,
attempts and scale per chunk, wall time. Needs an otherwise idle machine. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from predictor_quality import sample_extra  # noqa: E402  (benchmarks/ is the script's directory)

from nas.context import Context, prepare  # noqa: E402
from nas.data import load_data  # noqa: E402
from nas.measure import TIMING_CHUNK, load_table, measure_configs  # noqa: E402
from nas.train import load_supernet  # noqa: E402


def with_anchors(ctx: Context, anchors: int) -> Context:
    """The same run with `measure.anchors` replaced."""
    measure = dataclasses.replace(ctx.exp.measure, anchors=anchors)
    return dataclasses.replace(ctx, exp=dataclasses.replace(ctx.exp, measure=measure))


def timed_pass(ctx: Context, model: Any, configs: list, splits: Any, reference: list, load: tuple[float, float] | None,
               baseline: np.ndarray | None) -> tuple[np.ndarray, dict[str, Any]]:
    """Latencies of `configs` (with a competing busy loop when `load` = (start, seconds)) and a summary."""
    hog = None
    if load:
        code = f"import time\ntime.sleep({load[0]})\nt = time.time()\nwhile time.time() - t < {load[1]}: pass"
        hog = subprocess.Popen([sys.executable, "-c", code])
    t0 = time.time()
    rows = measure_configs(ctx, model, configs, splits.x_val, splits.y_val, on_row=lambda r: None, quiet=True,
                           reference=reference)
    wall = time.time() - t0
    if hog:
        hog.wait()
    y = np.array([r["latency_ms"] for r in rows])
    out: dict[str, Any] = {"anchors": ctx.exp.measure.anchors, "wall_s": round(wall, 1),
                           "attempts_per_chunk": [r.get("latency_attempts", 1) for r in rows[::TIMING_CHUNK]],
                           "scale_per_chunk": [round(r.get("latency_session_scale", 1.0), 3)
                                               for r in rows[::TIMING_CHUNK]]}
    if baseline is not None:
        rel = np.abs(y / baseline - 1)
        out.update(within_5pct=float(np.mean(rel <= 0.05)), within_10pct=float(np.mean(rel <= 0.10)),
                   median_rel_diff=float(np.median(rel)))
    return y, out


def main() -> None:
    """Quiet baseline, then loaded passes with and without anchors; print each and a final JSON line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="runs/quickstart", help="a run whose measure stage is done")
    ap.add_argument("--subnets", type=int, default=96)
    ap.add_argument("--load-start", type=float, default=5.0)
    ap.add_argument("--load-seconds", type=float, default=25.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    ctx = prepare(Path(args.run) / "experiment.toml", run_dir=args.run)
    table = load_table(ctx)
    model, splits = load_supernet(ctx), load_data(ctx.exp.data)
    configs_list = sample_extra(ctx, [r["config"] for r in table], len(table) + args.subnets, args.seed)
    baseline, quiet = timed_pass(ctx, model, configs_list, splits, table, None, None)
    print("quiet", json.dumps(quiet), flush=True)
    summary: dict[str, Any] = {"run": args.run, "subnets": len(configs_list),
                               "load": [args.load_start, args.load_seconds], "quiet": quiet, "loaded": []}
    for anchors in (ctx.exp.measure.anchors, 0):
        _, res = timed_pass(with_anchors(ctx, anchors), model, configs_list, splits, table,
                            (args.load_start, args.load_seconds), baseline)
        print("loaded", json.dumps(res), flush=True)
        summary["loaded"].append(res)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
