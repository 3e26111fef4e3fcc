"""Does the budget query's evolutionary search find what scoring every subnet finds? For one run
and a few budgets, the answer of `nas query --from predictors` as evolved and as enumerated.

    .venv/bin/python benchmarks/budget_query.py runs/transformer --budget latency_ms=0.4 \\
        --budget latency_ms=0.5 --budget latency_ms=0.8          # ~5 min per budget for the enumeration

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import nas.budget_query as bq  # noqa: E402
from nas.query import run_context  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Evolved vs enumerated answer per budget; last line JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--budget", action="append", required=True, help="one query per flag, e.g. latency_ms=0.5")
    args = ap.parse_args(argv)
    ctx = run_context(args.run_dir)
    # The search is measured, not the whole-space scores the query keeps in RUN/query/scores.npz: with
    # them the "evolved" answer was the cached enumeration (and this wrote into the run directory).
    bq._load_scores = lambda *_: None
    bq._save_scores = lambda *_: None
    rows = []
    for budget in args.budget:
        bq.ENUMERATE_MAX, bq.ENUMERATE_SECONDS = 0, 0.0  # force the evolution
        evolved = bq.best_predicted(ctx, [budget])
        bq.ENUMERATE_MAX, bq.ENUMERATE_SECONDS = 10**7, float("inf")  # force scoring every subnet
        exhaustive = bq.best_predicted(ctx, [budget])
        row = {"budget": budget, "space_size": exhaustive["space_size"], "feasible": exhaustive["feasible"],
               "evolved_searched": evolved["searched"], "evolved_s": evolved["query_ms"] / 1e3,
               "exhaustive_s": exhaustive["query_ms"] / 1e3, "evolved_accuracy": evolved["predicted"]["accuracy"],
               "exhaustive_accuracy": exhaustive["predicted"]["accuracy"],
               "same_config": evolved["config"] == exhaustive["config"]}
        rows.append(row)
        print(f"{budget}: evolved {row['evolved_accuracy']:.4f} ({row['evolved_searched']:,} scored, "
              f"{row['evolved_s']:.1f} s), every subnet {row['exhaustive_accuracy']:.4f} "
              f"({row['space_size']:,}, {row['exhaustive_s']:.0f} s), same config: {row['same_config']}", flush=True)
    print(json.dumps({"run_dir": args.run_dir, "results": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
