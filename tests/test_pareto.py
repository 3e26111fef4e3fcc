"""The Pareto front of measured rows: dominance, ties, and rows with non-finite objectives."""

from __future__ import annotations

import numpy as np

from nas.config import Budget, Objective
from nas.pareto import feasible, pareto_front, spread

OBJ = [Objective("accuracy", "maximize"), Objective("latency_ms", "minimize")]


def _rows(pairs: list[tuple[float, float]]) -> list[dict[str, float]]:
    return [{"accuracy": a, "latency_ms": t} for a, t in pairs]


def test_the_front_matches_brute_force_dominance() -> None:
    rng = np.random.default_rng(0)
    pairs = [(float(a), float(t)) for a, t in rng.integers(0, 6, (60, 2))]  # many ties
    rows = _rows(pairs)
    front = pareto_front(rows, OBJ)
    for i, (a, t) in enumerate(pairs):
        dominated = any(a2 >= a and t2 <= t and (a2, t2) != (a, t) for a2, t2 in pairs)
        first_of_its_kind = pairs.index((a, t)) == i
        assert (i in front) == (not dominated and first_of_its_kind)


def test_a_row_with_a_non_finite_objective_is_on_no_front() -> None:
    """A NaN accuracy compares false with everything, so nothing dominated it: it was on every front."""
    for bad in (float("nan"), float("inf"), float("-inf")):
        rows = _rows([(0.9, 1.0), (bad, 0.5), (0.8, bad), (0.95, 2.0)])
        assert pareto_front(rows, OBJ) == [0, 3]
    # Nor does it push a finite row off (an infinite accuracy "dominating" every slower row).
    assert pareto_front(_rows([(float("inf"), 0.1), (0.9, 1.0)]), OBJ) == [1]
    assert pareto_front(_rows([(float("nan"), 1.0)] * 2), OBJ) == []


def test_one_pick_of_a_front_is_its_best_end() -> None:
    # max_models = 1 (or validate_top = 1) took the smallest accuracy: the front's least accurate member.
    rows = _rows([(0.91, 5.0), (0.80, 1.0), (0.86, 2.0)])
    assert spread(range(3), rows, OBJ[0], 1) == [0]
    assert spread(range(3), rows, OBJ[1], 1) == [1]
    assert spread(range(3), rows, OBJ[0], 2) == [1, 0]  # both ends, ascending


def test_a_row_meeting_only_one_of_two_budgets_is_infeasible() -> None:
    budgets = [Budget("size_kb", max=4.0), Budget("latency_ms", max=1.0)]
    assert feasible({"size_kb": 3.0, "latency_ms": 0.5}, budgets)
    assert not feasible({"size_kb": 3.0, "latency_ms": 2.0}, budgets)  # any() would say True
    assert not feasible({"size_kb": 5.0, "latency_ms": 0.5}, budgets)
    # the limit itself is met (<=), a min budget is met from above
    assert feasible({"size_kb": 4.0, "latency_ms": 1.0}, budgets)
    assert feasible({"accuracy": 0.9}, [Budget("accuracy", min=0.9)])
    assert not feasible({"accuracy": 0.89}, [Budget("accuracy", min=0.9)])
