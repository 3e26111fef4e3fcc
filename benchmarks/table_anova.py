"""How much of a generated table's metric variance lies in interactions of each order: the functional
ANOVA decomposition over the full 6-column factorial, which bounds any model of degree d (one-hot
products of up to d columns) fitted on every row.

    .venv/bin/python benchmarks/table_anova.py                      # cell, table seeds 7 11 2026, accuracy
    .venv/bin/python benchmarks/table_anova.py --tables cell additive --metric latency_ms

The last line printed is one JSON object: table -> seed -> cumulative variance share by order 1..6.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from search_quality import EDGES, GENERATORS, OPS  # noqa: E402


def order_shares(y: np.ndarray, n_columns: int, n_levels: int) -> list[float]:
    """Share of var(y) in the ANOVA terms of each order 0..n_columns (y in itertools.product order)."""
    T = y.reshape((n_levels,) * n_columns)
    terms: dict[tuple[int, ...], np.ndarray] = {}
    for d in range(n_columns + 1):
        for S in itertools.combinations(range(n_columns), d):
            rest = tuple(i for i in range(n_columns) if i not in S)
            term = T.mean(axis=rest, keepdims=True) if rest else T.copy()
            # Each term is the marginal mean over its columns less every lower-order term inside it.
            for d2 in range(d):
                for S2 in itertools.combinations(S, d2):
                    term = term - terms[S2]
            terms[S] = term
    total = T.var()
    return [float(sum(np.broadcast_to(t, T.shape).var() for S, t in terms.items() if len(S) == d) / total)
            for d in range(n_columns + 1)]


def main(argv: list[str] | None = None) -> int:
    """Print the cumulative variance share by interaction order per table and seed; last line JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tables", nargs="+", default=["cell"], choices=list(GENERATORS))
    ap.add_argument("--table-seeds", type=int, nargs="+", default=[7, 11, 2026])
    ap.add_argument("--metric", default="accuracy", choices=["accuracy", "latency_ms"])
    args = ap.parse_args(argv)
    out: dict[str, dict[str, dict[str, list[float]]]] = {}
    for name in args.tables:
        out[name] = {}
        for seed in args.table_seeds:
            out[name][str(seed)] = {}
            for noise in (True, False):
                shares = order_shares(GENERATORS[name](seed, noise=noise)[args.metric], len(EDGES), len(OPS))
                cum = [round(float(c), 4) for c in np.cumsum(shares[1:])]
                out[name][str(seed)]["noisy" if noise else "noise-free"] = cum
                print(f"{name:9s} seed {seed:5d} {'noisy' if noise else 'noise-free':10s} {args.metric}: "
                      f"orders <= 1..6 explain {' '.join(f'{c:.3f}' for c in cum)}", flush=True)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
