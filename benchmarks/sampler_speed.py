"""NSGA-II sampler throughput alone: ask/tell N trials (population 50, 12 categorical parameters,
3 objectives and a constraint, in-memory storage), with the project's sampler or Optuna's stock one.

Usage: .venv/bin/python benchmarks/sampler_speed.py [N] [--stock]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import optuna

from nas.ga_samplers import _FITS, nsga2


def main() -> None:
    """Run the ask/tell loop and print one line: Optuna version, sampler, seconds, trials/s, distinct configs."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("trials", type=int, nargs="?", default=10_000)
    ap.add_argument("--stock", action="store_true", help="Optuna's NSGAIISampler instead of nas.ga_samplers'")
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    choices = {f"w{i}": [16, 24, 32, 48, 64] for i in range(8)} | {f"b{i}": [2, 4, 8, 32] for i in range(4)}
    sampler = (optuna.samplers.NSGAIISampler if args.stock else nsga2)(population_size=50, seed=0)
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"], sampler=sampler)
    t0, configs = time.perf_counter(), set()
    for _ in range(args.trials):
        trial = study.ask()
        params = {k: trial.suggest_categorical(k, v) for k, v in choices.items()}
        x = np.array(list(params.values()), float)
        configs.add(tuple(params.values()))
        trial.set_constraint("budget", float(x[:8].sum() - 300))
        study.tell(trial, [float(np.log(x).sum()), float(x.sum()), float(x[8:].sum() * x[:4].sum())])
    dt = time.perf_counter() - t0
    which = "stock" if args.stock or not _FITS else "nas.ga_samplers"
    print(f"optuna {optuna.__version__} {which}: {args.trials} trials in {dt:.1f} s ({args.trials / dt:.0f}/s), "
          f"{len(configs)} distinct configs")


if __name__ == "__main__":
    main()
