"""Predictor-evaluated search throughput: N trials on a finished run's predictors, with 1 and 2
workers on one journal study, and the exact trial count checked afterwards.

    .venv/bin/python benchmarks/search_scale.py [--experiment experiments/quickstart.toml]
        [--run-dir runs/quickstart] [--trials 10000] [--workers 1 2]

The run directory must have its fit stage done (e.g. after `make quickstart`). The search runs
on a copy, never on the run itself. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import tempfile
import time
from pathlib import Path


def scaled_experiment(source: Path, trials: int, folder: Path) -> Path:
    """A copy of the experiment file with [search] trials replaced (the rest untouched)."""
    text = source.read_text()
    head, sep, tail = text.partition("[search]")
    if not sep:
        tail = "\n"
        head, sep = text + "\n", "[search]"
    tail = re.sub(r"(?m)^trials\s*=.*$", "", tail)
    path = folder / source.name
    path.write_text(f"{head}{sep}\ntrials = {trials}\n{tail}")
    return path


def main() -> None:
    """Time the search stage's trials for each worker count."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="experiments/quickstart.toml")
    parser.add_argument("--run-dir", default="runs/quickstart")
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()

    import optuna

    from nas.context import prepare
    from nas.search import search, storage_url, study_name

    results = []
    for workers in args.workers:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            run_dir = tmp / "run"
            shutil.copytree(args.run_dir, run_dir, ignore=shutil.ignore_patterns("search", "export"))
            ctx = prepare(scaled_experiment(Path(args.experiment), args.trials, tmp), run_dir=run_dir)
            ctx.require("fit")
            t0 = time.time()
            summary = search(ctx, quiet=True, workers=workers)
            wall = time.time() - t0
            study = optuna.load_study(study_name=study_name(ctx, 0), storage=storage_url(ctx))
            complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            results.append({
                "workers": workers, "trials": len(complete),
                "distinct_trial_uids": len({t.user_attrs["uid"] for t in complete}),
                "distinct_configs": len({json.dumps(t.user_attrs["config"], sort_keys=True) for t in complete}),
                "workers_that_added_trials": summary["workers"],
                "trial_phase_s": summary["trial_wall_s"],
                "trials_per_s": round(len(complete) / summary["trial_wall_s"], 1),
                "search_stage_wall_s": round(wall, 1),
                "predicted_front": summary["predicted_front"], "measured_front": summary["measured_front"],
            })
            print(json.dumps(results[-1]), flush=True)
    print(json.dumps({"experiment": args.experiment, "sampler": ctx.exp.search.sampler,
                      "population_size": ctx.exp.search.population_size, "results": results}))


if __name__ == "__main__":
    main()
