"""Data sets: scikit-learn's bundled digits, MNIST-1D (generated here) or the user's .npz, split
deterministically into train / validation / test. Search and predictors only see validation;
reports use test."""

from __future__ import annotations

import zipfile
import zlib
from dataclasses import dataclass

import numpy as np

from nas.config import DataConfig
from nas.errors import DataError

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
MAX_CLASSES = 100_000  # the output layer has one unit per class: a larger label is a mistake, not a class


@dataclass(frozen=True)
class Splits:
    """Normalised float32 features (flattened) and int32 labels; `shift`/`scale` undo nothing,
    they are what raw inputs go through: x_norm = (x_raw - shift) / scale."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    shift: np.ndarray
    scale: np.ndarray
    input_shape: tuple[int, ...] = ()  # per-example shape before flattening: (H, W, C) images, (L, C) sequences

    @property
    def n_features(self) -> int:
        """Input features per example."""
        return int(self.x_train.shape[1])

    @property
    def n_classes(self) -> int:
        """Number of classes (labels are 0..n-1)."""
        return int(max(self.y_train.max(), self.y_val.max(), self.y_test.max())) + 1


def example_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Per-example shape with a channel axis: (H, W) -> (H, W, 1), (L,) -> (L, 1), 3-D kept."""
    shape = tuple(int(v) for v in shape)
    return shape if len(shape) >= 3 else (*shape, 1)


def _raw(cfg: DataConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None, tuple[int, ...]]:
    if cfg.dataset == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        return d.data.astype(np.float32), d.target.astype(np.int32), None, None, (8, 8, 1)
    if cfg.dataset == "mnist1d":
        from nas import mnist1d

        x, y = mnist1d.load()
        return x, y, None, None, (x.shape[1], 1)
    try:
        if not zipfile.is_zipfile(cfg.path):  # np.load takes any other bytes for a pickle, and says so
            with open(cfg.path, "rb") as raw:
                npy = raw.read(6) == b"\x93NUMPY"
            raise DataError(f"data.path: {cfg.path} is " + ("a single .npy array" if npy else "not an .npz file")
                            + f", not an .npz of {', '.join(NPZ_KEYS)}")
        with np.load(cfg.path, allow_pickle=False) as f:
            missing = [k for k in NPZ_KEYS if k not in f.files]
            if missing:
                raise DataError(f"data.path: {cfg.path} lacks array {missing[0]!r} (needs {', '.join(NPZ_KEYS)})")
            arrays = [f[k] for k in NPZ_KEYS]
    # RuntimeError: an encrypted member; NotImplementedError: a compression zipfile lacks (Deflate64).
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, RuntimeError, NotImplementedError) as e:
        raise DataError(f"data.path: cannot read {cfg.path} as .npz ({e})".splitlines()[0]) from None
    except MemoryError:
        raise DataError(f"data.path: {cfg.path} holds arrays too large to load into this machine's memory") from None
    x_tr, y_tr, x_te, y_te = arrays
    for name, x, y in (("train", x_tr, y_tr), ("test", x_te, y_te)):
        if x.ndim < 2 or y.ndim != 1 or len(x) != len(y) or len(x) == 0:
            onehot = y.ndim == 2 and len(y) == len(x) and y.shape[1] > 1
            raise DataError(f"data.path: x_{name} {x.shape} and y_{name} {y.shape} do not pair up as (n, ...) and (n,)"
                            + ("; one-hot labels? store y.argmax(axis=1)" if onehot else ""))
        if not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
            whole = (np.issubdtype(y.dtype, np.floating) and np.isfinite(y).all() and y.min() >= 0
                     and np.array_equal(y, np.round(y)))
            raise DataError(f"data.path: y_{name} must hold non-negative integer class labels"
                            + (f" (its dtype is {y.dtype}: store y.astype(np.int64))" if whole else ""))
        if y.max() >= MAX_CLASSES:
            raise DataError(f"data.path: y_{name} has label {int(y.max())}; labels must be class indices "
                            f"0..n-1 with n < {MAX_CLASSES:,}")
        if not (x.dtype == np.bool_ or np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
            raise DataError(f"data.path: x_{name} has dtype {x.dtype}; expected real numbers")
        with np.errstate(over="ignore"):  # beyond float32 becomes inf, reported below
            finite = np.isfinite(x.astype(np.float32)).all()
        if not finite:
            raise DataError(f"data.path: x_{name} has NaN or infinite values (or values beyond float32)")
    if len(np.unique(y_tr)) < 2:  # every subnet would score 100 % on validation: nothing to rank
        raise DataError(f"data.path: y_train holds one class only ({int(y_tr[0])}); a classifier needs two or more")
    # The class count is the largest label + 1: labels 1..3 or {0, 10, 20} gave outputs for classes never
    # trained on, and a class only in y_test was scored but never learnt (review).
    top = int(max(y_tr.max(), y_te.max()))
    empty = np.setdiff1d(np.arange(top + 1), y_tr)
    if len(empty):
        c = int(empty[0])
        where = "is in y_test but not in y_train" if c in y_te else "has no example in y_train"
        hint = "; 1-based? subtract 1" if c == 0 and len(empty) == 1 and 0 not in y_te else ""
        raise DataError(f"data.path: class {c} {where} ({len(empty)} label(s) of 0..{top} "
                        f"lack training examples); labels must be class indices 0..n-1, each trained on{hint}")
    if x_tr.shape[1:] != x_te.shape[1:]:
        raise DataError(f"data.path: x_train {x_tr.shape[1:]} and x_test {x_te.shape[1:]} differ in shape")
    if x_tr.ndim == 4 and x_tr.shape[1] in (1, 3, 4) and min(x_tr.shape[2:]) > 4:
        # Read channels-last, PyTorch's layout is an image 1-4 pixels high with dozens of channels: it trained
        # without error and searched nonsense (review); no real channels-last image is shaped so.
        raise DataError(f"data.path: x_train {x_tr.shape} looks like (N, C, H, W); images are channels-last, "
                        f"(N, H, W, C): store x.transpose(0, 2, 3, 1)")
    if int(np.prod(x_tr.shape[1:])) == 0:
        raise DataError(f"data.path: x_train {x_tr.shape} has no features")
    # Kept at their own precision until normalised (float64 ones: an offset of 1e8 cast to float32 first
    # left one distinct value); small integers and bools become float32, exactly.
    flat = lambda x: x.reshape(len(x), -1).astype(np.promote_types(x.dtype, np.float32))  # noqa: E731
    return flat(x_tr), y_tr.astype(np.int32), flat(x_te), y_te.astype(np.int32), example_shape(x_tr.shape[1:])


def load_data(cfg: DataConfig) -> Splits:
    """Load and split the data set of `cfg` (same split for the same `split_seed`)."""
    x, y, x_test, y_test, input_shape = _raw(cfg)
    rng = np.random.default_rng(cfg.split_seed)
    order = rng.permutation(len(x))
    if x_test is None:
        n_test = int(round(cfg.test_fraction * len(x)))
        if n_test == 0:  # an empty test split failed later, in a reduction over no labels, with a traceback
            raise DataError(f"data.test_fraction: {cfg.test_fraction:g} of the {len(x)} {cfg.dataset} examples is "
                            f"{cfg.test_fraction * len(x):.2g}, which rounds to an empty test split; raise it "
                            "or use more examples")
        test, order = order[:n_test], order[n_test:]
        x_test, y_test = x[test], y[test]
    n_val = int(round(cfg.val_fraction * len(order)))
    val, train = order[:n_val], order[n_val:]
    if len(val) == 0 or len(train) == 0:
        raise DataError(f"data.val_fraction: {cfg.val_fraction:g} of the {len(order)} examples left for training "
                        f"and validation (of {len(x)} in all) leaves an empty "
                        + ("validation split; raise it" if len(val) == 0 else "training split; lower it")
                        + " or use more examples")
    x_train = x[train]
    # Overflow (features near float32's limit) is refused at the end, not warned about on the way.
    with np.errstate(over="ignore", invalid="ignore"):
        # Statistics accumulated in float64 (a float32 std of values near 1e20 is inf), without a float64 copy.
        if cfg.normalize == "standardize":
            shift, scale = x_train.mean(axis=0, dtype=np.float64), x_train.std(axis=0, dtype=np.float64)
        elif cfg.normalize == "minmax":
            lo, hi = float(x_train.min()), float(x_train.max())
            shift, scale = np.full(x.shape[1], lo), np.full(x.shape[1], hi - lo)
        else:
            shift, scale = np.zeros(x.shape[1]), np.ones(x.shape[1])
        # A constant column's float64 mean is not exactly its value: its "std" of ~1e-17 would blow rounding up.
        # minmax keeps its one range for every column: a pixel never set in training (digits at split_seed 10)
        # went to validation, test and the export in raw units, 16x the others (review).
        varies = np.ptp(x_train, axis=0) > 0
        scale = np.where((varies if cfg.normalize == "standardize" else True) & (scale > 0), scale, 1.0)
        shift32, scale32 = shift.astype(np.float32), scale.astype(np.float32)
        check_float32_inputs(cfg, x_train, shift32, scale32, varies)
        # The float32 shift and scale, as the exported models apply them.
        norm = lambda a: ((a - shift32) / scale32).astype(np.float32)  # noqa: E731
        x_train, x_val, x_test = norm(x_train), norm(x[val]), norm(x_test)
    # Float32 features near float32's limit overflow in the shift or scale itself (a range of 6e38).
    if not all(np.isfinite(a).all() for a in (scale32, x_train, x_val, x_test)):
        raise DataError(f"data: {cfg.dataset} features overflow float32 once normalised (values near 1e38?); "
                        "rescale them")
    return Splits(x_train, y[train], x_val, y[val], x_test, y_test, shift32, scale32, input_shape)


def check_float32_inputs(cfg: DataConfig, x: np.ndarray, shift32: np.ndarray, scale32: np.ndarray,
                         varies: np.ndarray) -> None:
    """DataError when features given as float32 (what models take and exports ship) lose more than 1e-3
    of a column's spread to rounding (an offset of 1e8 on a spread of 1), or overflow once normalised."""
    if x.dtype == np.float32 or (np.issubdtype(x.dtype, np.integer) and np.abs(x).max(initial=0) < 2**24):
        return  # float32 already, or integers float32 holds exactly: nothing is rounded
    spread = np.where(varies, x.std(axis=0, dtype=np.float64) / scale32, np.inf)  # in normalised units
    worst = 0.0
    with np.errstate(over="ignore", invalid="ignore"):
        for start in range(0, len(x), 4096):  # row chunks: no full-size temporaries
            rows = x[start:start + 4096]
            as_given = (rows - shift32) / scale32
            as_shipped = (rows.astype(np.float32) - shift32) / scale32
            if not np.isfinite(as_shipped).all():
                raise DataError(f"data: {cfg.dataset} features overflow as float32 (values near 1e38?); rescale them")
            worst = max(worst, float(np.max(np.abs(as_shipped - as_given) / spread)))
    if worst > 1e-3:
        raise DataError(f"data: {cfg.dataset} features lose their variation as float32 inputs (off by up to "
                        f"{worst:.3g} of a column's spread: large offsets against a small spread?); subtract the "
                        "offset first, since models take and export float32 features")


def data_shape(cfg: DataConfig) -> tuple[int, int, tuple[int, ...]]:
    """(n_features, n_classes, per-example input shape) without keeping the data around."""
    s = load_data(cfg)
    return s.n_features, s.n_classes, s.input_shape
