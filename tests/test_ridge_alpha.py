"""The ridge predictor's coefficients are the ridge solution at the alpha its leave-one-out error chose."""

from __future__ import annotations

import numpy as np

from predictors.ridge import _ALPHAS, RidgePredictor


def test_the_coefficients_solve_ridge_at_the_chosen_alpha() -> None:
    rng = np.random.default_rng(0)
    Z = rng.normal(size=(30, 4))
    t = Z[:, 0] + 2.0 * rng.normal(size=30)  # a weak signal in much noise: a strong alpha wins
    model = RidgePredictor(degree=1)
    model._fit(Z, t)
    assert model.alpha > _ALPHAS[0]
    G = (Z - model.feat_mean) / model.feat_scale
    expected = np.linalg.solve(G.T @ G + model.alpha * np.eye(4), G.T @ (t - t.mean()))
    np.testing.assert_allclose(model.coef, expected, rtol=1e-8, atol=1e-10)
