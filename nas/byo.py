"""Bring your own measurements: fit and evaluate a predictor on any CSV table (latency measured on
a phone, an FPGA, an edge board...). String columns are categorical (one-hot), numbers numeric."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nas.csvfile import MISSING, CsvRows, parse_number, read_csv
from nas.errors import NasError, PredictorFileError
from nas.io import check_out_path, json_safe

CV_FOLDS = 5
# A predictor needs 2 rows to fit; `--kind auto` needs every one of its min(CV_FOLDS, n) folds to
# leave 2 rows to train on, which takes 3 rows (below that every kind scores inf and one is picked blindly).
MIN_FIT_ROWS = 2
MIN_AUTO_ROWS = 3
ENCODING_TYPES = ("numeric", "categorical")


def _number(text: str) -> float | None:
    v = parse_number(text)
    return v if v is not None and math.isfinite(v) else None


def target_values(t: CsvRows, name: str) -> np.ndarray:
    """The target column as floats (NasError naming the column and line if one is not a number)."""
    out = []
    for i, text in enumerate(t.column(name)):
        v = _number(text)
        if v is None:
            raise NasError(f"{t.where(name, i)}: {text!r} is not a finite number")
        out.append(v)
    return np.array(out)


def make_encoding(t: CsvRows, features: Sequence[str]) -> list[dict]:
    """Per feature column: numeric, or categorical with its levels (any non-number makes it categorical)."""
    enc = []
    for name in features:
        values = t.column(name)
        bad = [i for i, v in enumerate(values) if _number(v) is None]
        if not bad:
            enc.append({"column": name, "type": "numeric"})
        elif len(bad) < len(values) and all(parse_number(values[i]) is not None or not values[i]
                                            or values[i].lower() in MISSING for i in bad):
            # nan, inf, a blank or NA among numbers is a missing measurement, not a category: turning the
            # whole column into one-hot levels would silently fit something else.
            i = bad[0]
            raise NasError(f"{t.where(name, i)}: {values[i]!r} is not a finite number "
                           "(the column's other values are numbers)")
        else:
            enc.append({"column": name, "type": "categorical", "levels": sorted(set(values))})
    return enc


def encode(t: CsvRows, encoding: list[dict]) -> tuple[list[str], np.ndarray]:
    """Feature names and matrix; an unseen category or a non-number in a numeric column is an error."""
    names, cols = [], []
    for e in encoding:
        values = t.column(e["column"])
        if e["type"] == "numeric":
            nums = [_number(v) for v in values]
            bad = [i for i, v in enumerate(nums) if v is None]
            if bad:
                raise NasError(f"{t.where(e['column'], bad[0])}: {values[bad[0]]!r} is not a number")
            names.append(e["column"])
            cols.append(np.array(nums))
        else:
            unseen = sorted(set(values) - set(e["levels"]))
            if unseen:
                raise NasError(f"{t.path}: column {e['column']!r} has value {unseen[0]!r} the predictor never saw")
            for level in e["levels"]:
                names.append(f"{e['column']}={level}")
                cols.append(np.array([v == level for v in values], np.float64))
    return names, np.stack(cols, axis=1)


def check_encoding(encoding: Any, path: Any) -> list[dict]:
    """A saved predictor's feature encoding, checked (PredictorFileError naming the file if damaged)."""
    bad = f"{path}: damaged meta.encoding"
    if not isinstance(encoding, list) or not encoding:
        raise PredictorFileError(f"{bad}: must be a non-empty list of columns")
    seen = set()
    for k, e in enumerate(encoding):
        if not isinstance(e, dict) or not isinstance(e.get("column"), str):
            raise PredictorFileError(f"{bad}: entry {k} has no 'column' name")
        if e["column"] in seen:
            raise PredictorFileError(f"{bad}: column {e['column']!r} is encoded twice")
        seen.add(e["column"])
        if e.get("type") not in ENCODING_TYPES:
            raise PredictorFileError(f"{bad}: column {e['column']!r} has type {e.get('type')!r} "
                                     f"(known: {', '.join(ENCODING_TYPES)})")
        levels = e.get("levels")
        if e["type"] == "categorical" and (not isinstance(levels, list) or not levels
                                           or not all(isinstance(v, str) for v in levels)
                                           or len(set(levels)) != len(levels)):
            raise PredictorFileError(f"{bad}: column {e['column']!r} needs 'levels', a list of distinct strings")
    return encoding


# Standardising squares the values: past this their variance is not a finite float.
MAX_MAGNITUDE = 1e150


def check_magnitudes(t: CsvRows, names: Sequence[str], X: np.ndarray, target: str, y: np.ndarray) -> None:
    """NasError naming the column and line of a value too large to fit on (instead of an overflow later)."""
    for name, col in [*zip(names, X.T), (target, y)]:
        big = np.flatnonzero(np.abs(col) > MAX_MAGNITUDE)
        if len(big):
            # Only a numeric column (named as in the CSV, "=" and all) or the target can be this large: one-hot
            # columns hold 0 and 1.
            raise NasError(f"{t.where(name, int(big[0]))}: {col[big[0]]:g} is too large to fit on "
                           f"(|value| > {MAX_MAGNITUDE:g}); rescale the column")


def cv_score(kind: str, X: np.ndarray, y: np.ndarray, log_target: bool, seed: int = 0) -> float:
    """Mean k-fold MAPE of a predictor kind (lower is better)."""
    import predictors
    from predictors.base import group_folds

    # Repeats of one config held out together: split apart, a memorising kind looked best (review).
    folds = group_folds(X, min(CV_FOLDS, len(y)), seed)
    if len(folds) < 2:  # one distinct feature row: nothing to hold out
        return float("inf")
    errs = []
    for k, hold in enumerate(folds):
        train = np.concatenate([f for j, f in enumerate(folds) if j != k])
        if len(train) < 2 or not len(hold):
            continue
        pred, _ = predictors.make(kind, log_target=log_target).fit(X[train], y[train]).predict(X[hold])
        errs.append(predictors.mape(y[hold], pred))
    return float(np.mean(errs)) if errs else float("inf")


def fit_table(table: str | Path, target: str, *, features: Sequence[str] | None = None,
              ignore: Sequence[str] = (), kind: str = "auto", out: str | Path) -> dict[str, Any]:
    """Fit a predictor of `target` on a CSV and save it (JSON); `auto` picks the kind by CV MAPE."""
    import predictors  # scipy-heavy: imported when used, so `nas query` stays fast

    check_out_path(out, source=table,
                   source_is="the table being fitted; the predictor would overwrite your measurements")
    t = read_csv(table)
    y = target_values(t, target)
    need = MIN_AUTO_ROWS if kind == "auto" else MIN_FIT_ROWS
    if len(y) < need:
        how = f"{CV_FOLDS}-fold cross-validation of --kind auto" if kind == "auto" else "a fit"
        raise NasError(f"{table}: {len(y)} data row(s); {how} needs at least {need}")
    for name in [*ignore, *(features or [])]:
        t.column(name)
    if target in (features or []):
        raise NasError(f"--features: {target!r} is the target; a predictor cannot take it as an input")
    twice = sorted({f for f in features or [] if list(features).count(f) > 1})
    if twice:
        raise NasError(f"--features: {twice[0]!r} is named more than once")
    features = list(features) if features else [c for c in t.header if c != target and c not in ignore]
    t.nameless(features, "list the features with --features")
    if not features:
        raise NasError(f"{table}: no feature columns left besides {target!r}")
    encoding = make_encoding(t, features)
    names, X = encode(t, encoding)
    check_magnitudes(t, names, X, target, y)
    log_target = bool(np.all(y > 0))  # costs are multiplicative; signed targets are fitted as they are
    scores = {}
    if kind == "auto":
        if len(np.unique(X, axis=0)) < 2:
            raise NasError(f"{table}: every row has the same features, so --kind auto has no other config to "
                           "cross-validate on; choose --kind")
        kinds = [k for k in predictors.PREDICTORS if k not in predictors.NEEDS_LAYER_TABLE]
        scores = {k: cv_score(k, X, y, log_target) for k in kinds}
        if not any(math.isfinite(v) for v in scores.values()):  # min() would pick an arbitrary kind
            raise NasError(f"{table}: --kind auto cannot rank the kinds, the CV MAPE is undefined "
                           f"(is some {target!r} zero?); choose --kind")
        kind = min(scores, key=scores.get)
    elif kind not in predictors.PREDICTORS:
        raise NasError(f"--kind {kind!r}: unknown (known: auto, {', '.join(predictors.PREDICTORS)})")
    elif kind in predictors.NEEDS_LAYER_TABLE and (not log_target or np.any(X[:, 0] <= 0)):
        raise NasError(f"--kind {kind}: the first feature column ({names[0]!r}) must be a positive summed "
                       "per-layer latency, and the target positive")
    model = predictors.make(kind, log_target=log_target).fit(X, y)
    meta = {"target": target, "encoding": encoding, "rows": len(y), "cv_mape": scores or None,
            "chosen_by": "cv" if scores else "user", "source": str(table)}
    predictors.save(model, out, feature_names=names, meta=meta)
    return {"out": str(out), "kind": kind, "rows": len(y), "features": len(names),
            "cv_mape": scores or None, "train": model.score(X, y)}


def eval_table(predictor_file: str | Path, table: str | Path, target: str | None = None) -> dict[str, Any]:
    """Quality of a saved predictor on a CSV: n, MAPE, Kendall tau, Spearman, share within +-10 %,
    against the column `target` (default: the one it was fitted to predict)."""
    import predictors

    try:
        _, header_meta = predictors.load(predictor_file)
        encoding = header_meta["meta"]["encoding"]
    except (KeyError, TypeError):
        raise PredictorFileError(f"{predictor_file}: not a table predictor (no feature encoding)") from None
    check_encoding(encoding, predictor_file)
    fitted_on = header_meta["meta"].get("target")
    if target is None:
        if not isinstance(fitted_on, str):
            raise NasError(f"{predictor_file} does not record the column it predicts; name it with --target")
        target = fitted_on
    if target in {e["column"] for e in encoding}:
        raise NasError(f"--target {target!r} is one of the predictor's input columns "
                       f"(it predicts {header_meta['meta'].get('target')!r})")
    if isinstance(fitted_on, str) and target != fitted_on:
        # Legitimate (the same quantity under another name, another device's column), but a slip otherwise.
        print(f"note: {predictor_file} was fitted on {fitted_on!r}; comparing it with column {target!r}",
              file=sys.stderr)
    t = read_csv(table)
    names, X = encode(t, encoding)
    model, _ = predictors.load(predictor_file, feature_names=names)
    y = target_values(t, target)
    check_magnitudes(t, names, X, target, y)  # as fit does: beyond it a model overflows (ridge answered 0 +- 0)
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            fitted = model.predict_fitted(X)
            mean, std = model.to_target(*fitted)
    except PredictorFileError as e:
        raise PredictorFileError(f"{predictor_file}: {e}") from None
    except ValueError as e:  # e.g. lut: its first column must be a positive summed latency
        raise NasError(f"{table}: {e}".splitlines()[0]) from None
    if not (np.isfinite(mean).all() and np.isfinite(std).all()):
        # An edited file (its digest removed) can load and still predict inf: exit 0 with null metrics before.
        raise PredictorFileError(f"{predictor_file}: predicts a value that is not a finite number for {target!r} "
                                 f"on {table}")
    s = model.score_fitted(fitted, y)  # the predictions checked above, not made again
    return {"target": target, **{k: s[k] for k in ("n", "mape", "kendall_tau", "spearman", "within_10pct",
                                                   "coverage_90")}}


def add_predictors_parser(subparsers: Any) -> None:
    """`nas predictors fit|eval` for the CLI."""
    p = subparsers.add_parser("predictors", help="fit / evaluate a predictor on your own CSV measurements")
    sub = p.add_subparsers(dest="predictors_command", required=True)
    f = sub.add_parser("fit", help="fit a predictor of a column of a CSV table")
    f.add_argument("table", help="CSV table, one row per measured architecture or setting")
    f.add_argument("--target", required=True, help="the column to predict")
    # extend: `--ignore a b` and `--ignore a --ignore b` both name two columns (a repeated flag kept
    # only its last list before, silently).
    f.add_argument("--features", nargs="+", action="extend", metavar="COL",
                   help="feature columns (default: all but the target and --ignore)")
    f.add_argument("--ignore", nargs="+", action="extend", default=[], metavar="COL",
                   help="columns left out of the default features")
    # Spelled out rather than read from the registry: building the parser must not import predictors.
    f.add_argument("--kind", default="auto",
                   help=f"auto (default: the best of ridge, gbm, mlp_ensemble and gp by {CV_FOLDS}-fold CV), one "
                        "of those, or lut (your summed per-layer latency as the first feature)")
    f.add_argument("--out", required=True, help="predictor file to write (JSON)")
    e = sub.add_parser("eval", help="evaluate a saved predictor on a CSV table")
    e.add_argument("predictor", help="a predictor file written by `nas predictors fit`")
    e.add_argument("table", help="CSV with the predictor's feature columns and the measured target")
    e.add_argument("--target", help="the measured column to compare with (default: the one it was fitted on)")


def run_predictors(args: argparse.Namespace) -> int:
    """Run `nas predictors fit|eval`, printing one JSON object."""
    if args.predictors_command == "fit":
        result = fit_table(args.table, args.target, features=args.features, ignore=args.ignore, kind=args.kind,
                           out=args.out)
    else:
        result = eval_table(args.predictor, args.table, args.target)
    # Undefined statistics (a rank correlation of a constant target, of one row) are nan: print null.
    print(json.dumps(json_safe(result), allow_nan=False))
    return 0
