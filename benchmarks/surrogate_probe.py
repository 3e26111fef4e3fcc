"""Which surrogate model would lift the refit search on the generated tables? One-shot probe:
fit each model family on n random configs, then evaluate the 100 configs it predicts best (by
predicted non-dominated layers) and score the measured front, next to Kendall tau of its
predictions on every unevaluated config.

    .venv/bin/python benchmarks/surrogate_probe.py                       # cell, seeds 7 and 11, ~10 min
    .venv/bin/python benchmarks/surrogate_probe.py --with-params         # + params_m as a free feature
    .venv/bin/python benchmarks/surrogate_probe.py --canonical           # dead edges encoded as "none"

`--with-params` adds the table's parameter count as an input known for every row before any
evaluation (as a user who can count parameters would have it); the searches never get it.
`--canonical` ("cell" only) encodes each edge that lies on no input-output path as "none", so
architectures that compute the same thing share one encoding: the graph knowledge a generic
table search does not have.
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from search_ceiling import front_hv, layer_order  # noqa: E402
from search_quality import GENERATORS, _all_archs, used_edges  # noqa: E402

import predictors  # noqa: E402
from nas.refit_kernel import KernelModel, Overlap, Similarity  # noqa: E402
from nas.table import Space  # noqa: E402

Model = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def _one_hot(A: np.ndarray) -> np.ndarray:
    return np.concatenate([np.eye(int(A[:, c].max()) + 1)[A[:, c]] for c in range(A.shape[1])], axis=1)


def _kernel(family: str) -> Model:
    def fit_predict(X: np.ndarray, y: np.ndarray, Xp: np.ndarray) -> np.ndarray:
        cols = int(round(X[0].sum()))  # one-hot rows: one 1 per column, each of the same number of ops
        ops = X.shape[1] // cols
        names = tuple(f"e{c}" for c in range(cols))
        space = Space(names, tuple(tuple(f"op{i}" for i in range(ops)) for _ in range(cols)))
        codes = [Z.reshape(len(Z), cols, ops).argmax(axis=2) for Z in (X, Xp)]
        overlap = Overlap(Similarity(space), *codes)
        model = KernelModel(cols, family)
        model.fit(overlap, y)
        return model.mean(overlap)

    return fit_predict


def _predictor(kind: str, **options: object) -> Model:
    return lambda X, y, Xp: predictors.make(kind, **options).fit(X, y).predict(Xp)[0]


MODELS: dict[str, Model] = {
    "kernel-poly2": _kernel("poly2"),
    "kernel-hamming": _kernel("hamming"),
    "gbm": _predictor("gbm", n_trees=200, depth=3, seed=0),
    "mlp_ensemble": _predictor("mlp_ensemble", n_members=5, hidden=[64, 64], epochs=500, seed=0),
}


def main(argv: list[str] | None = None) -> int:
    """Print one-shot hv_ratio and accuracy tau per model, table seed and n; last line JSON."""
    from scipy.stats import kendalltau

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", default="cell", choices=list(GENERATORS))
    ap.add_argument("--table-seeds", type=int, nargs="+", default=[7, 11])
    ap.add_argument("--n", type=int, nargs="+", default=[50, 100], help="random configs the model is fitted on")
    ap.add_argument("--picks", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=4)
    ap.add_argument("--models", nargs="+", choices=[*MODELS, "noise-free"],
                    help='"noise-free": the table without its observation noise as the prediction (the ceiling)')
    ap.add_argument("--with-params", action="store_true", help="params_m (standardised) as an extra input")
    ap.add_argument("--canonical", action="store_true", help='cell: edges on no input-output path encoded as "none"')
    args = ap.parse_args(argv)
    if args.canonical and args.table != "cell":
        ap.error("--canonical is for the cell table")
    # The kernel models count matching one-hot columns: a continuous extra input is none of those.
    kernels = [m for m in MODELS if m.startswith("kernel-")]
    if args.models is None:
        args.models = [m for m in [*MODELS, "noise-free"] if not (args.with_params and m in kernels)]
    elif args.with_params and set(args.models) & set(kernels):
        ap.error("--with-params is for the gbm and mlp_ensemble models (the kernel models take one-hot columns only)")
    t0 = time.perf_counter()
    A = _all_archs()
    out: dict = {"table": args.table, "with_params": args.with_params, "canonical": args.canonical, "results": []}
    for ts in args.table_seeds:
        metrics = GENERATORS[args.table](ts)
        S = np.stack([-metrics["accuracy"], metrics["latency_ms"]], axis=1)
        lo, span = S.min(axis=0), np.ptp(S, axis=0)
        N = (S - lo) / span
        clean = GENERATORS[args.table](ts, noise=False)
        N_clean = (np.stack([-clean["accuracy"], clean["latency_ms"]], axis=1) - lo) / span
        whole = front_hv(S, lo, span)
        X = _one_hot(np.where(used_edges(A), A, 0) if args.canonical else A)
        if args.with_params:
            p = metrics["params_m"]
            X = np.c_[X, (p - p.mean()) / p.std()]
        for n in args.n:
            for name in args.models:
                hv, tau = [], []
                for r in range(args.repeats):
                    train = np.random.default_rng(r).choice(len(A), n, replace=False)
                    rest = np.setdiff1d(np.arange(len(A)), train)
                    if name == "noise-free":
                        pred = N_clean[rest]
                    else:
                        pred = np.stack([MODELS[name](X[train], N[train, j], X[rest]) for j in range(2)], axis=1)
                    rows = np.r_[train, rest[layer_order(pred, args.picks)]]
                    hv.append(front_hv(S[rows], lo, span) / whole)
                    tau.append(float(kendalltau(pred[:, 0], N[rest, 0])[0]))
                row = {"table_seed": ts, "n": n, "model": name, "hv_ratio": round(float(np.mean(hv)), 4),
                       "accuracy_tau": round(float(np.mean(tau)), 3)}
                out["results"].append(row)
                print(f"seed {ts:4d} n={n:4d} {name:15s} one-shot hv_ratio {row['hv_ratio']:.4f} "
                      f"accuracy tau {row['accuracy_tau']:.3f}", flush=True)
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
