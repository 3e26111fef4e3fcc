"""Standardisation of features and target, shared by every predictor kind."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from nas.errors import PredictorFileError

from ._arrays import read_array, read_float


def _varies(std: np.ndarray | float, mean: np.ndarray | float = 0.0) -> np.ndarray:
    # "Constant" is judged relative to the column's magnitude: a large-valued column (raw MAC counts)
    # whose spread is only float round-off would otherwise be blown up to O(1) noise in training and
    # to huge values for any new input. No absolute floor: a feature measured in tiny units (1e-13)
    # is as informative as the same feature in large ones.
    std = np.asarray(std, dtype=float)
    return (std > 0) & (std > 1e-10 * np.abs(np.asarray(mean, dtype=float)))


def _safe_scale(std: np.ndarray | float, mean: np.ndarray | float = 0.0) -> np.ndarray:
    # A constant column carries no information; scale 1 instead of dividing by zero.
    return np.where(_varies(std, mean), np.asarray(std, dtype=float), 1.0)


@dataclass(frozen=True)
class Standardizer:
    """Column means/scales of X and the mean/scale of the (possibly logged) target. A column constant
    in training (`x_varies` False) reads as 0 whatever its value: no model learned what it does, and
    a kernel or network left at its initial weights for it would swing with a new value."""

    x_mean: np.ndarray
    x_scale: np.ndarray
    y_mean: float
    y_scale: float
    x_varies: np.ndarray | None = None  # None: every column (files written before it was kept)

    @classmethod
    def fit(cls, X: np.ndarray, t: np.ndarray, keep: tuple[int, ...] = ()) -> Standardizer:
        """Estimate the statistics from training features X and target t (`keep`: columns read even
        when constant in training)."""
        x_mean, x_std = X.mean(axis=0), X.std(axis=0)
        varies = _varies(x_std, x_mean)
        varies[list(keep)] = True
        y_mean = float(t.mean())
        return cls(
            x_mean=x_mean,
            x_scale=_safe_scale(x_std, x_mean),
            y_mean=y_mean,
            y_scale=float(_safe_scale(t.std(), y_mean)),
            x_varies=varies,
        )

    @property
    def n_features(self) -> int:
        """Number of feature columns the statistics were fitted on."""
        return int(self.x_mean.size)

    def x(self, X: np.ndarray) -> np.ndarray:
        """Standardise a feature matrix."""
        Z = (X - self.x_mean) / self.x_scale
        return Z if self.x_varies is None else np.where(self.x_varies, Z, 0.0)

    def y(self, t: np.ndarray) -> np.ndarray:
        """Standardise a target vector."""
        return (t - self.y_mean) / self.y_scale

    def y_inverse(self, z: np.ndarray) -> np.ndarray:
        """Undo the target standardisation of a mean prediction."""
        return z * self.y_scale + self.y_mean

    def to_dict(self) -> dict:
        """JSON-ready representation."""
        d = {
            "x_mean": self.x_mean.tolist(),
            "x_scale": self.x_scale.tolist(),
            "y_mean": self.y_mean,
            "y_scale": self.y_scale,
        }
        if self.x_varies is not None:
            d["x_varies"] = self.x_varies.tolist()
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> Standardizer:
        """Rebuild from to_dict output, validating shapes."""
        if not isinstance(d, Mapping):
            raise PredictorFileError("model 'scaler' must be an object")
        x_mean = read_array(d, "x_mean", (None,))
        x_scale = read_array(d, "x_scale", (x_mean.size,))
        y_scale = read_float(d, "y_scale")
        if np.any(x_scale <= 0) or y_scale <= 0:
            raise PredictorFileError("model scaler has non-positive scales")
        varies = d.get("x_varies")
        if varies is not None and (not isinstance(varies, list) or len(varies) != x_mean.size
                                   or not all(isinstance(v, bool) for v in varies)):
            raise PredictorFileError(f"model scaler 'x_varies' must be a list of {x_mean.size} booleans")
        return cls(x_mean, x_scale, read_float(d, "y_mean"), y_scale,
                   None if varies is None else np.array(varies, bool))
