"""Data splits and normalisation: sizes (validation carved from what the test split leaves), the split a
pure function of split_seed, and shift/scale computed on the training split alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nas.config import DataConfig
from nas.data import load_data


def _digits(**changes: object) -> DataConfig:
    base = dict(dataset="digits", path=None, val_fraction=0.2, test_fraction=0.2, normalize="minmax", split_seed=0)
    base.update(changes)
    return DataConfig(**base)


def _npz(tmp_path: Path, normalize: str, seed: int) -> DataConfig:
    rng = np.random.default_rng(0)
    x = rng.normal(0.0, 1.0, (60, 3)) * np.array([1.0, 10.0, 100.0]) + np.array([0.0, 5.0, -50.0])
    x[np.arange(60), np.arange(60) % 3] *= np.linspace(1, 8, 60)  # each column's extremes on different rows
    y = np.arange(60) % 3
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y, x_test=x[:9] * 3, y_test=y[:9])
    return DataConfig(dataset="npz", path=tmp_path / "d.npz", val_fraction=0.25, test_fraction=0.2,
                      normalize=normalize, split_seed=seed)


def test_split_sizes_carve_validation_from_what_the_test_split_leaves() -> None:
    s = load_data(_digits())
    n_test = round(0.2 * 1797)
    n_val = round(0.2 * (1797 - n_test))
    assert (len(s.y_test), len(s.y_val), len(s.y_train)) == (n_test, n_val, 1797 - n_test - n_val)
    assert len(s.x_train) == len(s.y_train) and len(s.x_val) == len(s.y_val) and len(s.x_test) == len(s.y_test)


def test_the_split_is_a_pure_function_of_split_seed() -> None:
    a, b, c = load_data(_digits(split_seed=1)), load_data(_digits(split_seed=1)), load_data(_digits(split_seed=2))
    assert np.array_equal(a.x_val, b.x_val) and np.array_equal(a.y_train, b.y_train)
    assert not np.array_equal(a.x_val, c.x_val)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_minmax_maps_the_training_split_onto_0_to_1(tmp_path: Path, seed: int) -> None:
    # One range for all columns, from the training rows only (not validation's or test's).
    s = load_data(_npz(tmp_path, "minmax", seed))
    assert s.x_train.min() == pytest.approx(0.0, abs=1e-6) and s.x_train.max() == pytest.approx(1.0, abs=1e-6)
    assert np.all(s.shift == s.shift[0]) and np.all(s.scale == s.scale[0])


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_standardize_centres_and_scales_each_column_on_the_training_split(tmp_path: Path, seed: int) -> None:
    s = load_data(_npz(tmp_path, "standardize", seed))
    np.testing.assert_allclose(s.x_train.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(s.x_train.std(axis=0), 1.0, atol=1e-5)


def test_the_digits_labels_stay_paired_with_their_images() -> None:
    from sklearn.datasets import load_digits

    raw = load_digits()
    s = load_data(_digits(normalize="none"))
    lookup = {row.tobytes(): int(label) for row, label in zip(raw.data.astype(np.float32), raw.target, strict=True)}
    for x, y in ((s.x_train, s.y_train), (s.x_val, s.y_val), (s.x_test, s.y_test)):
        assert all(lookup[row.tobytes()] == label for row, label in zip(x, y, strict=True))


def test_each_example_gets_a_channel_axis(tmp_path: Path) -> None:
    assert load_data(_digits()).input_shape == (8, 8, 1)
    assert load_data(_npz(tmp_path, "none", 0)).input_shape == (3, 1)  # a sequence of 3 values
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "img.npz", x_train=rng.random((30, 4, 4)), y_train=np.arange(30) % 2,
             x_test=rng.random((6, 4, 4)), y_test=np.arange(6) % 2)
    images = DataConfig(dataset="npz", path=tmp_path / "img.npz", val_fraction=0.2, test_fraction=0.2,
                        normalize="none", split_seed=0)
    s = load_data(images)
    assert s.input_shape == (4, 4, 1) and s.x_train.shape[1] == 16  # (N, H, W): one channel, rows flattened
