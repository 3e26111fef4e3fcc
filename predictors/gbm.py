"""Gradient-boosted depth-limited regression trees in numpy, stored as flat arrays."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from nas.errors import PredictorFileError

from ._arrays import read_array, read_float, read_sigma
from .base import CV_FOLDS, Predictor, check_positive_float, check_positive_int, out_of_fold_rms


def _best_split(X: np.ndarray, r: np.ndarray, min_leaf: int) -> tuple[int, float] | None:
    """Exact best (feature, threshold) by squared-error gain, or None if no gain."""
    n = len(r)
    order = np.argsort(X, axis=0, kind="stable")
    xs = np.take_along_axis(X, order, axis=0)
    left = np.cumsum(r[order], axis=0)[:-1]
    total = r.sum()
    k = np.arange(1, n)[:, None]
    gain = left**2 / k + (total - left) ** 2 / (n - k) - total**2 / n
    # Only split between distinct values, leaving min_leaf rows on each side.
    ok = (xs[1:] > xs[:-1]) & (k >= min_leaf) & (n - k >= min_leaf)
    gain = np.where(ok, gain, -np.inf)
    pos, feat = np.unravel_index(int(np.argmax(gain)), gain.shape)
    if not gain[pos, feat] > 1e-12:
        return None
    lo, hi = xs[pos, feat], xs[pos + 1, feat]
    # The midpoint of two neighbouring floats can round up to `hi`, which would send every row left.
    mid = 0.5 * (lo + hi)
    return int(feat), float(mid if lo <= mid < hi else lo)


def _grow(X: np.ndarray, r: np.ndarray, depth: int, min_leaf: int) -> tuple[np.ndarray, ...]:
    """Grow one tree in heap layout (children of i are 2i+1, 2i+2); -1 marks a leaf."""
    n_nodes = 2 ** (depth + 1) - 1
    feature = np.full(n_nodes, -1, dtype=np.int64)
    threshold = np.zeros(n_nodes)
    value = np.zeros(n_nodes)
    stack = [(0, np.arange(len(r)), 0)]
    while stack:
        node, idx, level = stack.pop()
        value[node] = r[idx].mean()
        if level == depth or len(idx) < 2 * min_leaf:
            continue
        split = _best_split(X[idx], r[idx], min_leaf)
        if split is None:
            continue
        feature[node], threshold[node] = split
        go_right = X[idx, split[0]] > split[1]
        stack.append((2 * node + 1, idx[~go_right], level + 1))
        stack.append((2 * node + 2, idx[go_right], level + 1))
    return feature, threshold, value


def _apply(
    feature: np.ndarray,
    threshold: np.ndarray,
    value: np.ndarray,
    X: np.ndarray,
    depth: int,
) -> np.ndarray:
    """Predict every row by walking the heap layout depth steps at once."""
    node = np.zeros(len(X), dtype=np.int64)
    rows = np.arange(len(X))
    for _ in range(depth):
        f = feature[node]
        leaf = f < 0
        right = X[rows, np.where(leaf, 0, f)] > threshold[node]
        node = np.where(leaf, node, 2 * node + 1 + right)
    return value[node]


class GBMPredictor(Predictor):
    """Boosted regression trees (squared loss, row subsampling).

    std is the constant RMS of out-of-fold residuals (5-fold, the same options
    refitted on each fold's complement): like ridge's leave-one-out RMS, an
    honest typical error that is the same for every input. A single boosted
    model has no per-input uncertainty of its own.
    """

    kind = "gbm"

    def __init__(
        self,
        *,
        n_trees: int = 150,
        depth: int = 3,
        learning_rate: float = 0.1,
        subsample: float = 0.8,
        min_samples_leaf: int = 3,
        seed: int = 0,
        log_target: bool = False,
    ) -> None:
        super().__init__(log_target=log_target)
        self.n_trees = check_positive_int("n_trees", n_trees)
        self.depth = check_positive_int("depth", depth)
        if self.depth > 10:
            raise ValueError(f"depth must be <= 10, got {depth!r}")
        self.learning_rate = check_positive_float("learning_rate", learning_rate, 1.0)
        self.subsample = check_positive_float("subsample", subsample, 1.0)
        self.min_samples_leaf = check_positive_int("min_samples_leaf", min_samples_leaf)
        self.seed = check_positive_int("seed", seed, minimum=0)

    def _options(self) -> dict[str, Any]:
        return {
            "n_trees": self.n_trees,
            "depth": self.depth,
            "learning_rate": self.learning_rate,
            "subsample": self.subsample,
            "min_samples_leaf": self.min_samples_leaf,
            "seed": self.seed,
        }

    def _boost(self, Z: np.ndarray, t: np.ndarray) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
        """(init, feature, threshold, value) of the boosted trees fitted on Z, t."""
        rng = np.random.default_rng(self.seed)
        n = len(t)
        n_sub = max(2 * self.min_samples_leaf, int(round(self.subsample * n)))
        init = float(t.mean())
        pred = np.full(n, init)
        trees = []
        for _ in range(self.n_trees):
            rows = np.sort(rng.choice(n, size=min(n, n_sub), replace=False))
            feature, threshold, value = _grow(Z[rows], t[rows] - pred[rows], self.depth, self.min_samples_leaf)
            value *= self.learning_rate
            pred += _apply(feature, threshold, value, Z, self.depth)
            trees.append((feature, threshold, value))
        return init, *(np.stack([tr[k] for tr in trees]) for k in range(3))

    def _mean(self, trees: tuple[float, np.ndarray, np.ndarray, np.ndarray], Z: np.ndarray) -> np.ndarray:
        init, features, thresholds, values = trees
        mean = np.full(len(Z), init)
        for f, th, v in zip(features, thresholds, values, strict=True):
            mean += _apply(f, th, v, Z, self.depth)
        return mean

    def _fit(self, Z: np.ndarray, t: np.ndarray) -> None:
        self.init, self.feature, self.threshold, self.value = self._boost(Z, t)
        self.sigma = out_of_fold_rms(Z, t, min(CV_FOLDS, len(t) // (2 * self.min_samples_leaf)), self.seed + 1,
                                     lambda _, train, held: self._mean(self._boost(Z[train], t[train]), Z[held]))

    def _predict(self, Z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean = self._mean((self.init, self.feature, self.threshold, self.value), Z)
        return mean, np.full(len(Z), self.sigma)

    def _params(self) -> dict[str, Any]:
        return {
            "init": self.init,
            "feature": self.feature.tolist(),
            "threshold": self.threshold.tolist(),
            "value": self.value.tolist(),
            "sigma": self.sigma,
        }

    def _load_params(self, params: Mapping[str, Any], n_features: int) -> None:
        shape = (self.n_trees, 2 ** (self.depth + 1) - 1)
        self.init = read_float(params, "init")
        self.feature = read_array(params, "feature", shape, dtype=int)
        self.threshold = read_array(params, "threshold", shape)
        self.value = read_array(params, "value", shape)
        self.sigma = read_sigma(params)  # files written before it was kept: no uncertainty, as then
        if np.any(self.feature < -1) or np.any(self.feature >= n_features):
            raise PredictorFileError(f"model array 'feature' indexes outside 0..{n_features - 1}")
