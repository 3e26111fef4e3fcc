"""Hypervolume (minimisation): exact for 1-4 objectives (a 2D sweep, higher dimensions by slicing),
and beyond while the slicing stays cheap, else a seeded Monte-Carlo estimate; the hypervolume a
candidate point would add to a front, for many candidates at once, for 1-4 objectives.

Convention: every column is to be minimised and `ref` is the reference (nadir) point; a point
counts only where it is strictly better than `ref` in every objective.
"""

from __future__ import annotations

import numpy as np


def _as_points(points: object, d: int) -> np.ndarray:
    P = np.asarray(points, np.float64)
    if not P.size:
        return np.zeros((0, d))
    # One point may come flat; anything else of the wrong width was regrouped into wrong points.
    if not (P.ndim == 2 and P.shape[1] == d or P.ndim == 1 and P.size == d):
        raise ValueError(f"points of shape {P.shape} for a {d}-objective reference point: expected (n, {d})")
    return P.reshape(-1, d)


def nondominated_mask(points: object) -> np.ndarray:
    """Mask of rows no other row weakly dominates (of exact duplicates only the first is kept)."""
    P = np.asarray(points, np.float64)
    if P.ndim != 2:
        raise ValueError(f"points must be a 2D array, got shape {P.shape}")
    n = len(P)
    mask = np.zeros(n, bool)
    if n == 0:
        return mask
    # In lexicographic order a row can only be weakly dominated by rows before it, so one pass
    # against the front found so far suffices (the front stays small next to the table).
    order = np.lexsort(P.T[::-1])
    front = np.empty((0, P.shape[1]))
    for i in order:
        p = P[i]
        if len(front) and np.any(np.all(front <= p, axis=1)):
            continue
        mask[i] = True
        front = np.vstack([front, p])
    return mask


def _hv2(P: np.ndarray, ref: np.ndarray) -> float:
    # Sorted by x, the running minimum of y is the staircase height over each x-interval.
    order = np.lexsort((P[:, 1], P[:, 0]))
    x, y = P[order, 0], P[order, 1]
    widths = np.diff(np.append(x, ref[0]))
    return float(np.sum(widths * (ref[1] - np.minimum.accumulate(y))))


def _hv(P: np.ndarray, ref: np.ndarray) -> float:
    d = P.shape[1]
    if d == 1:
        return float(ref[0] - P[:, 0].min())
    if d == 2:
        return _hv2(P, ref)
    # Slice along the last objective: between consecutive levels the dominated region is the
    # (d-1)-dimensional hypervolume of the points at or below that level, times the thickness.
    P = P[np.argsort(P[:, -1], kind="stable")]
    levels = np.append(P[:, -1], ref[-1])
    total = 0.0
    for i in range(len(P)):
        thick = levels[i + 1] - levels[i]
        if thick > 0:
            sub = P[: i + 1, :-1]
            if d > 3:  # pruning pays only where the recursion goes deeper than the sweep
                sub = sub[nondominated_mask(sub)]
            total += thick * _hv(sub, ref[:-1])
    return total


# Beyond 4 objectives slicing costs about n^(d-2) 2D sweeps for n front points: exact up to this
# many (5 objectives: fronts up to ~100 points, ~1 s), a Monte-Carlo estimate past it.
EXACT_SWEEPS = 1_000_000
MC_SAMPLES = 1_000_000


def hypervolume(points: object, ref: object) -> float:
    """Hypervolume dominated by `points` (n, d) up to `ref` (d,), all objectives minimised: exact up to
    4 objectives, and beyond while n^(d-2) <= EXACT_SWEEPS; else estimated from MC_SAMPLES seeded points."""
    r = np.asarray(ref, np.float64).ravel()
    if r.size < 1:
        raise ValueError("hypervolume needs at least one objective")
    P = _as_points(points, r.size)
    P = P[np.all(P < r, axis=1)]
    if not len(P):
        return 0.0
    P = P[nondominated_mask(P)]
    if r.size <= 4 or float(len(P)) ** (r.size - 2) <= EXACT_SWEEPS:
        return _hv(P, r)
    return _hv_monte_carlo(P, r)


def _hv_monte_carlo(P: np.ndarray, r: np.ndarray, samples: int = MC_SAMPLES, seed: int = 0) -> float:
    """Unbiased estimate over the union of the boxes [p, r]: draw a box by its volume, a uniform point in
    it, and average 1 / (boxes holding the point), times the boxes' total volume (Karp-Luby). Unlike
    sampling the front's bounding box, the relative error does not grow as the front covers less of it:
    it is at most sqrt(n / samples) and usually far below (0.1 % on the 5-objective fronts of the tests)."""
    P = P[np.lexsort(P.T[::-1])]  # one order for a set of points: the draws below follow the rows' order
    vol = np.prod(r - P, axis=1)
    total = float(vol.sum())
    rng = np.random.default_rng(seed)  # fixed: the same front always gets the same figure (in any row order)
    acc, chunk = 0.0, max(1, 2_000_000 // len(P))
    for start in range(0, samples, chunk):
        m = min(chunk, samples - start)
        box = rng.choice(len(P), m, p=vol / total)
        U = P[box] + rng.random((m, len(r))) * (r - P[box])
        holders = np.zeros(m)
        for p in P:
            holders += np.all(p <= U, axis=1)
        acc += float(np.sum(1.0 / holders))  # >= 1: each point lies in the box it was drawn from
    return total * acc / samples


def hv_improvements(candidates: object, front: object, ref: object) -> np.ndarray:
    """Hypervolume each candidate row would add to `front` on its own (vectorised over candidates)."""
    r = np.asarray(ref, np.float64).ravel()
    if not 1 <= r.size <= 4:
        raise ValueError(f"hv_improvements supports 1-4 objectives, got {r.size}")
    C = np.minimum(_as_points(candidates, r.size), r)
    F = _as_points(front, r.size)
    F = F[np.all(F < r, axis=1)]
    if len(F):
        F = F[nondominated_mask(F)]
    return _gains(C, F, r)


def _gains(C: np.ndarray, F: np.ndarray, r: np.ndarray) -> np.ndarray:
    if r.size == 1:
        return np.clip(F[:, 0].min(initial=r[0]) - C[:, 0], 0.0, None)
    if r.size == 2:
        return _gains2(C, F, r)
    # Slice along the last objective: between consecutive front levels a candidate adds its
    # (d-1)-dimensional gain over the front points at or below that level, times the part of the
    # slab it covers (from its own last coordinate up). One pass over levels serves every candidate.
    # A candidate whose first d-1 coordinates a front point at or below the slab weakly dominates
    # adds nothing in that slab or any above it: it leaves the loop.
    F = F[np.argsort(F[:, -1], kind="stable")]
    bottoms = np.concatenate([[-np.inf], F[:, -1]])
    tops = np.append(F[:, -1], r[-1])
    out = np.zeros(len(C))
    alive = np.ones(len(C), bool)
    for k in range(len(bottoms)):
        if k:
            alive &= ~np.all(F[k - 1, :-1] <= C[:, :-1], axis=1)
        thick = tops[k] - np.maximum(bottoms[k], C[:, -1])
        live = np.flatnonzero(alive & (thick > 0))
        if len(live):
            out[live] += thick[live] * _gains(C[live, :-1], F[:k, :-1], r[:-1])
    return out


def _gains2(C: np.ndarray, F: np.ndarray, r: np.ndarray) -> np.ndarray:
    # The region not yet dominated is y < h(x), h a staircase: over [x_j, x_(j+1)) (front sorted by
    # x) the lowest y of the points up to j, which also holds when some of them are dominated (the
    # lower slices of a 3D front). A candidate adds the part of [cx, ref_x] x [cy, h(x)) inside it.
    F = F[np.argsort(F[:, 0], kind="stable")]
    lo = np.concatenate([[-np.inf], F[:, 0]])
    hi = np.concatenate([F[:, 0], [r[0]]])
    h = np.minimum.accumulate(np.concatenate([[r[1]], F[:, 1]]))
    width = np.clip(hi[None, :] - np.maximum(lo[None, :], C[:, :1]), 0.0, None)
    height = np.clip(h[None, :] - C[:, 1:2], 0.0, None)
    return np.sum(width * height, axis=1)
