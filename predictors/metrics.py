"""Accuracy metrics for predictors; every value is a plain Python float or int.

Degenerate input (fewer than two samples, or a constant vector where a rank
correlation is asked for) gives float('nan') rather than an exception, so a
caller can always build a report; JSON writers must map nan to null.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["mape", "kendall_tau", "spearman", "within", "rmse", "coverage", "score"]


def _pair(y_true: object, y_pred: object) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(y_true, dtype=float).reshape(-1)
    p = np.asarray(y_pred, dtype=float).reshape(-1)
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} values but y_pred has {p.size}")
    return t, p


def _relative_error(t: np.ndarray, p: np.ndarray) -> np.ndarray:
    # A zero true value makes the relative error undefined (inf or nan); that
    # is reported honestly rather than hidden by an epsilon.
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.abs(p - t) / np.abs(t)


def mape(y_true: object, y_pred: object) -> float:
    """Mean absolute percentage error as a fraction (0.05 means 5 %); nan if empty."""
    t, p = _pair(y_true, y_pred)
    if t.size == 0:
        return math.nan
    return float(np.mean(_relative_error(t, p)))


def within(y_true: object, y_pred: object, tol: float = 0.10) -> float:
    """Share of predictions with |pred - true| / |true| <= tol; nan if empty."""
    t, p = _pair(y_true, y_pred)
    if t.size == 0:
        return math.nan
    # The slack keeps exact boundary cases (1.1 vs 1.0 at tol 0.1) inside
    # despite binary rounding of the relative error.
    # Not via the relative error: an exact prediction of a zero target is 0/0 there, and a hit here.
    return float(np.mean(np.abs(p - t) <= tol * (1 + 1e-9) * np.abs(t)))


def coverage(y_true: object, y_pred: object, y_std: object, z: float = 1.6449) -> float:
    """Share of true values within pred +- z std (z 1.645: a calibrated std covers 90 %); nan if empty.

    What `nas query --confidence` relies on: a std narrower than the real error covers less, and a
    budget met "at 90 % confidence" then holds for fewer subnets than that.
    """
    t, p = _pair(y_true, y_pred)
    _, s = _pair(y_true, y_std)
    if t.size == 0:
        return math.nan
    # A few ulps of the target besides: a std of exactly 0 (a constant target fitted exactly) must cover
    # a mean that exp(log(t)) gives back one ulp off.
    return float(np.mean(np.abs(p - t) <= z * s * (1 + 1e-9) + 4 * np.spacing(np.abs(t))))


def rmse(y_true: object, y_pred: object) -> float:
    """Root mean squared error; nan if empty."""
    t, p = _pair(y_true, y_pred)
    if t.size == 0:
        return math.nan
    return float(np.sqrt(np.mean((p - t) ** 2)))


def _rank_corr(fn: Callable[[np.ndarray, np.ndarray], Any], t: np.ndarray, p: np.ndarray) -> float:
    # scipy warns and returns nan for constant input; we want the nan silently.
    if t.size < 2 or np.ptp(t) == 0 or np.ptp(p) == 0:
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = fn(t, p)[0]
    return float(value)


def kendall_tau(y_true: object, y_pred: object) -> float:
    """Kendall's tau-b (tie-corrected); nan for n < 2 or constant input."""
    t, p = _pair(y_true, y_pred)
    from scipy.stats import kendalltau  # scipy.stats costs 0.5 s to import: only when scored

    return _rank_corr(kendalltau, t, p)


def spearman(y_true: object, y_pred: object) -> float:
    """Spearman rank correlation; nan for n < 2 or constant input."""
    t, p = _pair(y_true, y_pred)
    from scipy.stats import spearmanr

    return _rank_corr(spearmanr, t, p)


def score(y_true: object, y_pred: object) -> dict[str, float | int]:
    """All metrics as a JSON-ready dict; undefined values are float('nan')."""
    t, p = _pair(y_true, y_pred)
    return {
        "n": int(t.size),
        "mape": mape(t, p),
        "kendall_tau": kendall_tau(t, p),
        "spearman": spearman(t, p),
        "within_10pct": within(t, p, 0.10),
        "within_5pct": within(t, p, 0.05),
        "rmse": rmse(t, p),
    }
