"""Search quality on generated NAS-Bench-201-style tables: hv_ratio of each strategy at several
evaluation budgets, averaged over seeds.

    .venv/bin/python benchmarks/search_quality.py            # full: 5 seeds, 100/300/1000 evals
    .venv/bin/python benchmarks/search_quality.py --quick    # 2 seeds, 100/300 evals, < 5 min

Two generators (seeded, nothing downloaded), each 6 edges x 5 operations = 15,625 rows:
"additive" (per-op effects + pairwise interactions through a saturating curve) and "cell" (a
NAS-Bench-201-like cell graph: only ops on a path from input to output count, depth and
residual paths matter, dead edges cost nothing). The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nas.tabular import Table, bench_search, load_table  # noqa: E402

OPS = ("none", "skip", "conv1x1", "conv3x3", "avgpool")
EDGES = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))  # (from node, to node) of the NB201 cell
OBJECTIVES = ("accuracy:max", "latency_ms:min")
CHOICES = tuple(f"edge{a}{b}" for a, b in EDGES)  # params_m is a metric, not a choice
ACC_NOISE = 0.003  # sd of the accuracy's observation noise (absolute)
LAT_NOISE = 0.03  # sd of the log-latency's observation noise


def _all_archs() -> np.ndarray:
    return np.array(list(itertools.product(range(len(OPS)), repeat=len(EDGES))), np.int64)


def additive_table(seed: int, noise: bool = True) -> dict[str, np.ndarray]:
    """Per-op effects, pairwise interactions, diminishing returns, noise (drawn but left out if not `noise`)."""
    rng = np.random.default_rng(seed)
    A = _all_archs()
    effect = np.array([-0.8, 0.1, 0.5, 0.9, 0.2])[None, :] + rng.normal(0, 0.25, (len(EDGES), len(OPS)))
    s = effect[np.arange(len(EDGES)), A].sum(axis=1)
    for i, j in itertools.combinations(range(len(EDGES)), 2):
        s += rng.normal(0, 0.12, (len(OPS), len(OPS)))[A[:, i], A[:, j]]
    s = (s - s.mean()) / s.std()
    accuracy = 0.70 + 0.25 / (1 + np.exp(-1.6 * (s + 0.6)))  # saturates near 0.95
    accuracy += rng.normal(0, ACC_NOISE, len(A)) * noise
    cost = np.array([0.0, 0.05, 0.45, 1.0, 0.25])[None, :] * rng.uniform(0.7, 1.4, (len(EDGES), 1))
    lat = 1.5 + cost[np.arange(len(EDGES)), A].sum(axis=1)
    convs = np.isin(A, (2, 3))
    lat += 0.15 * convs[:, [0, 1, 3]].sum(1) * convs[:, [2, 4, 5]].sum(1)  # stacked convs: worse locality
    lat *= rng.lognormal(0, LAT_NOISE, len(A)) ** noise
    params = np.array([0, 0, 0.2, 1.0, 0])[A].sum(axis=1) * 0.1 + 0.05
    return {"accuracy": np.clip(accuracy, 0, 1), "latency_ms": lat, "params_m": params}


def used_edges(A: np.ndarray) -> np.ndarray:
    """(n, edges) mask of the edges on some input-output path through non-"none" edges."""
    n = len(A)
    live = A != 0
    # Which edges lie on some path 0 -> 3 through live edges (reach forward and backward).
    fwd = np.zeros((n, 4), bool)
    fwd[:, 0] = True
    for e, (a, b) in enumerate(EDGES):
        fwd[:, b] |= fwd[:, a] & live[:, e]
    bwd = np.zeros((n, 4), bool)
    bwd[:, 3] = True
    for e, (a, b) in reversed(list(enumerate(EDGES))):
        bwd[:, a] |= bwd[:, b] & live[:, e]
    return np.stack([live[:, e] & fwd[:, a] & bwd[:, b] for e, (a, b) in enumerate(EDGES)], axis=1)


def cell_table(seed: int, noise: bool = True) -> dict[str, np.ndarray]:
    """A NAS-Bench-201-like cell: only edges on an input-output path count (noise as in additive_table)."""
    rng = np.random.default_rng(seed)
    A = _all_archs()
    n = len(A)
    used = used_edges(A)
    connected = used.any(axis=1)
    w = np.array([0.0, 0.0, 0.6, 1.0, 0.15])[A] * used * rng.uniform(0.8, 1.2, len(EDGES))
    # Depth in convs along the deepest path; capacity = weighted sum of used convs.
    depth = np.zeros((n, 4))
    for e, (a, b) in enumerate(EDGES):
        depth[:, b] = np.maximum(depth[:, b], np.where(used[:, e], depth[:, a] + (np.isin(A[:, e], (2, 3))), 0))
    capacity = w.sum(axis=1)
    residual = used[:, 3] & (A[:, 3] == 1)  # a skip from input to output eases deep cells
    score = 0.55 * capacity + 0.35 * depth[:, 3] - 0.25 * np.maximum(depth[:, 3] - 2, 0) * ~residual
    score += 0.1 * (A[:, 4] == 4) * (A[:, 2] == 3)  # a pool after a conv helps a little
    score += rng.normal(0, 0.05, (len(EDGES), len(OPS)))[np.arange(len(EDGES)), A].sum(axis=1)
    accuracy = 0.70 + 0.26 * (1 - np.exp(-0.55 * np.maximum(score, 0)))
    accuracy = np.where(connected, accuracy, 0.70) + rng.normal(0, ACC_NOISE, n) * noise
    cost = np.array([0.0, 0.03, 0.5, 1.0, 0.3])[A] * used * rng.uniform(0.7, 1.4, len(EDGES))
    lat = (1.0 + cost.sum(axis=1) + 0.1 * used.sum(axis=1)) * rng.lognormal(0, LAT_NOISE, n) ** noise
    params = (np.array([0, 0, 0.2, 1.0, 0])[A] * used).sum(axis=1) * 0.1 + 0.05
    return {"accuracy": np.clip(accuracy, 0, 1), "latency_ms": lat, "params_m": params}


GENERATORS = {"additive": additive_table, "cell": cell_table}


def write_table(path: Path, metrics: dict[str, np.ndarray]) -> Path:
    """Write a generated table as CSV: edge columns (op names) then metric columns."""
    A = _all_archs()
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([f"edge{a}{b}" for a, b in EDGES] + list(metrics))
        for i, arch in enumerate(A):
            w.writerow([OPS[k] for k in arch] + [f"{metrics[m][i]:.6g}" for m in metrics])
    return path


def compare_strategies(name: str, table: Table, samplers: Sequence[str], budgets: Sequence[int],
                       seeds: int) -> dict[str, dict[int, dict[str, float]]]:
    """Each sampler at each evaluation budget over seeds 0..seeds-1: mean and min hv_ratio, mean wall
    time; prints one line per sampler and budget."""
    res: dict[str, dict[int, dict[str, float]]] = {}
    for sampler in samplers:
        res[sampler] = {}
        for k in budgets:
            runs = [bench_search(table.path, table.objectives, table.budgets, k, sampler, s, table=table)
                    for s in range(seeds)]
            ratios = [r["hv_ratio"] for r in runs]
            cell = {"hv_ratio": round(float(np.mean(ratios)), 4), "min": round(float(np.min(ratios)), 4),
                    "wall_s": round(float(np.mean([r["wall_s"] for r in runs])), 2)}
            print(f"{name:9s} {sampler:11s} evals={k:5d} hv_ratio={cell['hv_ratio']:.4f} (min {cell['min']:.4f}) "
                  f"wall {cell['wall_s']:.1f} s/run", flush=True)
            res[sampler][k] = cell
    return res


def main(argv: list[str] | None = None) -> int:
    """Run every strategy on every generated table; print a table and a final JSON line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 seeds, 100 and 300 evals (< 5 min on 2 cores)")
    ap.add_argument("--seeds", type=int)
    ap.add_argument("--evals", type=int, nargs="+")
    ap.add_argument("--samplers", nargs="+", default=["random", "nsga2", "tpe", "refit"])
    ap.add_argument("--tables", nargs="+", default=list(GENERATORS), choices=list(GENERATORS))
    ap.add_argument("--table-seed", type=int, default=2026, help="seed of the generators (not of the searches)")
    args = ap.parse_args(argv)
    seeds = range(args.seeds or (2 if args.quick else 5))
    budgets = args.evals or ([100, 300] if args.quick else [100, 300, 1000])
    t_all = time.perf_counter()
    out: dict = {"seeds": len(seeds), "evals": budgets, "tables": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.tables:
            path = write_table(Path(tmp) / f"{name}.csv", GENERATORS[name](args.table_seed))
            table = load_table(path, OBJECTIVES, (), CHOICES)
            out["tables"][name] = compare_strategies(name, table, args.samplers, budgets, len(seeds))
    out["wall_s"] = round(time.perf_counter() - t_all, 1)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
