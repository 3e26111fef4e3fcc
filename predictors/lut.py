"""Per-layer lookup-table latency with a learned whole-net correction.

The first feature column is the sum of the subnet's per-layer times from a table measured once
per device (see nas.lut). Layers timed alone miss what the compiled whole net does differently
(fusion across layers, one dispatch instead of many, cache reuse), so the model fits the log of
measured / summed time with a ridge regression on every feature, and predicts sum x exp(correction).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from nas.errors import PredictorFileError

from .base import Predictor
from .ridge import RidgePredictor


class LUTPredictor(Predictor):
    """Summed per-layer table latency (feature column 0) times a learned multiplicative correction."""

    kind = "lut"
    raw_columns = (0,)

    def __init__(self, *, log_target: bool = True, degree: int = 1) -> None:
        super().__init__(log_target=log_target)
        if not log_target:
            raise ValueError("the lut predictor corrects multiplicatively: log_target must be true")
        self.correction = RidgePredictor(degree=degree)

    def _options(self) -> dict[str, Any]:
        return {"degree": self.correction.degree}

    def _log_sum(self, Z: np.ndarray) -> np.ndarray:
        sc = self._fitted_scaler()
        summed = Z[:, 0] * sc.x_scale[0] + sc.x_mean[0]
        if np.any(summed <= 0):
            raise ValueError("feature column 0 must be the (positive) summed per-layer latency")
        return np.log(summed)

    def _fit(self, Z: np.ndarray, t: np.ndarray) -> None:
        sc = self._fitted_scaler()
        log_y = sc.y_inverse(t)
        self.correction.fit(Z, log_y - self._log_sum(Z))

    def _predict(self, Z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sc = self._fitted_scaler()
        mean, std = self.correction.predict(Z)
        log_y = self._log_sum(Z) + mean
        return (log_y - sc.y_mean) / sc.y_scale, std / sc.y_scale

    def _params(self) -> dict[str, Any]:
        return {"correction": self.correction.to_dict()}

    def _load_params(self, params: Mapping[str, Any], n_features: int) -> None:
        inner = Predictor.from_dict(params.get("correction"))
        if not isinstance(inner, RidgePredictor) or inner.n_features != n_features:
            raise PredictorFileError("lut model 'correction' must be a ridge model over the same features")
        self.correction = inner
