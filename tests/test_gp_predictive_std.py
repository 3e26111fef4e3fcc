"""The GP predictor's std is that of a new measurement: the posterior's plus the fitted noise, so far from
every training row it is sqrt(signal + noise), and on a training row it never drops below the noise."""

from __future__ import annotations

import numpy as np

from predictors.gp import _posterior


def test_the_predictive_std_adds_the_noise_variance() -> None:
    Z = np.array([[0.0], [1.0], [2.0]])
    t = np.array([0.3, -0.2, 0.5])
    signal, noise = 2.0, 0.25
    theta = np.array([0.0, np.log(signal), np.log(noise)])  # unit length scale
    mean, std = _posterior(Z, t, theta, np.array([[1000.0], [1.0]]))
    assert abs(mean[0]) < 1e-12  # nothing known that far out: the prior mean
    assert abs(std[0] - np.sqrt(signal + noise)) < 1e-9
    assert np.sqrt(noise) <= std[1] < np.sqrt(signal + noise)
