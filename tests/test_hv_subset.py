"""Best k-subset hypervolume: the exact 2D programme and the greedy bracket against brute force."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from nas.hv_subset import best_subset_2d, greedy_subsets, subset_bounds, subset_curve
from nas.hypervolume import hypervolume


def _brute(points: np.ndarray, ref: np.ndarray, k: int) -> float:
    return max(hypervolume(points[list(s)], ref) for s in itertools.combinations(range(len(points)), k))


def _front_2d(rng: np.random.Generator, n: int) -> np.ndarray:
    x = np.sort(rng.random(n))
    return np.stack([x, 1 - np.sqrt(x) + rng.normal(0, 0.05, n)], axis=1)  # a bumpy front plus some dominated rows


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_the_2d_programme_finds_the_best_subset(seed: int, k: int) -> None:
    rng = np.random.default_rng(seed)
    P = _front_2d(rng, 11)
    ref = np.array([1.1, 1.2])
    got = best_subset_2d(P, ref, k)
    assert got.achieved == pytest.approx(_brute(P, ref, k), rel=1e-12)
    assert len(got.chosen) <= k
    assert hypervolume(P[list(got.chosen)], ref) == pytest.approx(got.achieved, rel=1e-12)
    assert got.exact


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("k", [2, 3])
def test_the_greedy_bracket_holds_the_best_subset_in_3d(seed: int, k: int) -> None:
    rng = np.random.default_rng(seed)
    U = rng.random((10, 2))
    P = np.column_stack([U, 1.5 - U.sum(1) + rng.normal(0, 0.1, 10)])  # a 3D trade-off surface
    ref = np.full(3, 1.6)
    best = _brute(P, ref, k)
    got = greedy_subsets(P, ref, [k])[k]
    assert got.achieved <= best * (1 + 1e-12)
    assert got.upper >= best * (1 - 1e-12)
    assert hypervolume(P[list(got.chosen)], ref) == pytest.approx(got.achieved, rel=1e-12)


def test_greedy_is_not_always_best_in_2d_but_its_bound_still_holds() -> None:
    # Greedy takes the middle point first; the two ends together hold more.
    P = np.array([[0.0, 0.6], [0.3, 0.3], [0.6, 0.0]])
    ref = np.ones(2)
    exact = best_subset_2d(P, ref, 2)
    greedy = greedy_subsets(P, ref, [2])[2]
    assert exact.chosen == (0, 2) and exact.achieved == pytest.approx(0.64)
    assert greedy.chosen == (0, 1) and greedy.achieved == pytest.approx(0.61)
    assert greedy.achieved < exact.achieved <= greedy.upper


def test_a_front_no_larger_than_k_is_kept_whole() -> None:
    P = np.array([[0.2, 0.8], [0.5, 0.5], [0.6, 0.6], [2.0, 0.1]])  # one dominated, one past the reference
    ref = np.ones(2)
    for bound in (best_subset_2d(P, ref, 5), greedy_subsets(P, ref, [5])[5]):
        assert bound.chosen == (0, 1)
        assert bound.achieved == pytest.approx(hypervolume(P, ref)) and bound.exact


def test_subset_bounds_dispatches_on_the_objective_count() -> None:
    rng = np.random.default_rng(0)
    P2 = _front_2d(rng, 30)
    assert subset_bounds(P2, np.array([1.1, 1.2]), [4])[4] == best_subset_2d(P2, np.array([1.1, 1.2]), 4)
    with pytest.raises(ValueError, match="k must be at least 1"):
        best_subset_2d(P2, np.array([1.1, 1.2]), 0)
    with pytest.raises(ValueError, match="two objectives"):
        best_subset_2d(np.ones((3, 3)), np.full(3, 2.0), 2)


@pytest.mark.parametrize("d", [2, 3])
def test_the_curve_agrees_with_the_per_k_answers(d: int) -> None:
    rng = np.random.default_rng(3)
    U = rng.random((25, d - 1))
    P = np.column_stack([U, 1.2 - U.sum(1) / (d - 1) + rng.normal(0, 0.05, 25)])
    ref = np.full(d, 1.3)
    achieved, upper = subset_curve(P, ref, 30)
    per_k = subset_bounds(P, ref, list(range(1, 31)))
    np.testing.assert_allclose(achieved, [per_k[k].achieved for k in range(1, 31)], rtol=1e-10)
    np.testing.assert_allclose(upper, [per_k[k].upper for k in range(1, 31)], rtol=1e-10)
    assert np.all(np.diff(achieved) >= -1e-12) and np.all(upper >= achieved)
    assert achieved[-1] == pytest.approx(hypervolume(P, ref))  # every front member once k passes the front
