"""Ridge regression with optional degree-2 features and leave-one-out alpha choice."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from nas.errors import PredictorFileError

from ._arrays import read_array, read_float, read_sigma
from .base import Predictor, repeated_rows

# Features are standardised, so one absolute grid fits every problem.
_ALPHAS = np.logspace(-3, 5, 33)
_QUAD_WEIGHTS = (0.0, 0.1, 0.3, 1.0)


def design_width(n_features: int, degree: int) -> int:
    """Number of design columns for n_features raw features at this degree."""
    return n_features if degree == 1 else n_features + n_features * (n_features + 1) // 2


def _ridge_loo(G: np.ndarray, tc: np.ndarray, repeats: list[np.ndarray]) -> tuple[float, float, np.ndarray]:
    """Best (leave-one-out MSE, alpha, coef) over the alpha grid for centred G, tc; the rows of each
    index array in `repeats` (one config measured several times) are left out together."""
    U, s, Vt = np.linalg.svd(G, full_matrices=False)
    uty = U.T @ tc
    shrink = s**2 / (s**2 + _ALPHAS[:, None])  # (n_alpha, rank)
    fitted = (shrink * uty) @ U.T
    # Exact hat diagonal: centred G is orthogonal to the intercept's 1/n part.
    hat = shrink @ (U**2).T + 1.0 / len(tc)
    loo = (tc - fitted) / np.maximum(1.0 - hat, 1e-9)
    for rows in repeats:
        # Leaving a group out: its residuals are (I - H_gg)^-1 e_g, with H_gg the group's block of the hat.
        Ug = U[rows]
        block = np.einsum("ir,ar,jr->aij", Ug, shrink, Ug) + 1.0 / len(tc)
        eye = np.eye(len(rows))
        loo[:, rows] = np.linalg.solve(eye - block + 1e-9 * eye, (tc[rows] - fitted[:, rows])[..., None])[..., 0]
    loo_mse = np.mean(loo**2, axis=1)
    i = int(np.argmin(loo_mse))
    return float(loo_mse[i]), float(_ALPHAS[i]), Vt.T @ (s / (s**2 + _ALPHAS[i]) * uty)


def _design(Z: np.ndarray, degree: int) -> np.ndarray:
    if degree == 1:
        return Z
    i, j = np.triu_indices(Z.shape[1])
    return np.hstack([Z, Z[:, i] * Z[:, j]])


class RidgePredictor(Predictor):
    """Ridge regression; alpha picked by exact leave-one-out error over a log grid.

    With degree 2 the squares and pairwise products are added as a second
    block whose relative weight (0 = linear only) is also chosen by LOO.

    std is the constant leave-one-out residual RMS (repeats of a config left
    out together): honest about the typical error but the same for every input.
    """

    kind = "ridge"

    def __init__(self, *, degree: int = 2, log_target: bool = False) -> None:
        super().__init__(log_target=log_target)
        if degree not in (1, 2) or isinstance(degree, bool):
            raise ValueError(f"degree must be 1 or 2, got {degree!r}")
        self.degree = int(degree)

    def _options(self) -> dict[str, Any]:
        return {"degree": self.degree}

    def _fit(self, Z: np.ndarray, t: np.ndarray) -> None:
        F = _design(Z, self.degree)
        self.feat_mean = F.mean(axis=0)
        std = F.std(axis=0)
        self.feat_scale = np.where(std > 1e-12, std, 1.0)
        G = (F - self.feat_mean) / self.feat_scale
        self.intercept = float(t.mean())
        tc = t - self.intercept
        n_lin = Z.shape[1]
        repeats = repeated_rows(Z)
        best = (np.inf, 1.0, 1.0, np.zeros(G.shape[1]))
        for weight in _QUAD_WEIGHTS if self.degree == 2 else (1.0,):
            # Shrinking the quadratic block lets one alpha serve both blocks;
            # weight 0 falls back to a purely linear model.
            cols = np.ones(G.shape[1])
            cols[n_lin:] = weight
            loo_mse, alpha, coef = _ridge_loo(G * cols, tc, repeats)
            if loo_mse < best[0]:
                best = (loo_mse, weight, alpha, coef * cols)
        loo_mse, self.quad_weight, self.alpha, self.coef = best
        self.sigma = float(np.sqrt(loo_mse))

    def _predict(self, Z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        G = (_design(Z, self.degree) - self.feat_mean) / self.feat_scale
        mean = G @ self.coef + self.intercept
        return mean, np.full(len(mean), self.sigma)

    def _params(self) -> dict[str, Any]:
        return {
            "coef": self.coef.tolist(),
            "feat_mean": self.feat_mean.tolist(),
            "feat_scale": self.feat_scale.tolist(),
            "intercept": self.intercept,
            "alpha": self.alpha,
            "quad_weight": self.quad_weight,
            "sigma": self.sigma,
        }

    def _load_params(self, params: Mapping[str, Any], n_features: int) -> None:
        width = design_width(n_features, self.degree)
        self.coef = read_array(params, "coef", (width,))
        self.feat_mean = read_array(params, "feat_mean", (width,))
        self.feat_scale = read_array(params, "feat_scale", (width,))
        if np.any(self.feat_scale <= 0):
            raise PredictorFileError("model array 'feat_scale' must be positive")
        self.intercept = read_float(params, "intercept")
        self.alpha = read_float(params, "alpha")
        self.quad_weight = read_float(params, "quad_weight")
        self.sigma = read_sigma(params)
