"""Refit's own kernel model: the (similarity, kernel, alpha) of least leave-one-out error,
re-chosen as the data grow, a posterior std in the target's units that is small where configs were
evaluated, and positive semi-definite kernels whether values are compared as labels, by rank or as
numbers."""

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
    assert sim.n_variants == 4  # one-hot, then ranks at two length scales, then the values as numbers
    assert sim.magnitude_variant == 3
    overlap = Overlap(sim, configs)
    model = KernelModel(4, family)
    for v in range(sim.magnitude_variant):
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
    assert Similarity(NUMBERS, ordinal=False, magnitude=False).n_variants == Similarity(LABELS).n_variants == 1
    assert Similarity(NUMBERS, ordinal=False).n_variants == 2 and Similarity(LABELS).magnitude_variant is None


def test_ranks_are_chosen_for_a_metric_smooth_in_its_numbers_and_predict_it_better() -> None:
    # A size that grows with width and bits: comparing values by rank generalises to unseen combinations.
    configs = _all_configs(NUMBERS, inactive=False)
    rng = np.random.default_rng(0)
    take = rng.choice(len(configs), 30, replace=False)
    size = np.array([1.0, 2.0, 3.0, 4.0])[configs[:, 1]] * np.array([1.0, 2.0, 1.5])[configs[:, 2]] + configs[:, 0]
    errors = []
    for ordinal in (False, True):
        overlap = Overlap(Similarity(NUMBERS, ordinal, magnitude=False), configs[take], configs)
        model = KernelModel(4)
        model.fit(overlap, size[take])
        errors.append(np.mean((model.mean(overlap) - size) ** 2))
    assert model.variant > 0 and errors[1] < 0.5 * errors[0]


# Two layers and a head as in a conditional space: depth 1 or 2, widths and bits of numbers; the second
# layer's columns hold index len(values) ("inactive") at depth 1.
LAYERS = Space(("depth", "w1", "b1", "w2", "b2"), (("1", "2"), ("16", "32", "64", "128"), ("2", "4", "8", "32"),
                                                   ("16", "32", "64", "128"), ("2", "4", "8", "32")))


def _layer_configs() -> tuple[np.ndarray, np.ndarray]:
    """Every config of LAYERS (inactive second layer at depth 1) and its weight size in bits."""
    configs = _all_configs(LAYERS, inactive=False)
    configs = configs[(configs[:, 0] == 1) | ((configs[:, 3] == 0) & (configs[:, 4] == 0))]  # one row per depth-1 net
    configs[configs[:, 0] == 0, 3:] = 4
    w = np.array([16.0, 32, 64, 128, 0.0])
    b = np.array([2.0, 4, 8, 32, 0.0])
    size = 8 * w[configs[:, 1]] * b[configs[:, 2]] + w[configs[:, 1]] * w[configs[:, 3]] * b[configs[:, 4]]
    return configs, size


def test_a_size_in_widths_and_bits_is_learnt_from_few_configs_when_values_are_read_as_numbers() -> None:
    configs, size = _layer_configs()
    take = np.random.default_rng(1).choice(len(configs), 60, replace=False)
    errors, models = [], []
    for magnitude in (False, True):
        overlap = Overlap(Similarity(LAYERS, magnitude=magnitude), configs[take], configs)
        model = KernelModel(5)
        model.fit(overlap, size[take])
        errors.append(1 - np.mean((model.mean(overlap) - size) ** 2) / np.var(size))
        models.append(model)
    # A sum of width x width x bits is a degree-3 polynomial of the values, 0 for the absent layer.
    assert models[1].variant == Similarity(LAYERS).magnitude_variant and models[1].kernel[0] == "value"
    assert errors[1] > 0.99 and errors[0] < 0.9  # R^2 over every config


def test_the_magnitude_kernels_are_positive_semi_definite_and_their_std_sound() -> None:
    configs, size = _layer_configs()
    sim = Similarity(LAYERS)
    v = sim.magnitude_variant
    model = KernelModel(5)
    overlap = Overlap(sim, configs, configs)
    m, q = overlap.train(v)
    for kernel in model._kernels(overlap, v, m):
        K = model.gram(kernel, m, q)
        assert np.linalg.eigvalsh(K).min() > -1e-8 * np.abs(K).max()
        # Each config's own kernel value, from the pool side, is the train gram's diagonal.
        np.testing.assert_allclose(model.gram(kernel, *overlap.pool_self(v, np.arange(len(configs)))), np.diag(K))
    take = np.arange(0, len(configs), 7)
    fitted = Overlap(sim, configs[take], configs)
    model.fit(fitted, size[take])
    std = model.std(fitted)
    assert (std >= 0).all() and np.isfinite(std).all()
    assert np.median(std[take]) < np.median(std[np.setdiff1d(np.arange(len(configs)), take)])


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
    for ordinal, magnitude in ((False, False), (True, False), (True, True)):
        overlap = Overlap(Similarity(NUMBERS, ordinal, magnitude), configs[take], configs)
        model = KernelModel(4)
        model.fit(overlap, y[take])
        if magnitude:  # the blocks of a kernel whose k(x, x) is not 1, too
            model.kernel, model.variant = ("value", 3.0), 3
            model.fit(overlap, y[take])  # kept: no new choice until the rows grow by a third
            assert model.kernel == ("value", 3.0)
        rows = np.array([5, 0, 17, 3, 99, 42, 7])
        whole = model.mean(overlap), model.std(overlap), model.mean(overlap, rows), model.std(overlap, rows)
        monkeypatch.setattr(refit_kernel, "_BLOCK", 3)
        blocks = model.mean(overlap), model.std(overlap), model.mean(overlap, rows), model.std(overlap, rows)
        monkeypatch.undo()
        for a, b in zip(whole, blocks, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
        assert len(whole[0]) == len(configs) and len(whole[2]) == len(rows)
        assert len(model.mean(overlap, np.array([], int))) == 0
