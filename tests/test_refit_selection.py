"""Refit's batch selection, pool and start: greedy hypervolume picks that count earlier picks, the
closest-to-front fallback when nothing is predicted to gain, a reference point that reaches the worst
prediction, local moves around the feasible front only, and the smallest net of a conditional table."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from nas.refit import _Listed, _numeric_extremes, _select
from nas.tabular import load_table


def test_a_greedy_batch_does_not_pick_a_near_copy_of_an_earlier_pick() -> None:
    # Normalised, minimised; the front's two ends. A and its near copy each gain the most alone, but once
    # A is picked its copy adds nothing, while B (another part of the front) still adds area.
    front = np.array([[0.0, 1.0], [1.0, 0.0]])
    pred = np.array([[0.2, 0.2], [0.21, 0.21], [0.6, 0.05]])
    assert _select(pred, front, np.full(2, 1.1), 2) == [0, 2]


def test_in_three_objectives_a_big_gain_a_little_further_from_the_front_is_still_scored() -> None:
    # 300 candidates each a hair from dominating the front point (epsilon 0.049) but gaining little
    # (0.024 each), and one further off (epsilon 0.1) that fills a large gap (gain 0.064). Scoring only
    # the 200 nearest the front left it out; refit's picks then stalled on the transformer table.
    from nas.refit import PICK_CANDIDATES

    front, ref = np.full((1, 3), 0.5), np.ones(3)
    near = np.tile([0.45, 0.45, 0.549], (300, 1)) + np.linspace(0, 1e-4, 300)[:, None]
    pred = np.vstack([near, [[0.1, 0.6, 0.6]]])
    assert PICK_CANDIDATES > len(near)
    assert _select(pred, front, ref, 1) == [300]


def test_when_nothing_is_predicted_to_gain_the_candidate_nearest_the_front_is_taken() -> None:
    front = np.array([[0.0, 0.0]])  # dominates every candidate: no hypervolume gain anywhere
    # Nearest: the least by which a candidate must improve in every objective to leave the dominated region
    # (0.9, 0.2, 0.5, 0.8 here; the last is close in one objective only, which is not close).
    pred = np.array([[0.9, 0.9], [0.1, 0.2], [0.5, 0.5], [0.05, 0.8]])
    assert _select(pred, front, np.full(2, 1.1), 1) == [1]
    assert _select(pred, front, np.full(2, 1.1), 4) == [1, 2, 3, 0]


def test_the_smallest_net_counts_inactive_layers_as_absent_not_at_their_spelled_width(tmp_path: Path) -> None:
    # Depth 1 spells its absent layers 1 and 2 at the widest width, depth 2 its absent layer 2. Read at
    # their spelling, the shallow net looked wide and the deep net at the narrowest widths was "smallest".
    rows = [[1, w0, 64, 64] for w0 in (16, 64)]
    rows += [[2, w0, w1, 64] for w0 in (16, 64) for w1 in (16, 64)]
    rows += [[3, w0, w1, w2] for w0 in (16, 64) for w1 in (16, 64) for w2 in (16, 64)]
    path = tmp_path / "n.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["depth", "w0", "w1", "w2", "acc", "lat"])
        w.writerows([[*r, 0.5 + sum(r) / 1000, sum(r) / 10] for r in rows])
    table = load_table(path, ("acc:max", "lat:min"))
    ends = _numeric_extremes(table.space, _Listed(table.space, table.configs))
    assert [table.space.describe(c) for c in ends] == [{"depth": "3", "w0": "64", "w1": "64", "w2": "64"},
                                                       {"depth": "1", "w0": "16", "w1": "64", "w2": "64"}]


class _Fixed:
    """A stand-in for refit's own model of one objective: fixed signed means over the pool, no std."""

    def __init__(self, values: list[float]) -> None:
        self.values = np.array(values)

    def fit(self, overlap: object, y: np.ndarray) -> None:
        pass

    def mean(self, overlap: object, rows: np.ndarray | None = None) -> np.ndarray:
        return self.values if rows is None else self.values[rows]

    def std(self, overlap: object, rows: np.ndarray | None = None) -> np.ndarray:
        return np.zeros(len(self.mean(overlap, rows)))


def test_a_cheap_net_poorer_than_any_seen_can_gain_under_refits_own_model() -> None:
    from nas.config import Objective
    from nas.refit import RefitOptions, _refit_round
    from nas.table import Space

    space = Space(("a", "b"), (("0", "1", "2"), ("0", "1", "2")))
    objs = (Objective("acc", "maximize"), Objective("lat", "minimize"))
    present = [((0, 0), {"acc": 0.5, "lat": 1.0}), ((0, 1), {"acc": 0.6, "lat": 2.0}),
               ((1, 0), {"acc": 0.7, "lat": 3.0}), ((1, 1), {"acc": 0.8, "lat": 4.0})]
    # Predicted: a config inside the seen ranges that fills a small notch of the front, and two nets cheaper
    # than any seen but less accurate too (past the worst seen accuracy, 0.5). Against a reference at the
    # worst seen the two gained nothing; the reference reaches the worst predicted, so the first of them gains.
    models = {"acc": _Fixed([-0.52, -0.45, -0.41]), "lat": _Fixed([1.8, 0.4, 0.7])}
    pool = np.array([[0, 2], [2, 0], [2, 2]])
    assert _refit_round(space, objs, (), present, pool, 1, RefitOptions(), 0, models) == [1]


class _Seen:
    """A stand-in oracle that has looked up `configs`."""

    def __init__(self, configs: list[tuple[int, ...]]) -> None:
        self.configs = set(configs)

    def seen(self, config: tuple[int, ...]) -> bool:
        return tuple(config) in self.configs


def _neighbours_of(config: tuple[int, ...], n_values: int) -> set[tuple[int, ...]]:
    """Every config one column away from `config` (and `config` itself)."""
    out = set()
    for k in range(len(config)):
        for v in range(n_values):
            out.add(config[:k] + (v,) + config[k + 1:])
    return out


def test_local_moves_are_one_column_from_the_feasible_front_only() -> None:
    from nas.config import Budget, Objective
    from nas.refit import _front_neighbours
    from nas.table import Space

    space = Space(("a", "b"), (("0", "1", "2"), ("0", "1", "2")))
    objs = (Objective("acc", "maximize"), Objective("lat", "minimize"))
    # (1, 1) dominates (2, 2); (0, 0) is better still but over the latency budget.
    present = [((1, 1), {"acc": 0.8, "lat": 2.0}), ((2, 2), {"acc": 0.5, "lat": 3.0}),
               ((0, 0), {"acc": 0.9, "lat": 9.0})]
    seen = [c for c, _ in present]
    moves = _front_neighbours(space, objs, (Budget("lat", max=5.0),), present, _Seen(seen))
    assert {tuple(int(v) for v in c) for c in moves} == _neighbours_of((1, 1), 3) - set(seen)


def test_moves_around_the_evaluated_come_from_the_last_200_of_them() -> None:
    from nas.refit import _neighbours
    from nas.table import Space

    space = Space(("a", "b", "c"), tuple(tuple(str(v) for v in range(300)) for _ in range(3)))
    configs = [(i, i, i) for i in range(250)]  # in the order evaluated
    got = {tuple(int(v) for v in c) for c in _neighbours(space, configs)}
    assert got == set().union(*(_neighbours_of(c, 300) for c in configs[-200:]))
