"""Refit's own kernel model: the (kernel, alpha) of least leave-one-out error, re-chosen as the data
grow, and a posterior std in the target's units that is small where configs were evaluated."""

from __future__ import annotations

import numpy as np

from nas.refit import _MatchKernel, loo_mse


def _counts(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Columns each pair of configs shares (what `match_counts` gives on one-hot configs)."""
    return (A[:, None, :] == B[None, :, :]).sum(axis=-1)


def _data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 3, (n, 4))
    return X, 3.0 * (X[:, 0] == 1) + X[:, 1] * X[:, 2] + 0.3 * rng.normal(size=n)


def _least_loo(model: _MatchKernel, M: np.ndarray, y: np.ndarray) -> tuple[int, float]:
    """Index of the kernel and the alpha of least leave-one-out error, by brute force over both grids."""
    scores = np.array([loo_mse(table[M], y - y.mean(), model._ALPHAS) for table in model.kernels])
    k, a = np.unravel_index(np.argmin(scores), scores.shape)
    return int(k), float(model._ALPHAS[a])


def _kernel_index(model: _MatchKernel) -> int:
    return next(i for i, table in enumerate(model.kernels) if table is model.kernel)


def test_the_kernel_and_alpha_of_least_leave_one_out_error_are_chosen() -> None:
    for seed in range(3):
        X, y = _data(14, seed)
        M = _counts(X, X)
        model = _MatchKernel(4, "mixed")
        model.fit(M, y)
        assert (_kernel_index(model), model.alpha) == _least_loo(model, M, y)


def test_the_choice_is_made_again_once_the_rows_grow_by_a_third() -> None:
    X, y = _data(26, seed=4)
    model = _MatchKernel(4, "mixed")
    model.fit(_counts(X[:10], X[:10]), y[:10])
    assert model.n_selected == 10
    model.fit(_counts(X[:12], X[:12]), y[:12])  # under 1.3 x 10 rows: kept
    assert model.n_selected == 10
    model.fit(_counts(X, X), y)
    assert model.n_selected == 26
    assert (_kernel_index(model), model.alpha) == _least_loo(model, _counts(X, X), y)


def test_the_posterior_std_is_in_the_targets_units_and_lowest_at_evaluated_configs() -> None:
    X, y = _data(14, seed=1)
    far = np.full((1, 4), 7)  # shares no column with any evaluated config
    stds = []
    for unit in (1.0, 10.0):
        model = _MatchKernel(4)
        model.fit(_counts(X, X), unit * y)
        stds.append((model.std(_counts(X[:1], X))[0], model.std(_counts(far, X))[0]))
    (seen, unseen), (seen10, unseen10) = stds
    assert 0 <= seen < unseen
    np.testing.assert_allclose([seen10, unseen10], [10 * seen, 10 * unseen], rtol=1e-6)
