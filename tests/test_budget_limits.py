"""Budget semantics at their limits (config, metrics, query): the cases mutation testing found unpinned."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import write_tiny
from nas.config import Budget, load_experiment
from nas.errors import NasError
from nas.query import meets, parse_budget, parse_budgets


def test_violation_is_positive_outside_and_negative_inside_for_both_sides() -> None:
    # Optuna reads violation <= 0 as feasible: a sign slip on min budgets made every miss feasible.
    assert Budget("accuracy", min=0.9).violation(0.8) == pytest.approx(0.1)
    assert Budget("accuracy", min=0.9).violation(0.95) == pytest.approx(-0.05)
    assert Budget("size_kb", max=4.0).violation(5.0) == pytest.approx(1.0)
    assert Budget("size_kb", max=4.0).violation(3.0) == pytest.approx(-1.0)
    assert Budget("size_kb", max=4.0).satisfied(4.0) and Budget("accuracy", min=0.9).satisfied(0.9)


def test_a_range_budget_with_min_equal_to_max_is_accepted(tmp_path: Path) -> None:
    # size_kb >= 4 and <= 4 leaves exactly one value: not an empty range.
    budgets = '[[budgets]]\nmetric = "size_kb"\nmin = 4.0\n\n[[budgets]]\nmetric = "size_kb"\nmax = 4.0'
    exp = load_experiment(write_tiny(tmp_path, budgets=budgets))
    assert [str(b) for b in exp.budgets] == ["size_kb >= 4", "size_kb <= 4"]
    assert parse_budgets(["size_kb>=4", "size_kb<=4"]) == [("size_kb", ">=", 4.0), ("size_kb", "<=", 4.0)]
    with pytest.raises(NasError, match="leave no value"):
        parse_budgets(["size_kb>=4.5", "size_kb<=4"])


def test_limits_at_the_edge_of_their_range_are_valid() -> None:
    # accuracy >= 1.0 (a perfect net) and a zero limit are limits, not input errors.
    assert parse_budget("accuracy>=1") == ("accuracy", ">=", 1.0)
    assert parse_budget("accuracy=1.0") == ("accuracy", ">=", 1.0)  # '=' means the natural side: >= for accuracy
    assert parse_budget("size_kb=0") == ("size_kb", "<=", 0.0)
    assert parse_budget("latency_ms=0.5") == ("latency_ms", "<=", 0.5)


def test_meets_includes_the_limit() -> None:
    # Exact counts (size_kb, macs) often sit exactly on a round limit.
    assert meets({"size_kb": 4.0, "accuracy": 0.9}, [("size_kb", "<=", 4.0), ("accuracy", ">=", 0.9)])
    assert not meets({"size_kb": 4.0 + 1e-9, "accuracy": 0.9}, [("size_kb", "<=", 4.0)])


def test_an_objective_without_direction_takes_the_metrics_natural_one(tmp_path: Path) -> None:
    # The tiny experiment names accuracy, latency_ms and size_kb with no direction.
    exp = load_experiment(write_tiny(tmp_path))
    assert {o.metric: o.direction for o in exp.objectives} == {
        "accuracy": "maximize", "latency_ms": "minimize", "size_kb": "minimize"}


def test_predictors_are_scored_on_at_least_two_held_out_subnets(tmp_path: Path) -> None:
    exp = load_experiment(write_tiny(tmp_path))
    assert exp.predictors.held_out(3) == 2  # a single held-out subnet gives no rank correlation
    assert exp.predictors.held_out(1000) == round(exp.predictors.holdout * 1000)
