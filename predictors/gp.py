"""Gaussian-process regression with one length scale per feature (ARD Matern-5/2), its
hyper-parameters set by maximising the marginal likelihood (type-II maximum likelihood)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy.linalg import cho_factor, cho_solve, solve_triangular
from scipy.optimize import minimize

from nas.errors import PredictorFileError

from ._arrays import read_array, read_float
from .base import CV_FOLDS, Predictor, check_positive_int, group_folds

_SQRT5 = np.sqrt(5.0)
# Bounds in log space, on standardised features and target: length scales 0.01-1000, signal
# variance 0.01-100, noise variance 1e-6 to 1 (all of the target's variance).
_LOG_LS = (np.log(1e-2), np.log(1e3))
_LOG_SIGNAL = (np.log(1e-2), np.log(1e2))
_LOG_NOISE = (np.log(1e-6), 0.0)
CALIBRATE_ROWS = 200  # up to this many rows the std is widened to the out-of-fold error (`_calibration`)


def _sq_dist(A: np.ndarray, B: np.ndarray, inv_ls: np.ndarray) -> np.ndarray:
    a, b = A * inv_ls, B * inv_ls
    d2 = (a**2).sum(1)[:, None] + (b**2).sum(1)[None, :] - 2 * a @ b.T
    return np.maximum(d2, 0.0)


def _matern(d2: np.ndarray, signal: float) -> tuple[np.ndarray, np.ndarray]:
    """Kernel matrix and the common factor of its length-scale derivatives."""
    r = np.sqrt(d2)
    e = np.exp(-_SQRT5 * r)
    return signal * (1 + _SQRT5 * r + 5.0 / 3.0 * d2) * e, signal * 5.0 / 3.0 * (1 + _SQRT5 * r) * e


def _unpack(theta: np.ndarray, d: int) -> tuple[np.ndarray, float, float]:
    """Inverse length scales, signal variance and noise variance from the log hyper-parameters."""
    return np.exp(-theta[:d]), float(np.exp(theta[d])), float(np.exp(theta[d + 1]))


def _train_kernel(Z: np.ndarray, theta: np.ndarray) -> tuple[tuple[np.ndarray, bool], np.ndarray, np.ndarray]:
    """Cholesky factor of the training covariance (kernel + noise + jitter), the noise-free kernel
    and its length-scale derivative factor: shared by the likelihood and the stored posterior, so
    a loaded file rebuilds exactly the factor the fit used."""
    inv_ls, signal, noise = _unpack(theta, Z.shape[1])
    Kf, G = _matern(_sq_dist(Z, Z, inv_ls), signal)
    return cho_factor(Kf + (noise + 1e-8) * np.eye(len(Z)), lower=True), Kf, G


def _nll(theta: np.ndarray, Z: np.ndarray, t: np.ndarray) -> tuple[float, np.ndarray]:
    """Negative log marginal likelihood and its gradient in the log hyper-parameters."""
    inv_ls, _, noise = _unpack(theta, Z.shape[1])
    try:
        c, Kf, G = _train_kernel(Z, theta)
    except np.linalg.LinAlgError:
        return 1e25, np.zeros_like(theta)
    alpha = cho_solve(c, t)
    nll = 0.5 * t @ alpha + np.log(np.diag(c[0])).sum() + 0.5 * len(t) * np.log(2 * np.pi)
    W = cho_solve(c, np.eye(len(t))) - np.outer(alpha, alpha)  # dNLL/dK = W / 2
    B = W * G
    # sum_ij B_ij (z_ik - z_jk)^2 / l_k^2 for every feature k, without the (n, n, d) tensor.
    rows = B.sum(axis=1)
    grad_ls = 2 * ((Z**2 * rows[:, None]).sum(0) - ((B @ Z) * Z).sum(0)) * inv_ls**2
    grad = np.concatenate([0.5 * grad_ls, [0.5 * np.sum(W * Kf), 0.5 * noise * np.trace(W)]])
    return float(nll), grad


def _posterior_from(chol: tuple[np.ndarray, bool], alpha: np.ndarray, Z_train: np.ndarray, theta: np.ndarray,
                    Z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Predictive mean and std (posterior plus noise) at Z, given the training covariance's factor."""
    inv_ls, signal, noise = _unpack(theta, Z.shape[1])
    Ks, _ = _matern(_sq_dist(Z, Z_train, inv_ls), signal)
    v = solve_triangular(chol[0], Ks.T, lower=True)
    return Ks @ alpha, np.sqrt(np.clip(signal - (v**2).sum(0), 0.0, None) + noise)


def _posterior(Z_train: np.ndarray, t: np.ndarray, theta: np.ndarray, Z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`_posterior_from` a GP with hyper-parameters theta conditioned on (Z_train, t)."""
    chol, _, _ = _train_kernel(Z_train, theta)
    return _posterior_from(chol, cho_solve(chol, t), Z_train, theta, Z)


class GPPredictor(Predictor):
    """Gaussian process on standardised features, ARD Matern-5/2 kernel plus observation noise.

    One length scale per feature lets the fit find which features matter and how smoothly;
    they, the signal and the noise variance maximise the marginal likelihood (L-BFGS from
    `restarts` starting points, the best kept). std is the predictive spread of a new
    measurement: the posterior's plus the fitted noise, widened on up to `CALIBRATE_ROWS` rows to
    the out-of-fold error (`std_scale`). The file keeps the training features and
    the dual coefficients; the Cholesky factor for std is recomputed on load.
    """

    kind = "gp"

    def __init__(self, *, restarts: int = 2, max_iter: int = 100, fit_rows: int = 600, max_rows: int = 3000,
                 log_target: bool = False) -> None:
        super().__init__(log_target=log_target)
        self.restarts = check_positive_int("restarts", restarts)
        self.max_iter = check_positive_int("max_iter", max_iter)
        # Each likelihood evaluation costs n^3: hyper-parameters come from at most `fit_rows` rows and
        # the posterior from at most `max_rows` (seeded subsets), so a large table stays minutes, not hours.
        self.fit_rows = check_positive_int("fit_rows", fit_rows, minimum=2)
        self.max_rows = check_positive_int("max_rows", max_rows, minimum=2)

    def _options(self) -> dict[str, Any]:
        return {"restarts": self.restarts, "max_iter": self.max_iter, "fit_rows": self.fit_rows,
                "max_rows": self.max_rows}

    def _fit(self, Z: np.ndarray, t: np.ndarray) -> None:
        rng = np.random.default_rng(0)
        if len(t) > self.max_rows:
            keep = np.sort(rng.choice(len(t), self.max_rows, replace=False))
            Z, t = Z[keep], t[keep]
        sub = np.sort(rng.choice(len(t), self.fit_rows, replace=False)) if len(t) > self.fit_rows else slice(None)
        self.theta = self._hyperparameters(Z[sub], t[sub])
        self.Z = Z.copy()
        self._factor()
        self.alpha = cho_solve(self._chol, t)
        self.std_scale = self._calibration(Z, t) if len(t) <= CALIBRATE_ROWS else 1.0

    def _calibration(self, Z: np.ndarray, t: np.ndarray) -> float:
        """How much wider the std must be to match the out-of-fold error, >= 1: the RMS of held-out
        residuals in std units, hyper-parameters refitted per fold (their optimum on few rows is
        overconfident: length scales at their bound, noise at its floor; the 90 % band covered 0.61
        of new rows at 10 training rows, 0.86 at 40, 0.87 at 120: benchmarks/std_calibration.py)."""
        folds = [held for held in group_folds(Z, CV_FOLDS, 2) if len(t) - len(held) >= 2]
        if len(folds) < 2:
            return 1.0
        z = []
        for held in folds:
            train = np.setdiff1d(np.arange(len(t)), held)
            theta = self._hyperparameters(Z[train], t[train])
            mean, std = _posterior(Z[train], t[train], theta, Z[held])
            z.append((t[held] - mean) / std)
        return max(1.0, float(np.sqrt(np.mean(np.concatenate(z) ** 2))))

    def _hyperparameters(self, Z: np.ndarray, t: np.ndarray) -> np.ndarray:
        d = Z.shape[1]
        bounds = [_LOG_LS] * d + [_LOG_SIGNAL, _LOG_NOISE]
        # Start from unit length scales and from ones that grow with the feature count (a smooth,
        # nearly additive fit), then from seeded random points within the bounds.
        starts = [np.r_[np.zeros(d), 0.0, np.log(0.1)], np.r_[np.full(d, 0.5 * np.log(d + 1)), 0.0, np.log(0.1)]]
        rng = np.random.default_rng(1)
        while len(starts) < self.restarts:
            starts.append(np.r_[rng.uniform(-1, 2, d), rng.uniform(-1, 1), rng.uniform(-5, -1)])
        best = None
        for x0 in starts[: self.restarts]:
            res = minimize(_nll, x0, args=(Z, t), jac=True, method="L-BFGS-B", bounds=bounds,
                           options={"maxiter": self.max_iter})
            if best is None or res.fun < best.fun:
                best = res
        return np.asarray(best.x, float)

    def _factor(self) -> None:
        self._chol, _, _ = _train_kernel(self.Z, self.theta)

    def _predict(self, Z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean, std = _posterior_from(self._chol, self.alpha, self.Z, self.theta, Z)
        return mean, std * self.std_scale

    def _params(self) -> dict[str, Any]:
        return {"theta": self.theta.tolist(), "train_features": self.Z.tolist(), "alpha": self.alpha.tolist(),
                "std_scale": self.std_scale}

    def _load_params(self, params: Mapping[str, Any], n_features: int) -> None:
        # 1 for files written before the scale was kept (their std as it was).
        self.std_scale = read_float(params, "std_scale") if "std_scale" in params else 1.0
        if not 1.0 <= self.std_scale <= 1e6:
            raise PredictorFileError(f"model value 'std_scale' must be in [1, 1e6], got {self.std_scale!r}")
        self.theta = read_array(params, "theta", (n_features + 2,))
        self.Z = read_array(params, "train_features", (None, n_features))
        self.alpha = read_array(params, "alpha", (len(self.Z),))
        if len(self.Z) < 2:
            raise PredictorFileError("model array 'train_features' needs at least 2 rows")
        try:
            self._factor()
        except (np.linalg.LinAlgError, ValueError, FloatingPointError):
            raise PredictorFileError("model values 'theta' / 'train_features' give no valid kernel") from None
