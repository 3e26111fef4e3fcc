"""Refit's own kernel model: the (similarity, kernel, alpha) of least leave-one-out error,
re-chosen as the data grow, a posterior std in the target's units that is small where configs were
evaluated, and positive semi-definite kernels whether values are compared as labels or by rank."""

from __future__ import annotations

import numpy as np
import pytest

from nas.refit_kernel import KernelModel, Overlap, Similarity, loo_mse, loo_predictions
from nas.table import Space

LABELS = Space(("a", "b", "c", "d"), (("x", "y", "z", "w"),) * 4)  # no column of numbers: one-hot only
NUMBERS = Space(("depth", "width", "bits", "op"), (("1", "2", "3"), ("16", "32", "64", "128"), ("4", "8", ""),
                                                   ("conv", "pool")))


def _data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 3, (n, 4))
    return X, 3.0 * (X[:, 0] == 1) + X[:, 1] * X[:, 2] + 0.3 * rng.normal(size=n)


def _least_loo(model: KernelModel, overlap: Overlap, y: np.ndarray) -> tuple:
    """The (variant, kernel, alpha) of least leave-one-out error, by brute force over every grid."""
    best = (np.inf,)
    for v in range(overlap.n_variants):
        for kernel in model.kernels:
            loo = loo_mse(model.gram(kernel, *overlap.train(v)), y - y.mean(), model._ALPHAS)
            i = int(np.argmin(loo))
            if loo[i] < best[0]:
                best = (loo[i], v, kernel, float(model._ALPHAS[i]))
    return best[1:]


def test_the_kernel_and_alpha_of_least_leave_one_out_error_are_chosen() -> None:
    for seed in range(3):
        X, y = _data(14, seed)
        overlap = Overlap(Similarity(LABELS), X)
        model = KernelModel(4, "mixed")
        model.fit(overlap, y)
        assert (model.variant, model.kernel, model.alpha) == _least_loo(model, overlap, y)


def test_the_choice_is_made_again_once_the_rows_grow_by_a_third() -> None:
    X, y = _data(26, seed=4)
    sim = Similarity(LABELS)
    model = KernelModel(4, "mixed")
    model.fit(Overlap(sim, X[:10]), y[:10])
    assert model.n_selected == 10
    model.fit(Overlap(sim, X[:12]), y[:12])  # under 1.3 x 10 rows: kept
    assert model.n_selected == 10
    model.fit(Overlap(sim, X), y)
    assert model.n_selected == 26
    assert (model.variant, model.kernel, model.alpha) == _least_loo(model, Overlap(sim, X), y)


def test_the_posterior_std_is_in_the_targets_units_and_lowest_at_evaluated_configs() -> None:
    X, y = _data(14, seed=1)
    far = np.full((1, 4), 3)  # shares no column with any evaluated config
    stds = []
    for unit in (1.0, 10.0):
        model = KernelModel(4)
        sim = Similarity(LABELS)
        model.fit(Overlap(sim, X), unit * y)
        stds.append((model.std(Overlap(sim, X, X[:1]))[0], model.std(Overlap(sim, X, far))[0]))
    (seen, unseen), (seen10, unseen10) = stds
    assert 0 <= seen < unseen
    np.testing.assert_allclose([seen10, unseen10], [10 * seen, 10 * unseen], rtol=1e-6)


def _all_configs(space: Space, inactive: bool = True) -> np.ndarray:
    grids = np.meshgrid(*[np.arange(len(v) + inactive) for v in space.values], indexing="ij")
    return np.stack([g.ravel() for g in grids], axis=1)


@pytest.mark.parametrize("family", ["poly2", "hamming", "mixed"])
def test_every_kernel_is_positive_semi_definite_with_k_of_a_config_and_itself_1(family: str) -> None:
    configs = _all_configs(NUMBERS)  # inactive values too
    sim = Similarity(NUMBERS)
    assert sim.n_variants == 3  # one-hot, then ranks at two length scales
    overlap = Overlap(sim, configs)
    model = KernelModel(4, family)
    for v in range(sim.n_variants):
        for kernel in model.kernels:
            K = model.gram(kernel, *overlap.train(v))
            np.testing.assert_allclose(np.diag(K), 1.0, atol=1e-9)
            assert np.linalg.eigvalsh(K).min() > -1e-8


def test_ranks_make_near_numbers_similar_and_leave_labels_and_blanks_apart() -> None:
    sim = Similarity(NUMBERS)
    one = lambda a, b, v: float(Overlap(sim, np.array([a]), np.array([b])).pool(v)[0][0, 0])  # noqa: E731
    base = (0, 2, 0, 0)  # depth 1, width 64, bits 4, conv
    assert one(base, (0, 3, 0, 0), 0) == 3  # one-hot: the width differs, three columns shared
    near, far = one(base, (0, 3, 0, 0), 1), one(base, (0, 0, 0, 0), 1)
    assert 3 < far < near < 4  # 64 is nearer 128 than 16 is
    assert one(base, (0, 2, 2, 0), 1) == pytest.approx(3)  # a blank bits cell is like no number
    assert one(base, (0, 2, 0, 1), 1) == pytest.approx(3)  # conv / pool: labels
    assert one(base, (0, 4, 0, 0), 1) == pytest.approx(3)  # an inactive width is like no width
    assert Similarity(NUMBERS, ordinal=False).n_variants == Similarity(LABELS).n_variants == 1


def test_ranks_are_chosen_for_a_metric_smooth_in_its_numbers_and_predict_it_better() -> None:
    # A size that grows with width and bits: comparing values by rank generalises to unseen combinations.
    configs = _all_configs(NUMBERS, inactive=False)
    rng = np.random.default_rng(0)
    take = rng.choice(len(configs), 30, replace=False)
    size = np.array([1.0, 2.0, 3.0, 4.0])[configs[:, 1]] * np.array([1.0, 2.0, 1.5])[configs[:, 2]] + configs[:, 0]
    errors = []
    for ordinal in (False, True):
        overlap = Overlap(Similarity(NUMBERS, ordinal), configs[take], configs)
        model = KernelModel(4)
        model.fit(overlap, size[take])
        errors.append(np.mean((model.mean(overlap) - size) ** 2))
    assert model.variant > 0 and errors[1] < 0.5 * errors[0]


def test_leave_one_out_error_is_that_of_the_predictions() -> None:
    X, y = _data(12, seed=2)
    K = KernelModel(4).gram(("poly", 1.0), *Overlap(Similarity(LABELS), X).train(0))
    alphas = KernelModel._ALPHAS
    np.testing.assert_allclose(loo_mse(K, y - y.mean(), alphas),
                               np.mean((loo_predictions(K, y, alphas) - y) ** 2, axis=1))


def test_the_pool_in_blocks_gives_what_it_gives_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    import nas.refit_kernel as refit_kernel

    configs = _all_configs(NUMBERS)
    rng = np.random.default_rng(3)
    take = rng.choice(len(configs), 25, replace=False)
    y = configs.sum(axis=1) + rng.normal(size=len(configs))
    for ordinal in (False, True):
        overlap = Overlap(Similarity(NUMBERS, ordinal), configs[take], configs)
        model = KernelModel(4)
        model.fit(overlap, y[take])
        rows = np.array([5, 0, 17, 3, 99, 42, 7])
        whole = model.mean(overlap), model.std(overlap), model.mean(overlap, rows), model.std(overlap, rows)
        monkeypatch.setattr(refit_kernel, "_BLOCK", 3)
        blocks = model.mean(overlap), model.std(overlap), model.mean(overlap, rows), model.std(overlap, rows)
        monkeypatch.undo()
        for a, b in zip(whole, blocks, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
        assert len(whole[0]) == len(configs) and len(whole[2]) == len(rows)
        assert len(model.mean(overlap, np.array([], int))) == 0
