"""MNIST-1D (Greydanus & Kobak, 2020): 10 classes of 40-sample 1-D signals, generated on this
machine by the `mnist1d` package from its ten templates (random scaling, translation, shear and
noise), so nothing is downloaded. Small MLPs reach only about 60-70 % on it, and sizes and
bit-widths separate clearly, so subnets' accuracies differ by far more than a large validation
split's sampling noise (on scikit-learn's 8x8 digits they do not). Generated once per machine and
cached as an .npz."""

from __future__ import annotations

import contextlib
import os
import random
import zipfile
import zlib
from pathlib import Path

import numpy as np

from nas.errors import DataError

SAMPLES = 30_000  # 3,000 per class; the package's own reference set has 5,000
SEED = 42  # the package's reference seed


def cache_path() -> Path:
    """Where the generated arrays are kept: $JAXNAS_CACHE, else $XDG_CACHE_HOME/jaxnas, else ~/.cache/jaxnas;
    named by the package version too (the cache folder is shared by every environment of the machine)."""
    # An empty variable means unset (the XDG rule): "" made the cache a relative ./jaxnas in every working folder.
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    root = os.environ.get("JAXNAS_CACHE") or Path(base) / "jaxnas"
    return Path(root) / f"mnist1d-{SAMPLES}-seed{SEED}{_version_tag()}.npz"


def _version_tag() -> str:
    try:
        from importlib.metadata import PackageNotFoundError, version

        return f"-v{version('mnist1d')}"
    except (ImportError, PackageNotFoundError):
        return ""


def _plausible(x: np.ndarray, y: np.ndarray) -> bool:
    """Whether cached arrays are the generator's kind: shapes, finite signals, labels 0..9 equally often."""
    return (x.shape == (SAMPLES, 40) and y.shape == (SAMPLES,) and np.issubdtype(y.dtype, np.integer)
            and np.issubdtype(x.dtype, np.floating) and bool(np.isfinite(x).all()) and y.min() >= 0 and y.max() <= 9
            and bool((np.bincount(y, minlength=10) == SAMPLES // 10).all()))


_generated: tuple[np.ndarray, np.ndarray] | None = None  # when the cache cannot be written: once per process


def generate() -> tuple[np.ndarray, np.ndarray]:
    """(x (SAMPLES, 40) float32, y (SAMPLES,) int32) from the package's generator, reference settings."""
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError:
        raise DataError("data.dataset 'mnist1d' needs the mnist1d package (pip install mnist1d)") from None
    args = get_dataset_args()
    args.num_samples, args.train_split, args.seed = SAMPLES, 1.0, SEED
    # The generator seeds Python's and NumPy's global generators; leave them as they were.
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        d = make_dataset(args)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    return np.asarray(d["x"], np.float32), np.asarray(d["y"], np.int32)


def load() -> tuple[np.ndarray, np.ndarray]:
    """The generated set, from the cache when it is there and readable, else generated and cached."""
    global _generated
    path = cache_path()
    try:
        with np.load(path, allow_pickle=False) as f:
            x, y = f["x"], f["y"]
        if _plausible(x, y):
            return x.astype(np.float32), y.astype(np.int32)
    # TypeError / IndexError: a plain .npy array there; RuntimeError / NotImplementedError: an encrypted
    # member or an unknown compression.
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error, TypeError, IndexError,
            RuntimeError, NotImplementedError):
        pass  # absent or damaged: generate again (about 7 s)
    if _generated is not None:
        return _generated
    x, y = generate()
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp.npz")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(tmp, x=x, y=y)
        os.replace(tmp, path)
    except OSError:
        _generated = (x, y)  # a read-only home (or a full disk) still gets the data, generated once
    finally:
        with contextlib.suppress(OSError):  # a cache path under a file: nothing was written there
            tmp.unlink(missing_ok=True)  # a write cut short (disk full, Ctrl-C) leaves no part file
    return x, y
