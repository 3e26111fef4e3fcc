"""Quickstart figures: wall time of `nas run` from scratch, predictor quality, front size, and
the latency harness's own repeatability (two independent timing passes over the same subnets).

    .venv/bin/python benchmarks/quickstart.py [--experiment experiments/quickstart.toml]
                                              [--run-dir runs/bench-quickstart] [--repeatability 40]

Last line: one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time

import numpy as np


def repeatability(ctx, n: int) -> dict[str, float]:
    """The measure stage's own agreement figure over `n` of its subnets, in a further independent pass."""
    from nas.measure import load_table
    from nas.measure import repeatability as agreement
    from nas.train import load_supernet

    return agreement(ctx, load_supernet(ctx), load_table(ctx), count=n, quiet=True)


def quantised_time_factor(ctx, table: list[dict]) -> float:
    """exp(b) of log latency ~ a + c*log MACs + b*(share of quantised layers): the time factor of an
    all-quantised subnet over a float one of equal MACs (int8 kernels or fake-quant ops, per
    `measure.kernels`)."""
    rows, y = [], []
    for r in table:
        bits = [c.bits for c in ctx.family.layer_costs(ctx.space, r["config"])]
        rows.append([1.0, np.log(r["macs"]), np.mean([b < 32 for b in bits])])
        y.append(np.log(r["latency_ms"]))
    coef = np.linalg.lstsq(np.array(rows), np.array(y), rcond=None)[0]
    return float(np.exp(coef[2]))


def main() -> None:
    """Run the quickstart from scratch and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="experiments/quickstart.toml")
    parser.add_argument("--run-dir", default="runs/bench-quickstart")
    parser.add_argument("--repeatability", type=int, default=40, help="subnets timed twice (0 = skip)")
    args = parser.parse_args()

    from nas.context import prepare
    from nas.pipeline import run_all

    shutil.rmtree(args.run_dir, ignore_errors=True)
    ctx = prepare(args.experiment, run_dir=args.run_dir)
    t0 = time.time()
    stages = run_all(ctx, quiet=True)
    wall = time.time() - t0
    quality = json.loads(ctx.path("fit", "quality.json").read_text())
    search = json.loads(ctx.path("search", "stamp.json").read_text())
    exported = json.loads(ctx.path("export", "front.json").read_text())["members"]
    table = [json.loads(x) for x in ctx.path("measure", "table.jsonl").read_text().splitlines()]
    figures = {
        "experiment": args.experiment,
        "nas_run_wall_s": round(wall, 1),
        "stage_wall_s": {k: v["wall_s"] for k, v in stages.items() if isinstance(v, dict)},
        "measured_subnets": len(table),
        "latency_median_rel_iqr": float(np.median([r["latency_iqr_ms"] / r["latency_ms"] for r in table])),
        "quantised_time_factor_at_equal_macs": quantised_time_factor(ctx, table),
        "accuracy_predictor": {"kind": quality["accuracy"]["kind"], **quality["accuracy"]["holdout"]},
        "latency_predictor": {"kind": quality["latency_ms"]["kind"], **quality["latency_ms"]["holdout"]},
        "macs_proxy_kendall_tau": quality["latency_ms"]["macs_proxy_kendall_tau"],
        "trials": search["trials"], "trials_per_s": search["trials_per_s"],
        "predicted_front": search["predicted_front"], "measured_front": search["measured_front"],
        "exported": len(exported),
        "best_test_accuracy": max(m["test_accuracy"] for m in exported),
    }
    if args.repeatability:
        figures["latency_repeatability"] = repeatability(ctx, args.repeatability)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
