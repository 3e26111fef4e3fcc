"""The MNIST-1D data set: generated locally, the same every time, cached, split like digits."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from nas import mnist1d
from nas.config import load_experiment
from nas.data import load_data
from nas.errors import DataError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def generated() -> tuple[np.ndarray, np.ndarray]:
    return mnist1d.generate()


def test_generation_is_the_reference_set_and_leaves_global_generators_alone(generated) -> None:
    x, y = generated
    assert x.shape == (mnist1d.SAMPLES, 40) and x.dtype == np.float32 and np.isfinite(x).all()
    assert np.array_equal(np.bincount(y), np.full(10, mnist1d.SAMPLES // 10))
    np.random.seed(5)
    random.seed(5)
    expected = (np.random.rand(), random.random())
    np.random.seed(5)
    random.seed(5)
    x2, y2 = mnist1d.generate()
    assert (np.random.rand(), random.random()) == expected
    assert np.array_equal(x, x2) and np.array_equal(y, y2)


def test_an_empty_xdg_cache_home_means_the_default(monkeypatch) -> None:
    # "" was taken as a folder name: the cache became ./jaxnas in whatever folder the command ran from.
    monkeypatch.delenv("JAXNAS_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", "")
    assert mnist1d.cache_path().parent == Path.home() / ".cache" / "jaxnas"


def test_cached_after_the_first_load_and_regenerated_when_damaged(generated, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("JAXNAS_CACHE", str(tmp_path))
    calls = []
    monkeypatch.setattr(mnist1d, "generate", lambda: calls.append(1) or generated)
    x, y = mnist1d.load()
    assert calls == [1] and mnist1d.cache_path().parent == tmp_path and mnist1d.cache_path().is_file()
    x2, _ = mnist1d.load()
    assert calls == [1] and np.array_equal(x, x2)
    mnist1d.cache_path().write_bytes(b"PK\x03\x04 not a zip")
    x3, _ = mnist1d.load()
    assert calls == [1, 1] and np.array_equal(x, x3)


def test_a_cache_that_is_not_the_generators_set_is_regenerated(generated, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("JAXNAS_CACHE", str(tmp_path))
    calls = []
    monkeypatch.setattr(mnist1d, "generate", lambda: calls.append(1) or generated)
    x, y = generated
    assert "mnist1d-30000-seed42-v" in mnist1d.cache_path().name  # the package's version: a shared folder
    for bad_x, bad_y in ((np.where(np.arange(x.size).reshape(x.shape) == 5, np.nan, x), y), (x, y * 7)):
        np.savez(mnist1d.cache_path(), x=bad_x, y=bad_y)  # right shapes, not the generator's kind
        got_x, got_y = mnist1d.load()
        assert np.array_equal(got_x, x) and np.array_equal(got_y, y)
    assert len(calls) == 2


def test_a_cache_of_another_shape_of_file_is_regenerated(generated, tmp_path, monkeypatch) -> None:
    # A plain .npy array (np.load gives an array, not an archive) and text signals ("damaged: generate again").
    monkeypatch.setenv("JAXNAS_CACHE", str(tmp_path))
    calls = []
    monkeypatch.setattr(mnist1d, "generate", lambda: calls.append(1) or generated)
    x, y = generated
    with open(mnist1d.cache_path(), "wb") as f:
        np.save(f, x)
    assert np.array_equal(mnist1d.load()[0], x)
    np.savez(mnist1d.cache_path(), x=x.astype(str), y=y)
    assert np.array_equal(mnist1d.load()[0], x)
    assert len(calls) == 2


def test_a_cache_that_cannot_be_written_leaves_no_part_and_is_generated_once(generated, tmp_path,
                                                                           monkeypatch) -> None:
    monkeypatch.setenv("JAXNAS_CACHE", str(tmp_path))
    monkeypatch.setattr(mnist1d, "_generated", None)
    calls = []
    monkeypatch.setattr(mnist1d, "generate", lambda: calls.append(1) or generated)

    def disk_full(path, **arrays):
        Path(path).write_bytes(b"PK\x03\x04 cut short")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", disk_full)
    mnist1d.load()
    mnist1d.load()
    assert calls == [1] and list(tmp_path.iterdir()) == []


def test_a_cache_path_under_a_file_still_gives_the_data(generated, tmp_path, monkeypatch) -> None:
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv("JAXNAS_CACHE", str(tmp_path / "file"))
    monkeypatch.setattr(mnist1d, "_generated", None)
    monkeypatch.setattr(mnist1d, "generate", lambda: generated)
    x, _ = mnist1d.load()
    assert np.array_equal(x, generated[0])


def test_a_missing_package_is_a_data_error(monkeypatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_mnist1d(name, *args, **kwargs):
        if name.startswith("mnist1d"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_mnist1d)
    with pytest.raises(DataError, match="needs the mnist1d package"):
        mnist1d.generate()


def test_quickstart_splits(generated, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(mnist1d, "load", lambda: generated)
    exp = load_experiment(REPO / "experiments" / "quickstart.toml")
    assert exp.data.dataset == "mnist1d"
    s = load_data(exp.data)
    assert (len(s.y_train), len(s.y_val), len(s.y_test)) == (14_400, 9_600, 6_000)
    assert s.input_shape == (40, 1) and s.n_classes == 10
    # Standardised on the training split.
    assert np.allclose(s.x_train.mean(axis=0), 0, atol=1e-4) and np.allclose(s.x_train.std(axis=0), 1, atol=1e-3)
