"""The highest hv_ratio any search can reach with k evaluations of a table: the best k-subset of its
exhaustive front (`nas.hv_subset`), scored like `nas bench-search` (normalised objectives, reference
at the table's worst values).

    .venv/bin/python benchmarks/subset_ceiling.py      # generated tables + NAS-Bench-Graph, 100/300/1000
    .venv/bin/python benchmarks/subset_ceiling.py --no-defaults --table runs/transformer/space_table.csv \\
        --objective accuracy:max --objective latency_ms:min --objective size_kb:min

A search keeps only what it evaluated, and a dominated row adds nothing its dominator would not, so
no strategy beats the best k front members at k evaluations. Two objectives: the figure is exact.
Three or four: "ceiling" is what the greedy k front members hold (a set a search knowing the table
could pick) and "bound" a value no k-subset passes (submodularity); the true ceiling lies between.
Where the bound (in two objectives, the exact figure) sits below a target, no strategy can meet
that target on that table at that budget. `--refit-exact COL ...` (with --table) also runs refit
with those columns of the table itself as its model: what the model costs, against the ceiling.
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from nas_bench_graph import CHOICES as NBG_CHOICES  # noqa: E402
from nas_bench_graph import DATASETS as NBG_DATASETS  # noqa: E402
from nas_bench_graph import OBJECTIVES as NBG_OBJECTIVES  # noqa: E402
from nas_bench_graph import tables as nbg_tables  # noqa: E402
from search_quality import CHOICES as GEN_CHOICES  # noqa: E402
from search_quality import GENERATORS, write_table  # noqa: E402
from search_quality import OBJECTIVES as GEN_OBJECTIVES  # noqa: E402

from nas.hv_subset import subset_curve  # noqa: E402
from nas.hypervolume import nondominated_mask  # noqa: E402
from nas.refit import _Listed  # noqa: E402
from nas.table import Table, load_table, objective_sign  # noqa: E402
from nas.tabular import (  # noqa: E402
    RefitOptions,
    Surrogate,
    bench_search,
    exhaustive_hypervolume,
    kernel_surrogate,
    normaliser,
)

TARGETS = (0.975, 0.99)


def _first_k(curve: np.ndarray, level: float) -> int | None:
    hit = np.flatnonzero(curve >= level)
    return int(hit[0]) + 1 if len(hit) else None


def table_ceiling(table: Table, evals: list[int]) -> dict:
    """Front size; for each evaluation budget the best-subset hv_ratio (and its bound); and how many
    front members the targets need (at least "k_min", at most "k_max"; equal for two objectives)."""
    best, span = normaliser(table)
    P = (table.signed()[table.feasible_mask()] - best) / span
    ref = np.ones(P.shape[1])
    exhaustive = exhaustive_hypervolume(table)
    t0 = time.perf_counter()
    achieved, upper = subset_curve(P, ref, max(evals))
    achieved, upper = achieved / exhaustive, np.minimum(upper / exhaustive, 1.0)
    inside = P[np.all(P < ref, axis=1)]
    return {"rows": int(len(table.configs)), "objectives": int(len(ref)),
            "front_size": int(nondominated_mask(inside).sum()),
            "ceiling": {k: round(float(achieved[k - 1]), 4) for k in evals},
            "bound": {k: round(float(upper[k - 1]), 4) for k in evals},
            "k_for": {t: {"k_min": _first_k(upper, t), "k_max": _first_k(achieved, t)} for t in TARGETS},
            "seconds": round(time.perf_counter() - t0, 1)}


def _line(name: str, r: dict) -> str:
    cells = [f"{k}: {c:.4f}" + ("" if r["bound"][k] <= c else f" (bound {r['bound'][k]:.4f})")
             for k, c in r["ceiling"].items()]
    need = [f"{t}: {v['k_max']}" if v["k_min"] == v["k_max"] else f"{t}: {v['k_min']}-{v['k_max']}"
            for t, v in r["k_for"].items()]
    return (f"{name}: front {r['front_size']} of {r['rows']} rows; ceiling " + ", ".join(cells)
            + "; front members needed for " + ", ".join(need) + f"  [{r['seconds']} s]")


def table_surrogate(table: Table, exact: set[str]) -> Surrogate:
    """Refit's model: the table's own column for the metrics in `exact` (a config without a row gets the
    column's worst value), refit's kernel model for the others."""
    listed = _Listed(table.space, table.configs)  # refit's own lookup of configs among the rows
    rows_at = listed.positions(table.configs)
    learned = kernel_surrogate(table.space)
    signs = {o.metric: objective_sign(o) for o in table.objectives}

    def model(metric: str, configs: np.ndarray, y: np.ndarray, pool: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if metric not in exact:
            return learned(metric, configs, y, pool)
        v = table.metrics[metric]
        worst = v.max() if signs.get(metric, 1.0) > 0 else v.min()
        column = np.full(len(listed.rows), worst)
        column[rows_at] = v
        at = listed.positions(pool)
        return np.where(at >= 0, column[at], worst), np.zeros(len(pool))

    return model


def refit_exact(path: Path, table: Table, exact: set[str], evals: list[int], seeds: int) -> dict:
    """hv_ratio of refit's own loop (kappa 0) with the table's columns for `exact` as its model."""
    options = RefitOptions(model=table_surrogate(table, exact), kappa=0.0)
    out = {}
    for k in evals:
        ratios = [bench_search(path, [], [], k, "refit", s, table=table, refit_options=options)["hv_ratio"]
                  for s in range(seeds)]
        out[k] = {"hv_ratio": round(float(np.mean(ratios)), 4), "min": round(float(np.min(ratios)), 4)}
        print(f"  refit, {'+'.join(sorted(exact))} from the table itself, {k} evaluations, seeds 0-{seeds - 1}: "
              f"{np.mean(ratios):.4f} (min {np.min(ratios):.4f})", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    """Ceiling of each table named (generated, NAS-Bench-Graph, or any CSV); one JSON line last."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--evals", type=int, nargs="+", default=[100, 300, 1000])
    ap.add_argument("--table-seed", type=int, default=2026, help="seed of the generated tables")
    ap.add_argument("--generated", nargs="*", default=list(GENERATORS), choices=list(GENERATORS))
    ap.add_argument("--datasets", nargs="*", default=list(NBG_DATASETS), choices=list(NBG_DATASETS),
                    help="NAS-Bench-Graph tables (the wheel is fetched as in nas_bench_graph.py)")
    ap.add_argument("--cache", type=Path, default=Path("runs/nas-bench-graph"))
    ap.add_argument("--no-defaults", action="store_true", help="only the --table given")
    ap.add_argument("--table", type=Path, help="any CSV table, scored with --objective / --budget")
    ap.add_argument("--objective", action="append", default=[], metavar="COL:max|COL:min")
    ap.add_argument("--budget", action="append", default=[], metavar="COL<=X")
    ap.add_argument("--refit-exact", nargs="+", metavar="COL", help="also run refit on --table with these "
                    "columns of the table itself as its model (the others learned), to see what the model costs")
    ap.add_argument("--seeds", type=int, default=3, help="search seeds of --refit-exact")
    args = ap.parse_args(argv)
    if args.no_defaults:
        args.generated, args.datasets = [], []
    out: dict = {"evals": args.evals, "tables": {}}
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.generated:
            path = write_table(Path(tmp) / f"{name}.csv", GENERATORS[name](args.table_seed))
            out["tables"][name] = table_ceiling(load_table(path, GEN_OBJECTIVES, (), GEN_CHOICES), args.evals)
            print(_line(name, out["tables"][name]), flush=True)
    for name, path in (nbg_tables(args.cache, tuple(args.datasets)) if args.datasets else {}).items():
        out["tables"][name] = table_ceiling(load_table(path, NBG_OBJECTIVES, (), NBG_CHOICES), args.evals)
        print(_line(name, out["tables"][name]), flush=True)
    if args.table:
        table = load_table(args.table, args.objective, args.budget)
        out["tables"][str(args.table)] = table_ceiling(table, args.evals)
        print(_line(str(args.table), out["tables"][str(args.table)]), flush=True)
        if args.refit_exact:
            out["tables"][str(args.table)]["refit_exact"] = refit_exact(args.table, table, set(args.refit_exact),
                                                                        args.evals, args.seeds)
    out["wall_s"] = round(time.perf_counter() - t_all, 1)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
