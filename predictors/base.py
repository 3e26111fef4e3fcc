"""The Predictor base class: input checks, scaling, log target, scoring, dict form."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Self

import numpy as np

from nas.errors import PredictorFileError

from . import metrics
from ._arrays import as_matrix, as_target
from .scaling import Standardizer

CV_FOLDS = 5  # folds of the out-of-fold error that gbm and mlp_ensemble keep as their std


def group_folds(Z: np.ndarray, folds: int, seed: int) -> list[np.ndarray]:
    """Row indices of `folds` seeded random folds that keep identical feature rows together, fewer
    when there are fewer distinct rows; with distinct rows, a seeded permutation split in turn.

    A config timed several times is one config: with its twins in training, a held-out repeat
    measured only the repeats' spread (coverage_90 on new configs 0.29 for gbm at 4 repeats)."""
    _, first, group = np.unique(Z, axis=0, return_index=True, return_inverse=True)
    # Groups numbered by first appearance: with distinct rows group i is row i, the folds as they were.
    rank = np.empty(len(first), np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    group = rank[np.asarray(group).ravel()]
    order = np.random.default_rng(seed).permutation(len(first))
    return [np.flatnonzero(np.isin(group, part)) for part in np.array_split(order, min(folds, len(first)))]


def repeated_rows(Z: np.ndarray) -> list[np.ndarray]:
    """Index arrays of the rows of Z that repeat another row's features, one per repeated row."""
    _, group, counts = np.unique(Z, axis=0, return_inverse=True, return_counts=True)
    group = np.asarray(group).ravel()
    return [np.flatnonzero(group == g) for g in np.flatnonzero(counts > 1)]


def out_of_fold_rms(Z: np.ndarray, t: np.ndarray, folds: int, seed: int,
                    predict_held: Callable[[int, np.ndarray, np.ndarray], np.ndarray]) -> float:
    """RMS of out-of-fold residuals of `t` over `folds` seeded random folds of the rows of `Z`
    (`group_folds`: repeats of a feature row held out together), where `predict_held(k, train, held)`
    fits fold k on the `train` rows and predicts the `held` ones; with fewer than 2 folds (too few
    rows to hold any out) the spread of `t`, the honest error then."""
    parts = group_folds(Z, folds, seed) if folds >= 2 else []
    if len(parts) < 2:
        return float(np.std(t))
    out_of_fold = np.empty(len(t))
    for k, held in enumerate(parts):
        out_of_fold[held] = predict_held(k, np.setdiff1d(np.arange(len(t)), held), held)
    return float(np.sqrt(np.mean((out_of_fold - t) ** 2)))


def log_normal(log_mean: np.ndarray, log_std: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(median, std) of the log-normal whose log has mean `log_mean` and std `log_std`."""
    median = np.exp(log_mean)
    # Capped: past a log-space std of ~26.6 expm1 overflows (inf, or NaN where exp(mean) is 0);
    # at the cap the std is already 1e152 times the median, i.e. nothing is known.
    std = np.minimum(median * np.sqrt(np.expm1(np.minimum(log_std**2, 700.0))), np.finfo(np.float64).max)
    return median, std


class Predictor(ABC):
    """Regressor from architecture features to a metric, with an uncertainty.

    Subclasses see only standardised features and a standardised target
    (log-transformed first when ``log_target``), and implement ``_fit``,
    ``_predict``, ``_options``, ``_params`` and ``_load_params``.
    """

    kind: ClassVar[str] = ""
    # Columns the model reads as values whatever the training rows held (the lut's summed latency).
    raw_columns: ClassVar[tuple[int, ...]] = ()

    def __init__(self, *, log_target: bool = False) -> None:
        if not isinstance(log_target, bool):
            raise ValueError(f"log_target must be a bool, got {log_target!r}")
        self.log_target = log_target
        self._scaler: Standardizer | None = None

    # --- public API -----------------------------------------------------
    @property
    def n_features(self) -> int | None:
        """Number of features the predictor was fitted on, or None if unfitted."""
        return None if self._scaler is None else self._scaler.n_features

    def options(self) -> dict[str, Any]:
        """Constructor options: ``type(p)(**p.options())`` rebuilds p unfitted."""
        return {"log_target": self.log_target, **self._options()}

    def fit(self, X: object, y: object) -> Self:
        """Fit on features X (n_samples, n_features) and targets y (n_samples,)."""
        X = as_matrix(X)
        y = as_target(y, X.shape[0])
        if X.shape[0] < 2:
            raise ValueError("need at least 2 training samples")
        if X.shape[1] == 0:
            # lut and gbm broke with an IndexError and an empty argmax (review); nothing to learn from anyway.
            raise ValueError("X has no feature columns")
        if self.log_target:
            if np.any(y <= 0):
                raise ValueError("log_target needs strictly positive targets")
            y = np.log(y)
        self._scaler = Standardizer.fit(X, y, keep=self.raw_columns)
        self._fit(self._scaler.x(X), self._scaler.y(y))
        return self

    def predict(self, X: object) -> tuple[np.ndarray, np.ndarray]:
        """Return (mean, std) arrays of shape (n_samples,) in the target's units.

        With ``log_target`` the mean is exp of the log-space mean (the median
        of a log-normal, which suits multiplicative errors) and the std is the
        log-normal spread around it, exp(m) * sqrt(exp(s^2) - 1), which is
        about exp(m) * s for small s.
        """
        return self.to_target(*self.predict_fitted(X))

    def to_target(self, mean: np.ndarray, std: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`predict`'s (mean, std) from `predict_fitted`'s: the log-normal's median and std with ``log_target``."""
        return log_normal(mean, std) if self.log_target else (mean, std)

    def predict_fitted(self, X: object) -> tuple[np.ndarray, np.ndarray]:
        """(mean, std) of the normal the model fitted: of log(target) with ``log_target``, else as `predict`.

        Quantiles come from here: with ``log_target`` the c-quantile is exp(mean + z_c std), above
        `predict`'s median + z_c std (at s = 0.3 and c = 0.99 a budget so checked was missed 3.8 % of the
        time, not 1 %: benchmarks/std_calibration.py)."""
        sc = self._fitted_scaler()
        with np.errstate(over="ignore", invalid="ignore"):
            Z = sc.x(as_matrix(X, sc.n_features))
        if not (np.abs(Z) <= 1e100).all():
            # An edited file's scaling (x_mean 1e200), or inputs absurdly far from every fitted one: the gp
            # then failed inside scipy with "array must not contain infs or NaNs", blamed on the inputs.
            raise PredictorFileError("the model's feature scaling puts these inputs beyond 1e100 standard "
                                     "deviations (a damaged file, or inputs far outside what it was fitted on)")
        z_mean, z_std = self._predict(Z)
        return sc.y_inverse(z_mean), np.abs(z_std) * sc.y_scale

    def score(self, X: object, y: object) -> dict[str, float | int]:
        """Metrics of the mean prediction on (X, y) (``metrics.score``), and the share of y within its
        90 % band (`coverage_90`: how far the std can be trusted), the fitted normal's mean +- 1.645 std,
        taken on log(y) with ``log_target``."""
        return self.score_fitted(self.predict_fitted(X), y)

    def score_fitted(self, fitted: tuple[np.ndarray, np.ndarray], y: object) -> dict[str, float | int]:
        """`score` from predictions already made by `predict_fitted`."""
        mean, std = fitted
        fitted_y = np.log(np.maximum(as_target(y, len(mean)), np.finfo(np.float64).tiny)) if self.log_target else y
        point = np.exp(mean) if self.log_target else mean
        return {**metrics.score(y, point), "coverage_90": metrics.coverage(fitted_y, mean, std)}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready representation of the fitted predictor (arrays as lists)."""
        sc = self._fitted_scaler()
        return {
            "kind": self.kind,
            "options": self.options(),
            "scaler": sc.to_dict(),
            "params": self._params(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Predictor:
        """Rebuild a fitted predictor; raises PredictorFileError on bad content."""
        if not isinstance(d, Mapping):
            raise PredictorFileError("model must be an object")
        kind = d.get("kind")
        target = cls
        if not cls.kind:
            # Called on the base class: dispatch by kind. Imported here because
            # the registry imports the subclasses, which import this module.
            from .registry import PREDICTORS

            if kind not in PREDICTORS:
                raise PredictorFileError(f"unknown predictor kind {kind!r}")
            target = PREDICTORS[kind]
        elif kind != cls.kind:
            raise PredictorFileError(f"model kind {kind!r} is not {cls.kind!r}")
        options = d.get("options", {})
        if not isinstance(options, Mapping):
            raise PredictorFileError("model 'options' must be an object")
        try:
            obj = target(**options)
        except (TypeError, ValueError) as exc:
            raise PredictorFileError(f"bad options for {kind!r}: {exc}") from None
        obj._scaler = Standardizer.from_dict(d.get("scaler"))
        params = d.get("params")
        if not isinstance(params, Mapping):
            raise PredictorFileError("model 'params' must be an object")
        obj._load_params(params, obj._scaler.n_features)
        return obj

    # --- subclass hooks -------------------------------------------------
    @abstractmethod
    def _fit(self, Z: np.ndarray, t: np.ndarray) -> None:
        """Fit on standardised features Z and standardised target t."""

    @abstractmethod
    def _predict(self, Z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return (mean, std) in standardised target units."""

    def _options(self) -> dict[str, Any]:
        """Kind-specific constructor options (JSON-ready)."""
        return {}

    @abstractmethod
    def _params(self) -> dict[str, Any]:
        """Fitted parameters as a JSON-ready dict."""

    @abstractmethod
    def _load_params(self, params: Mapping[str, Any], n_features: int) -> None:
        """Restore fitted parameters, validating shapes against n_features."""

    # --- helpers --------------------------------------------------------
    def _fitted_scaler(self) -> Standardizer:
        if self._scaler is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted; call fit() first")
        return self._scaler

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options().items())
        return f"{type(self).__name__}({opts})"


def check_positive_int(name: str, value: object, minimum: int = 1) -> int:
    """Return value if it is an int >= minimum, else raise ValueError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def check_positive_float(name: str, value: object, upper: float = math.inf, *, allow_zero: bool = False) -> float:
    """Return value as float if 0 < value <= upper (or 0 when allowed), else raise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    try:
        value = float(value)
    except OverflowError:  # an integer past float's range
        raise ValueError(f"{name} must be in (0, {upper}], got an integer of {len(str(value))} digits") from None
    if not ((0 <= value if allow_zero else 0 < value) and value <= upper):
        raise ValueError(f"{name} must be in (0, {upper}], got {value!r}")
    return value
