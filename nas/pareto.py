"""Pareto dominance over named metrics, with directions from the experiment's objectives."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from nas.config import Budget, Objective


def _signed(rows: Sequence[Mapping[str, Any]], objectives: Sequence[Objective]) -> np.ndarray:
    """Matrix where smaller is better in every column."""
    return np.array([[(-1.0 if o.direction == "maximize" else 1.0) * r[o.metric] for o in objectives]
                     for r in rows], np.float64).reshape(len(rows), len(objectives))


def pareto_front(rows: Sequence[Mapping[str, Any]], objectives: Sequence[Objective]) -> list[int]:
    """Indices of rows no other row dominates (ties on every objective keep the first); a row with a
    NaN or infinite objective is on no front (NaN compares false both ways: it was never dominated)."""
    v = _signed(rows, objectives)
    keep = []
    finite = np.isfinite(v).all(axis=1)
    v = np.where(finite[:, None], v, np.inf)  # such rows dominate nothing either
    for i in np.flatnonzero(finite):
        dominated = np.all(v <= v[i], axis=1) & np.any(v < v[i], axis=1)
        duplicate_before = np.all(v[:i] == v[i], axis=1)
        if not dominated.any() and not duplicate_before.any():
            keep.append(int(i))
    return keep


def feasible(row: Mapping[str, Any], budgets: Sequence[Budget]) -> bool:
    """Whether a row meets every budget."""
    return all(b.satisfied(row[b.metric]) for b in budgets)


def spread(indices: Sequence[int], rows: Sequence[Mapping[str, Any]], objective: Objective, k: int) -> list[int]:
    """At most `k` of `indices`, evenly spaced along `objective`'s metric, ascending (keeps both ends of the
    front; one pick is its best end)."""
    order = sorted(indices, key=lambda i: rows[i][objective.metric])
    if len(order) <= k:
        return order
    if k == 1:  # the first of an even spacing was the smallest: the least accurate net for max_models = 1 (review)
        return [order[-1] if objective.direction == "maximize" else order[0]]
    picks = np.unique(np.round(np.linspace(0, len(order) - 1, k)).astype(int))
    return [order[p] for p in picks]


def budgets_missed_message(closest: dict[str, float], what: str, how: str, unit: str = "subnet") -> str:
    """'no WHAT meets the budgets' naming those none met (`closest`: budget -> smallest violation, <= 0 met;
    `how`: where the closest value is from; `unit`: what meets one budget)."""
    # A budget some subnet meets is no reason on its own: listing it too left the user to find which to relax.
    missed = [f"{b} (closest {how}: off by {gap:.4g})" for b, gap in closest.items() if gap > 0]
    if missed:
        return f"no {what} meets the budgets: {'; '.join(missed)}"
    return f"no {what} meets the budgets together, though each is met by some {unit}: {'; '.join(closest)}"
