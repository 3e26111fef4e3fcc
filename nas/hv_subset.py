"""The most hypervolume k points of a front can hold: exactly for two objectives (dynamic programme
over the sorted front), and for three or four bracketed between the greedy choice (a set any search
that knew the table could pick) and an upper bound no k-subset can pass.

Why: with k evaluations a search on a table keeps at most the best k-subset's hypervolume (a
dominated row adds nothing its dominator would not), so this is the ceiling of hv_ratio at k
evaluations on that table, whatever the strategy. Same convention as nas.hypervolume: every column
minimised, `ref` the reference point.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nas.hypervolume import _as_points, hv_improvements, hypervolume, nondominated_mask


@dataclass(frozen=True)
class SubsetBound:
    """Best k-subset hypervolume of a front: `chosen` reaches `achieved`; none exceeds `upper`."""

    k: int
    chosen: tuple[int, ...]  # rows of the points passed in
    achieved: float
    upper: float

    @property
    def exact(self) -> bool:
        """Whether the bracket is closed (the chosen set is a best one)."""
        return self.upper <= self.achieved * (1 + 1e-12)


def _front(points: object, ref: object) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r = np.asarray(ref, np.float64).ravel()
    P = _as_points(points, r.size)
    rows = np.flatnonzero(np.all(P < r, axis=1))
    rows = rows[nondominated_mask(P[rows])] if len(rows) else rows
    return P[rows], rows, r


def _levels_2d(F: np.ndarray, r: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dynamic programme over the front sorted by x: value[j, i] is the most hypervolume right of
    x_i that at most j + 1 points hold, the leftmost being point i; nxt[j, i] the next point chosen
    (-1: none better than with j points). A point i followed by l covers [x_i, x_l) at height h_i."""
    order = np.argsort(F[:, 0], kind="stable")  # x ascending, so y descending along a front
    x, h = F[order, 0], r[1] - F[order, 1]
    n = len(x)
    value = np.empty((k, n))
    value[0] = (r[0] - x) * h
    nxt = np.full((k, n), -1)
    later = np.triu(np.ones((n, n), bool), 1)
    strip = (x[None, :] - x[:, None]) * h[:, None]
    for j in range(1, k):
        cand = np.where(later, strip + value[j - 1][None, :], -np.inf)
        best = cand.argmax(axis=1)
        gain = cand[np.arange(n), best]
        take = gain > value[j - 1]
        nxt[j] = np.where(take, best, -1)
        value[j] = np.where(take, gain, value[j - 1])
    return value, nxt, order


def best_subset_2d(points: object, ref: object, k: int) -> SubsetBound:
    """The k points (two objectives) whose hypervolume is largest, found exactly."""
    F, rows, r = _front(points, ref)
    if r.size != 2:
        raise ValueError(f"best_subset_2d needs two objectives, got {r.size}")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if len(F) <= k:
        hv = hypervolume(F, r)
        return SubsetBound(k, tuple(int(i) for i in rows), hv, hv)
    value, nxt, order = _levels_2d(F, r, k)
    i, j, picked = int(value[-1].argmax()), k - 1, []
    achieved = float(value[-1, i])
    while i >= 0:
        picked.append(i)
        while j > 0 and nxt[j, i] < 0:  # levels where i was better left last
            j -= 1
        i, j = (int(nxt[j, i]), j - 1) if j > 0 else (-1, 0)
    chosen = tuple(sorted(int(rows[order[p]]) for p in picked))
    return SubsetBound(k, chosen, achieved, achieved)


def _greedy(F: np.ndarray, r: np.ndarray, kmax: int) -> tuple[list[int], np.ndarray, np.ndarray]:
    """Greedy order of up to kmax front points, hv after each step (index t: t points), and for each
    k = 1..kmax the bound min over steps t of hv(S_t) + the k largest single-point gains over S_t."""
    kmax = min(kmax, len(F))
    chosen: list[int] = []
    hv = np.zeros(kmax + 1)
    upper = np.full(kmax, np.inf)
    left = np.ones(len(F), bool)
    for t in range(kmax + 1):
        gains = hv_improvements(F[left], F[chosen], r) if left.any() else np.zeros(0)
        top = np.cumsum(np.sort(gains)[::-1])
        top = np.concatenate([top, np.full(max(0, kmax - len(top)), top[-1] if len(top) else 0.0)])[:kmax]
        upper = np.minimum(upper, hv[t] + top)
        if t == kmax:
            break
        pick = int(np.flatnonzero(left)[gains.argmax()])
        chosen.append(pick)
        left[pick] = False
        hv[t + 1] = hv[t] + float(gains.max())
    return chosen, hv, upper


def greedy_subsets(points: object, ref: object, ks: list[int]) -> dict[int, SubsetBound]:
    """For each k in `ks` (1-4 objectives): the greedy k points and the submodular upper bound on
    the best k-subset, min over greedy steps t of hv(S_t) + the k largest single-point gains over S_t."""
    F, rows, r = _front(points, ref)
    if not ks or min(ks) < 1:
        raise ValueError(f"every k must be at least 1, got {ks}")
    chosen, _, upper = _greedy(F, r, max(ks))
    out = {}
    for k in ks:
        take = chosen[: min(k, len(F))]
        hv = hypervolume(F[take], r)  # recomputed from scratch rather than summed
        out[k] = SubsetBound(k, tuple(sorted(int(rows[i]) for i in take)), hv,
                             max(float(upper[min(k, len(F)) - 1]) if len(F) else 0.0, hv))
    return out


def subset_bounds(points: object, ref: object, ks: list[int]) -> dict[int, SubsetBound]:
    """Best k-subset bracket for each k: exact for two objectives, greedy and bound for three or four."""
    r = np.asarray(ref, np.float64).ravel()
    if r.size == 2:
        return {k: best_subset_2d(points, r, k) for k in ks}
    return greedy_subsets(points, r, ks)


def subset_curve(points: object, ref: object, kmax: int) -> tuple[np.ndarray, np.ndarray]:
    """(achieved, upper) hypervolume of the best k-subset for k = 1..kmax (flat past the front's size):
    exact for two objectives (one programme serves every k), greedy and its bound for three or four."""
    F, _, r = _front(points, ref)
    if kmax < 1:
        raise ValueError(f"kmax must be at least 1, got {kmax}")
    if not len(F):
        return np.zeros(kmax), np.zeros(kmax)
    n = min(kmax, len(F))
    if r.size == 2:
        achieved = _levels_2d(F, r, n)[0].max(axis=1)
        upper = achieved
    else:
        _, hv, upper = _greedy(F, r, n)
        achieved = hv[1:]
    pad = kmax - n
    return np.pad(achieved, (0, pad), mode="edge"), np.pad(np.maximum(upper, achieved), (0, pad), mode="edge")
