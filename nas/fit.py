"""Fit the accuracy and latency predictors on the measurement table; report held-out quality."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

import predictors
from nas.context import Context
from nas.features import METRIC_FEATURES, features
from nas.io import write_json
from nas.measure import load_table
from nas.progress import say

# Latency errors are multiplicative (a layer twice as wide costs about twice as much).
LOG_TARGET = {"accuracy": False, "latency_ms": True}


def predictor_kind(ctx: Context, metric: str) -> str:
    """The predictor kind the experiment chose for `metric`."""
    return {"accuracy": ctx.exp.predictors.accuracy, "latency_ms": ctx.exp.predictors.latency}[metric]


def predictor_path(ctx: Context, metric: str) -> Any:
    """Where the fitted predictor of `metric` is saved."""
    return ctx.path("fit", f"{metric}.json")


def split_rows(n: int, holdout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded train / held-out row indices."""
    order = np.random.default_rng([seed, 11]).permutation(n)
    n_hold = max(2, int(round(holdout * n)))
    return order[n_hold:], order[:n_hold]


def fit(ctx: Context, *, quiet: bool = False) -> dict[str, Any]:
    """Fit one predictor per predicted metric; save it (JSON) with its held-out quality."""
    rows = load_table(ctx)
    configs = [r["config"] for r in rows]
    train_idx, hold_idx = split_rows(len(rows), ctx.exp.predictors.holdout, ctx.exp.predictors.seed)
    quality: dict[str, Any] = {"rows": len(rows), "train_rows": len(train_idx), "holdout_rows": len(hold_idx)}
    t0 = time.time()
    for metric in METRIC_FEATURES:
        names, X = features(ctx, metric, configs)
        y = np.array([r[metric] for r in rows], np.float64)
        kind = predictor_kind(ctx, metric)
        options = {"log_target": LOG_TARGET[metric]}
        held = predictors.make(kind, **options).fit(X[train_idx], y[train_idx]).score(X[hold_idx], y[hold_idx])
        # The saved predictor uses every row; its quality figure is the held-out one above.
        final = predictors.make(kind, **options).fit(X, y)
        entry = {"kind": kind, "holdout": held}
        if metric == "latency_ms":
            entry["macs_proxy_kendall_tau"] = predictors.kendall_tau(y[hold_idx], X[hold_idx, names.index("macs")])
        quality[metric] = entry
        predictors.save(final, predictor_path(ctx, metric), feature_names=names,
                        meta={"metric": metric, "quality": entry, "fingerprint": ctx.fingerprint("fit")})
        say(f"  {metric:<11} {kind:<13} held-out: MAPE {held['mape']:.3f}  Kendall tau {held['kendall_tau']:.3f}  "
            f"within ±10% {held['within_10pct']:.2f}  (n={held['n']})", quiet=quiet)
    quality["wall_s"] = round(time.time() - t0, 2)
    write_json(ctx.path("fit", "quality.json"), quality)
    ctx.mark_done("fit", quality)
    return quality
