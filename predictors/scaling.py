"""Standardisation of features and target, shared by every predictor kind."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from nas.errors import PredictorFileError

from ._arrays import read_array, read_float


def _safe_scale(std: np.ndarray | float, mean: np.ndarray | float = 0.0) -> np.ndarray:
    # A constant column carries no information; scale 1 keeps it at zero
    # instead of dividing by zero. "Constant" is judged relative to the
    # column's magnitude too: a large-valued column (raw MAC counts) whose
    # spread is only float round-off would otherwise be blown up to O(1)
    # noise in training and to huge values for any new input.
    std = np.asarray(std, dtype=float)
    tol = np.maximum(1e-12, 1e-10 * np.abs(np.asarray(mean, dtype=float)))
    return np.where(std > tol, std, 1.0)


@dataclass(frozen=True)
class Standardizer:
    """Column means/scales of X and the mean/scale of the (possibly logged) target."""

    x_mean: np.ndarray
    x_scale: np.ndarray
    y_mean: float
    y_scale: float

    @classmethod
    def fit(cls, X: np.ndarray, t: np.ndarray) -> Standardizer:
        """Estimate the statistics from training features X and target t."""
        x_mean = X.mean(axis=0)
        y_mean = float(t.mean())
        return cls(
            x_mean=x_mean,
            x_scale=_safe_scale(X.std(axis=0), x_mean),
            y_mean=y_mean,
            y_scale=float(_safe_scale(t.std(), y_mean)),
        )

    @property
    def n_features(self) -> int:
        """Number of feature columns the statistics were fitted on."""
        return int(self.x_mean.size)

    def x(self, X: np.ndarray) -> np.ndarray:
        """Standardise a feature matrix."""
        return (X - self.x_mean) / self.x_scale

    def y(self, t: np.ndarray) -> np.ndarray:
        """Standardise a target vector."""
        return (t - self.y_mean) / self.y_scale

    def y_inverse(self, z: np.ndarray) -> np.ndarray:
        """Undo the target standardisation of a mean prediction."""
        return z * self.y_scale + self.y_mean

    def to_dict(self) -> dict:
        """JSON-ready representation."""
        return {
            "x_mean": self.x_mean.tolist(),
            "x_scale": self.x_scale.tolist(),
            "y_mean": self.y_mean,
            "y_scale": self.y_scale,
        }

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
        return cls(x_mean, x_scale, read_float(d, "y_mean"), y_scale)
