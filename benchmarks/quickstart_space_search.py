"""Search strategies on the whole quickstart space as a table: every one of its 33,680 subnets
with its predicted accuracy and latency (the run's fitted predictors) and exact size, written as
a NAS-Bench-style CSV, then `bench_search` per strategy, evaluation budget and seed.

    .venv/bin/python benchmarks/quickstart_space_search.py [--run-dir runs/quickstart]
        [--seeds 5] [--evals 100 300] [--samplers random nsga2 tpe refit] [--reuse-table]

Needs a run whose fit stage is done (e.g. after `make quickstart`). `--reuse-table` reads the
run's `space_table.csv` written by an earlier call instead of writing it again (the transformer
run's 367,902 rows take about 5 minutes to write). Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np


def write_space_table(run_dir: Path, path: Path) -> int:
    """Every subnet of the run's space with predicted accuracy / latency and exact size, as CSV."""
    from nas.context import prepare
    from nas.io import read_json
    from nas.oracle import Oracle

    ctx = prepare(read_json(run_dir / "run.json", "run description")["experiment"], run_dir=run_dir)
    configs = ctx.space.enumerate()
    values = Oracle(ctx).evaluate(configs)
    names = ctx.space.names
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(names + ["accuracy", "latency_ms", "size_kb"])
        for i, c in enumerate(configs):
            w.writerow([c[n] for n in names] + [f"{values['accuracy'][i]:.6f}", f"{values['latency_ms'][i]:.6g}",
                                                 f"{values['size_kb'][i]:.6g}"])
    return len(configs)


def main() -> None:
    """Write the table, then run every strategy on it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", default="runs/quickstart")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--evals", type=int, nargs="+", default=[100, 300])
    parser.add_argument("--samplers", nargs="+", default=["random", "nsga2", "tpe", "refit"])
    parser.add_argument("--reuse-table", action="store_true", help="read RUN/space_table.csv if it is there")
    args = parser.parse_args()

    from nas.tabular import bench_search, load_table

    table = Path(args.run_dir) / "space_table.csv"
    objectives = ["accuracy:max", "latency_ms:min", "size_kb:min"]
    if not (args.reuse_table and table.exists()):
        write_space_table(Path(args.run_dir), table)
    loaded = load_table(table, objectives)
    rows = len(loaded.configs)
    results = {}
    for sampler in args.samplers:
        for evals in args.evals:
            t0 = time.time()
            ratios = [bench_search(table, objectives, [], evals, sampler=sampler, seed=s, table=loaded)["hv_ratio"]
                      for s in range(args.seeds)]
            results[f"{sampler}@{evals}"] = {"hv_ratio_mean": float(np.mean(ratios)),
                                             "hv_ratio_min": float(np.min(ratios)),
                                             "wall_s_per_run": round((time.time() - t0) / args.seeds, 1)}
            print(sampler, evals, json.dumps(results[f"{sampler}@{evals}"]), flush=True)
    print(json.dumps({"table": str(table), "rows": rows, "objectives": objectives, "seeds": args.seeds,
                      "results": results}))


if __name__ == "__main__":
    main()
