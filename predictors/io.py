"""Versioned JSON files for fitted predictors: atomic save, strict validated load.

Loading only parses JSON and builds arrays, so a file can never run code.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

from nas.errors import PredictorFileError
from nas.io import json_safe, write_bytes

from .base import Predictor
from .registry import PREDICTORS

FORMAT = "nas-predictor"
VERSION = 1


def save(
    predictor: Predictor,
    path: str | os.PathLike[str],
    *,
    feature_names: list[str],
    meta: dict | None = None,
) -> None:
    """Write a fitted predictor atomically; non-finite floats in meta become null."""
    names = [str(n) for n in feature_names]
    if predictor.n_features is None:
        raise ValueError("cannot save an unfitted predictor")
    if len(names) != predictor.n_features:
        raise ValueError(f"{len(names)} feature names given for a predictor fitted on {predictor.n_features} features")
    header = {
        "format": FORMAT,
        "version": VERSION,
        "kind": predictor.kind,
        "feature_names": names,
        "meta": json_safe(meta or {}),  # strict JSON: nan ("undefined" metrics) -> null
        "model": predictor.to_dict(),
    }
    header["sha256"] = _digest(header)
    text = json.dumps(header, allow_nan=False)
    write_bytes(path, text.encode("utf-8"))


def _digest(header: dict[str, Any]) -> str:
    """SHA-256 of the header without its own digest, in one canonical spelling (floats round-trip
    exactly through JSON, so a parsed file gives back the digest it was written with)."""
    body = {k: v for k, v in header.items() if k != "sha256"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class _NonFinite(ValueError):
    pass


def _refuse_constant(name: str) -> float:
    raise _NonFinite(name)


def _finite_float(text: str) -> float:
    """A JSON float, refused when it overflows (1e999 reads as inf, which save never writes)."""
    value = float(text)
    if not math.isfinite(value):
        raise _NonFinite(text)
    return value


def _read_header(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PredictorFileError(f"{path}: predictor file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PredictorFileError(f"{path}: cannot read predictor file: {exc}") from None
    try:
        # Never written (save refuses them), so NaN or Infinity is an edit: refused here, where the
        # digest's canonical JSON would otherwise fail on it with a traceback.
        header = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except _NonFinite as exc:
        raise PredictorFileError(f"{path}: holds {exc}, which no predictor file has (edited?); refit it") from None
    except (json.JSONDecodeError, RecursionError) as exc:  # RecursionError: nesting deeper than the parser goes
        raise PredictorFileError(f"{path}: not valid JSON ({type(exc).__name__}: {exc})".splitlines()[0]) from None
    except ValueError as exc:  # an integer of over 4,300 digits
        raise PredictorFileError(f"{path}: holds a number no predictor file has ({exc}; edited?); refit it") from None
    if not isinstance(header, dict):
        raise PredictorFileError(f"{path}: not a predictor file (top level is not an object)")
    if header.get("format") != FORMAT:
        raise PredictorFileError(f"{path}: not a predictor file (format {header.get('format')!r})")
    version = header.get("version")
    if version != VERSION or isinstance(version, bool):
        raise PredictorFileError(f"{path}: unsupported predictor file version {version!r} (supported: {VERSION})")
    kind = header.get("kind")
    if not isinstance(kind, str) or kind not in PREDICTORS:  # a list or object is unhashable: no dict lookup
        raise PredictorFileError(
            f"{path}: unknown predictor kind {kind!r}; known: {', '.join(sorted(PREDICTORS))}"
        )
    names = header.get("feature_names")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise PredictorFileError(f"{path}: 'feature_names' must be a list of strings")
    if not isinstance(header.get("meta", {}), dict):
        raise PredictorFileError(f"{path}: 'meta' must be an object")
    # Files written before the digest, or by hand, have none and load unchecked.
    if "sha256" in header and header["sha256"] != _digest(header):
        raise PredictorFileError(f"{path}: changed since it was written (sha256 differs); refit it, or delete "
                                 "its 'sha256' field to load it as edited")
    return header


def _mismatch(have: list[str], want: list[str]) -> str:
    missing = [n for n in want if n not in have]
    extra = [n for n in have if n not in want]
    if not missing and not extra:
        return "same names in another order"
    parts = []
    if missing:
        parts.append(f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    if extra:
        parts.append(f"unexpected {extra[:5]}{' ...' if len(extra) > 5 else ''}")
    return "; ".join(parts)


def load(path: str | os.PathLike[str], *, feature_names: list[str] | None = None) -> tuple[Predictor, dict[str, Any]]:
    """Read a predictor file; returns (predictor, header). Raises PredictorFileError."""
    path = Path(path)
    header = _read_header(path)
    names = header["feature_names"]
    if feature_names is not None and list(feature_names) != names:
        raise PredictorFileError(f"{path}: fitted on other features: {_mismatch(names, list(feature_names))}")
    model = header.get("model")
    if not isinstance(model, dict):
        raise PredictorFileError(f"{path}: 'model' is missing or not an object")
    if model.get("kind") != header["kind"]:
        raise PredictorFileError(
            f"{path}: model kind {model.get('kind')!r} differs from header kind {header['kind']!r}"
        )
    try:
        predictor = PREDICTORS[header["kind"]].from_dict(model)
    except PredictorFileError as exc:
        raise PredictorFileError(f"{path}: {exc}") from None
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise PredictorFileError(f"{path}: malformed model: {exc!r}") from None
    if predictor.n_features != len(names):
        raise PredictorFileError(f"{path}: model has {predictor.n_features} features but {len(names)} feature names")
    return predictor, header
