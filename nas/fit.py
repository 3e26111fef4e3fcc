"""Fit the accuracy and latency predictors on the measurement table; report held-out quality."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

import predictors
from nas.config import MIN_TRAIN_ROWS, PredictorsConfig
from nas.context import Context
from nas.errors import StageError
from nas.features import features, predicted_metrics
from nas.io import write_json
from nas.lut import ensure_tables
from nas.measure import load_table
from nas.progress import say

# Latency errors are multiplicative (a layer twice as wide costs about twice as much).
LOG_TARGET = {"accuracy": False, "latency_ms": True}


def predictor_kind(ctx: Context, metric: str) -> str:
    """The predictor kind the experiment chose for `metric`."""
    return ctx.exp.predictors.accuracy if metric == "accuracy" else ctx.exp.predictors.latency


def predictor_path(folder: Path, metric: str) -> Path:
    """Where the fitted predictor of `metric` is saved inside `folder`."""
    return folder / f"{metric}.json"


def split_rows(n: int, config: PredictorsConfig) -> tuple[np.ndarray, np.ndarray]:
    """Seeded train / held-out row indices."""
    order = np.random.default_rng([config.seed, 11]).permutation(n)
    n_hold = config.held_out(n)
    return order[n_hold:], order[:n_hold]


def fit_predictors(ctx: Context, rows: list[dict[str, Any]], folder: Path, *, quiet: bool = False) -> dict[str, Any]:
    """Fit one predictor per predicted metric on `rows`, save them (JSON) in `folder` with held-out quality."""
    configs = [r["config"] for r in rows]
    train_idx, hold_idx = split_rows(len(rows), ctx.exp.predictors)
    if len(train_idx) < MIN_TRAIN_ROWS:
        remedy = "widen model.space" if len(rows) >= ctx.space.size() else "raise measure.samples"
        raise StageError(f"{len(rows)} measured subnets: the predictors need {MIN_TRAIN_ROWS} to fit besides the "
                         f"{len(hold_idx)} held out ({remedy}: the space has {ctx.space.size()} subnets)")
    quality: dict[str, Any] = {"rows": len(rows), "train_rows": len(train_idx), "holdout_rows": len(hold_idx)}
    for metric in predicted_metrics(ctx):
        names, X = features(ctx, metric, configs)
        y = np.array([r[metric] for r in rows], np.float64)
        kind = predictor_kind(ctx, metric)
        options = {"log_target": LOG_TARGET[metric.partition("@")[0]], "seed": ctx.exp.predictors.seed}
        held = predictors.make(kind, **options).fit(X[train_idx], y[train_idx]).score(X[hold_idx], y[hold_idx])
        # The saved predictor uses every row; its quality figure is the held-out one above.
        final = predictors.make(kind, **options).fit(X, y)
        entry = {"kind": kind, "holdout": held}
        if metric != "accuracy":
            entry["macs_proxy_kendall_tau"] = predictors.kendall_tau(y[hold_idx], X[hold_idx, names.index("macs")])
        quality[metric] = entry
        predictors.save(final, predictor_path(folder, metric), feature_names=names,
                        meta={"metric": metric, "quality": entry})
        say(f"  {metric:<11} {kind:<13} held-out: MAPE {held['mape']:.3f}  Kendall tau {held['kendall_tau']:.3f}  "
            f"within ±10% {held['within_10pct']:.2f}  90% band covers {held['coverage_90']:.2f}  (n={held['n']})",
            quiet=quiet)
    write_json(folder / "quality.json", quality)
    return quality


def fit(ctx: Context, *, quiet: bool = False) -> dict[str, Any]:
    """The fit stage: predictors on the measurement table, saved in `fit/`."""
    t0 = time.time()
    rows = load_table(ctx)
    ensure_tables(ctx, quiet=quiet)
    quality = fit_predictors(ctx, rows, ctx.path("fit"), quiet=quiet)
    quality["wall_s"] = round(time.time() - t0, 2)
    write_json(ctx.path("fit", "quality.json"), quality)
    ctx.mark_done("fit", quality)
    return quality
