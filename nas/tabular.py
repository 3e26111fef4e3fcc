"""Tabular benchmark mode: compare search strategies on a NAS-Bench-style table (one row per
architecture: choice columns + measured metric columns) by the hypervolume they reach.

Rules that keep the comparison honest:

- An evaluation is one distinct config looked up through an `Oracle`, the only object that holds
  the table's metrics; strategies get the space (choice values, no metrics), the list of configs
  the table has rows for (choice columns only: `Problem.rows`) and the oracle. Looking up a config
  again is free; a config absent from the table costs an evaluation and is infeasible (the plain
  samplers may propose such configs; refit keeps to the listed ones).
- Only the reference point and the exhaustive front read the whole table. Hypervolume is taken
  on objectives normalised per objective to [0, 1] by the table's [best, worst] range, with the
  reference point at the worst value of each objective (1 after normalisation), so objectives of
  different scales (accuracy in [0.7, 0.95], latency in ms) count equally. An objective constant
  over the table is given a unit range, its reference one unit past that value: it separates no
  configs, so it scales every hypervolume by 1 rather than making them all 0.
- Duplicated configs in the table: the first row is kept; `Table.duplicates` counts the others
  and `run_bench_search` says so on stderr.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nas.config import SEED_TEXT, Budget, Objective, is_seed
from nas.errors import NasError, NoFeasibleError
from nas.hypervolume import hypervolume, nondominated_mask
from nas.io import check_out_path, write_bytes
from nas.pareto import budgets_missed_message
from nas.refit import MODEL_KINDS, RefitOptions, Surrogate, kernel_surrogate, run_refit
from nas.table import (
    Config,
    Oracle,
    Problem,
    Space,
    Table,
    load_table,
    objective_sign,
    parse_budget,
    parse_objective,
    row_feasible,
    unseen_random,
)

__all__ = [
    "SAMPLERS", "STRATEGIES", "Config", "Oracle", "Problem", "RefitOptions", "Space", "Surrogate", "Table",
    "add_bench_search_parser", "add_table_options", "bench_search", "evaluated_front", "exhaustive_hypervolume",
    "front_hypervolume", "kernel_surrogate", "load_table", "normaliser", "parse_budget", "parse_objective",
    "run_bench_search", "run_optuna", "run_random_rows", "run_refit", "run_table_search",
]

SAMPLERS = ("refit", "random", "random-rows", "nsga2", "nsga3", "tpe")


# --- Optuna strategies --------------------------------------------------------------------
def _optuna_sampler(name: str, evals: int, seed: int) -> Any:
    import optuna

    from nas.ga_samplers import nsga2, nsga3

    # A population of about a tenth of the budget gives NSGA a few generations even at 100 evals.
    pop = int(np.clip(evals // 10, 10, 50))
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "nsga2":
        return nsga2(population_size=pop, seed=seed)
    if name == "nsga3":
        with warnings.catch_warnings():  # "experimental" says nothing a benchmark user can act on
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return nsga3(population_size=pop, seed=seed)
    return optuna.samplers.TPESampler(seed=seed, multivariate=True)


def run_optuna(problem: Problem, oracle: Oracle, sampler: str) -> None:
    """Ask/tell an Optuna sampler until `problem.evals` distinct configs are evaluated."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space, objs = problem.space, problem.objectives
    study = optuna.create_study(directions=[o.direction for o in objs],
                                sampler=_optuna_sampler(sampler, problem.evals, problem.seed))
    index = [{v: i for i, v in enumerate(vals)} for vals in space.values]
    rng = np.random.default_rng(problem.seed)
    worst = [0.0] * len(objs)  # what an absent config reports: the worst value seen so far
    told: dict[Config, tuple[list[float], dict[str, float]]] = {}
    repeats = 0
    while oracle.evaluations < problem.evals:
        if repeats >= min(3, space.size - len(told)):
            # A converged sampler can propose known configs forever; a fresh random one keeps the
            # run finite (and is told to the sampler like any other trial). Every repeat is a trial too,
            # and TPE's asks slow as the study grows: waiting for 100 repeats, TPE took 232 s for 498
            # evaluations of a 625-config space of 22 rows (nsga2 2 s); 400 evaluations took 27 s and
            # 2,327 trials, 4 s and 935 trials waiting for 3 (review).
            study.enqueue_trial(space.describe(unseen_random(space, oracle, rng)))
            repeats = 0
        trial = study.ask()
        config = tuple(index[k][trial.suggest_categorical(n, list(space.values[k]))]
                       for k, n in enumerate(space.names))
        if config in told:
            repeats += 1
        else:
            repeats = 0
            row = oracle.lookup(config)
            if row is None:
                values = list(worst)
                cons = {"in_table": 1.0, **{str(b): 1.0 for b in problem.budgets}}
            else:
                values = [row[o.metric] for o in objs]
                worst = [v if not told else (min(w, v) if o.direction == "maximize" else max(w, v))
                         for w, v, o in zip(worst, values, objs, strict=True)]
                cons = {"in_table": 0.0, **{str(b): b.violation(row[b.metric]) for b in problem.budgets}}
            told[config] = (values, cons)
        values, cons = told[config]
        for name, value in cons.items():
            trial.set_constraint(name, float(value))
        study.tell(trial, values)


def run_random_rows(problem: Problem, oracle: Oracle) -> None:
    """Random search over the configs the table lists (uniform over rows, each once): the fair random
    baseline on a table of a conditional space, where most of the product of column values has no row
    and "random" pays an evaluation for each such config. Without `problem.rows`, uniform over the space."""
    rng = np.random.default_rng(problem.seed)
    if problem.rows is None:
        for _ in range(problem.evals):
            oracle.lookup(unseen_random(problem.space, oracle, rng))
        return
    rows = np.unique(np.asarray(problem.rows, np.int64), axis=0)
    for i in rng.permutation(len(rows))[:problem.evals]:
        oracle.lookup(rows[i])


STRATEGIES: dict[str, Callable[[Problem, Oracle], None]] = {
    "refit": run_refit,
    "random-rows": run_random_rows,
    **{s: (lambda p, o, s=s: run_optuna(p, o, s)) for s in ("random", "nsga2", "nsga3", "tpe")},
}


# --- scoring ------------------------------------------------------------------------------
def normaliser(table: Table) -> tuple[np.ndarray, np.ndarray]:
    """(best, range) of each signed objective over the whole table; worst = best + range."""
    S = table.signed()
    best, worst = S.min(axis=0), S.max(axis=0)
    return best, np.where(worst > best, worst - best, 1.0)


def front_hypervolume(table: Table, signed_points: np.ndarray) -> float:
    """Normalised hypervolume of signed objective rows, reference at the table's worst (1, ..., 1)."""
    best, rng_ = normaliser(table)
    return hypervolume((np.asarray(signed_points).reshape(-1, len(best)) - best) / rng_, np.ones(len(best)))


def exhaustive_hypervolume(table: Table) -> float:
    """Hypervolume of the whole table's feasible front."""
    return front_hypervolume(table, table.signed()[table.feasible_mask()])


def bench_search(table_path: str | Path, objectives: Sequence[str | Objective], budgets: Sequence[str | Budget],
                 evals: int, sampler: str = "refit", seed: int = 0, choices: Sequence[str] | None = None,
                 table: Table | None = None, refit_options: RefitOptions | None = None,
                 with_front: bool = False) -> dict[str, Any]:
    """Run one strategy for `evals` distinct evaluations and score its front against the table's
    (`refit_options`: the refit strategy's knobs, e.g. your own surrogate; `with_front`: also list the
    front found, each member's choice values and metrics, under "front")."""
    if sampler not in STRATEGIES:
        raise NasError(f"sampler {sampler!r}: expected one of {', '.join(SAMPLERS)}")
    if refit_options is not None and sampler != "refit":
        raise NasError(f"refit options (e.g. --refit-model) apply to the refit sampler, not {sampler!r}")
    if not is_seed(int(seed) if isinstance(seed, np.integer) else seed):
        raise NasError(f"seed {seed!r}: {SEED_TEXT} (a 32-bit seed)")
    table = table or load_table(table_path, objectives, budgets, choices)
    evals = int(evals) if isinstance(evals, np.integer) else evals  # as seeds: np.arange sweeps give these
    if isinstance(evals, bool) or not isinstance(evals, int) or not 1 <= evals <= table.space.size:
        raise NasError(f"evals: expected an integer in 1..{table.space.size} (the size of the space), got {evals!r}")
    if not table.feasible_mask().any():
        closest = {str(b): float(np.min(b.violation(table.metrics[b.metric]))) for b in table.budgets}
        raise NoFeasibleError(budgets_missed_message(closest, f"row of {table.path}", "in the table", "row"))
    exhaustive = exhaustive_hypervolume(table)
    t0 = time.perf_counter()
    oracle = Oracle(table)
    problem = Problem(table.space, table.objectives, table.budgets, evals, int(seed), rows=table.configs)
    if refit_options is not None:
        run_refit(problem, oracle, refit_options)
    else:
        STRATEGIES[sampler](problem, oracle)
    wall = time.perf_counter() - t0
    found = evaluated_front(table, oracle)
    signed = np.array([[objective_sign(o) * m[o.metric] for o in table.objectives] for _, m in found])
    hv = front_hypervolume(table, signed.reshape(-1, len(table.objectives)))
    result = {
        "evals": oracle.evaluations,
        "hypervolume": hv,
        "exhaustive_hypervolume": exhaustive,
        "hv_ratio": _hv_ratio(hv, exhaustive, found=len(found) > 0),
        "front_size": len(found),
        "sampler": sampler,
        "seed": int(seed),
        "wall_s": round(wall, 3),
    }
    if with_front:
        result["front"] = [{"config": table.space.describe(c, typed=True), "metrics": m} for c, m in found]
    return result


def evaluated_front(table: Table, oracle: Oracle) -> list[tuple[Config, dict[str, float]]]:
    """The feasible non-dominated configs among those looked up, with their metrics, best first objective first."""
    rows = [(c, r) for c, r in oracle.history() if row_feasible(r, table.budgets)]
    if not rows:
        return []
    signed = np.array([[objective_sign(o) * r[o.metric] for o in table.objectives] for _, r in rows])
    keep = np.flatnonzero(nondominated_mask(signed))
    return [rows[i] for i in keep[np.argsort(signed[keep, 0], kind="stable")]]


def _hv_ratio(hv: float, exhaustive: float, found: bool) -> float:
    # A table whose feasible rows all lie on the reference point's boundary (one feasible row, the
    # worst in an objective) has no volume: then finding any feasible row is finding the front.
    if exhaustive > 0:
        return hv / exhaustive
    return 1.0 if found else 0.0


# --- command line -------------------------------------------------------------------------
TABLE_OPTIONS = ("objective", "budget", "evals", "sampler", "seed", "refit_model", "choices", "out")


def add_table_options(p: argparse.ArgumentParser, required: bool) -> None:
    """The options of a search on a table (required: --objective and --evals must be given)."""
    p.add_argument("--objective", action="append", required=required, metavar="COL:max|COL:min",
                   help="objective column and direction; repeat for each (1-4)")
    p.add_argument("--budget", action="append", metavar="COL<=X|COL>=X", help="hard limit; repeatable")
    p.add_argument("--evals", type=int, required=required, metavar="K",
                   help="distinct configs the strategy may evaluate (the cap on table lookups)")
    p.add_argument("--sampler", choices=SAMPLERS, help="search strategy (default: refit)")
    p.add_argument("--seed", type=int, help="seed of the search (default: 0)")
    p.add_argument("--refit-model", choices=MODEL_KINDS, metavar="KIND",
                   help=f"the refit sampler's surrogate: {', '.join(MODEL_KINDS)} (default: gp, its own kernel model)")
    p.add_argument("--choice", action="append", dest="choices", metavar="COL",
                   help="choice column; repeatable (default: every column that is no objective or budget)")


def add_bench_search_parser(subparsers: Any) -> None:
    """Add the `bench-search` subcommand to an argparse subparsers object."""
    p = subparsers.add_parser("bench-search", help="score a search strategy on a NAS-Bench-style table",
                              description="Run one search strategy on a table (one row per architecture) and print "
                                          "the hypervolume it reaches as a fraction of the table's exhaustive front.")
    p.add_argument("table", metavar="TABLE.csv", help="CSV table: choice columns + metric columns")
    add_table_options(p, required=True)


def _search_args(args: argparse.Namespace, table_path: str, with_front: bool) -> tuple[Table, dict[str, Any]]:
    table = load_table(table_path, args.objective, args.budget or [], args.choices)
    if table.duplicates:
        print(f"note: {table.duplicates} duplicated config(s) in {table_path} (same {', '.join(table.space.names)}); "
              "kept the first row of each (rows that differ only in other columns count as one: name those "
              "with --choice to keep them apart)", file=sys.stderr)
    both = [c for c in table.space.names if c in table.metrics]
    if both:
        # Allowed (a bit-width is both a choice and a cost), but then every row's value of it shapes the
        # space the search sees: the one way metrics of rows it never evaluated reach a strategy.
        names = ", ".join(repr(c) for c in both)
        print(f"note: column{'s' if len(both) > 1 else ''} {names} {'are' if len(both) > 1 else 'is'} both a choice "
              "and an objective or budget: its values in every row define the space, so the search knows them "
              "before it evaluates anything", file=sys.stderr)
    _note_metric_like_choices(table, table_path, args.choices)
    options = RefitOptions(model=args.refit_model) if args.refit_model else None
    result = bench_search(table_path, args.objective, args.budget or [], args.evals, args.sampler or "refit",
                          0 if args.seed is None else args.seed, args.choices, table=table,
                          refit_options=options, with_front=with_front)
    if result["evals"] < args.evals:
        print(f"note: {result['evals']} of the {args.evals} evaluations asked for were made: the table lists "
              f"{len(table.configs):,} of the {table.space.size:,} configs of its space, and this strategy "
              "proposes listed configs only", file=sys.stderr)
    return table, result


def _note_metric_like_choices(table: Table, table_path: str, named: Sequence[str] | None) -> None:
    # Taken as a choice by default, a measured column (one value per row, say a second latency) both
    # inflates the space with configs the table lacks and shows the search its value for every row.
    rows = len(table.configs)
    if named or rows < 8:
        return
    alike = [n for n, vals in zip(table.space.names, table.space.values, strict=True) if len(vals) > rows / 2]
    if alike:
        print(f"note: choice column(s) {', '.join(map(repr, alike))} of {table_path} take more than one value "
              f"per two rows, as measured metrics do (the space is {table.space.size:,} configs for {rows:,} "
              "rows); every column that is no objective or budget is a choice unless you name the choices "
              "with --choice", file=sys.stderr)


def run_bench_search(args: argparse.Namespace) -> int:
    """Handler of `bench-search`: prints one JSON object as the last line, returns 0."""
    print(json.dumps(_search_args(args, args.table, with_front=False)[1]))
    return 0


def run_table_search(args: argparse.Namespace) -> int:
    """Handler of `nas search TABLE.csv`: the front found (choice values and metrics of each member) and its
    score as one JSON line; `--out FRONT.csv` also writes the front as a table."""
    missing = [f"--{name}" for name in ("objective", "evals") if getattr(args, name) is None]
    if missing:
        raise NasError(f"nas search on a table needs {' and '.join(missing)} (e.g. --objective acc:max "
                       "--objective latency_ms:min --evals 100)")
    given = [flag for flag, value in (("--run-dir", args.run_dir), ("--runs-root", args.runs_root),
                                      ("--workers", args.workers), ("--force", args.force or None))
             if value is not None]
    if given:
        raise NasError(f"{given[0]} is for experiment files; a search on a table keeps no run directory")
    if args.out is not None:
        check_out_path(args.out, source=args.experiment, source_is="the table being searched; give another file name")
    table, result = _search_args(args, args.experiment, with_front=True)
    if args.out is not None:
        write_bytes(args.out, _front_csv(table, result["front"]).encode())
    print(json.dumps(result))
    return 0


def _front_csv(table: Table, front: list[dict[str, Any]]) -> str:
    """The front as a table with the searched table's columns: choices, then the other objective and budget
    columns (a choice that is also a metric once), header only when nothing feasible was found."""
    metrics = [m for m in table.metrics if m not in table.space.names]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*table.space.names, *metrics])
    # The choices as the table spells them (1e-3, 08), so the front joins back onto it by text.
    spelled = [{typed: text for text, typed in zip(v, table.space.typed_values(i))}
               for i, v in enumerate(table.space.values)]
    for member in front:
        writer.writerow([*(spelled[i][member["config"][c]] for i, c in enumerate(table.space.names)),
                         *(repr(member["metrics"][m]) for m in metrics)])
    return out.getvalue()
