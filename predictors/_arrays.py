"""Input checks and strict readers for the arrays stored in predictor dicts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from nas.errors import PredictorFileError


def as_matrix(X: object, n_features: int | None = None) -> np.ndarray:
    """Return X as a finite 2-D float array, checking the column count if given."""
    arr = np.asarray(X, dtype=float)
    if arr.ndim != 2:
        raise ValueError(f"X must be 2-D (n_samples, n_features), got shape {arr.shape}")
    if n_features is not None and arr.shape[1] != n_features:
        raise ValueError(f"X has {arr.shape[1]} features, predictor was fitted on {n_features}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("X contains nan or inf")
    return arr


def as_target(y: object, n_samples: int) -> np.ndarray:
    """Return y as a finite 1-D float array of length n_samples."""
    arr = np.asarray(y, dtype=float).reshape(-1)
    if arr.size != n_samples:
        raise ValueError(f"y has {arr.size} values but X has {n_samples} rows")
    if not np.all(np.isfinite(arr)):
        raise ValueError("y contains nan or inf")
    return arr


def read_array(
    d: Mapping,
    name: str,
    shape: Sequence[int | None],
    dtype: type = float,
    *,
    where: str = "",
) -> np.ndarray:
    """Read d[name] as an array of the given shape (None = any length) or raise."""
    label = f"{where}.{name}" if where else name
    if not isinstance(d, Mapping) or name not in d:
        raise PredictorFileError(f"model array {label!r} is missing")
    try:
        arr = np.asarray(d[name], dtype=float)
    except (TypeError, ValueError):
        raise PredictorFileError(
            f"model array {label!r} is ragged or not numeric (expected shape {_txt(shape)})"
        ) from None
    if arr.ndim != len(shape) or any(
        want is not None and got != want for got, want in zip(arr.shape, shape, strict=True)
    ):
        raise PredictorFileError(f"model array {label!r} has shape {arr.shape}, expected {_txt(shape)}")
    if not np.all(np.isfinite(arr)):
        raise PredictorFileError(f"model array {label!r} contains non-finite values")
    if dtype is int:
        if not np.all(arr == np.round(arr)):
            raise PredictorFileError(f"model array {label!r} must hold integers")
        return arr.astype(np.int64)
    return arr


def _txt(shape: Sequence[int | None]) -> str:
    return "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"


def read_float(d: Mapping, name: str) -> float:
    """Read d[name] as a finite float or raise."""
    return float(read_array(d, name, ()))


def read_sigma(d: Mapping) -> float:
    """d["sigma"], a model's out-of-fold error, as a float >= 0; 0 for files written before it was kept."""
    sigma = read_float(d, "sigma") if "sigma" in d else 0.0
    if not 0 <= sigma <= 1e150:  # squared with the members' spread: 1e200 overflowed at predict time
        raise PredictorFileError(f"model value 'sigma' must be in [0, 1e150], got {sigma!r}")
    return sigma
