"""Project errors: each names what is wrong so the CLI can print one line and exit 2."""

from __future__ import annotations

import json
import re
from typing import Any


class NasError(Exception):
    """Base class for every error the CLI reports as one line with exit code 2."""

    exit_code = 2


class ConfigError(NasError):
    """An experiment file (or a config given to the space) has a bad key or value."""

    def __init__(self, key: str, message: str):
        self.key = key
        super().__init__(f"{key}: {message}" if key else message)


class DataError(NasError):
    """A data file is missing, unreadable or malformed."""


class CheckpointError(NasError):
    """A checkpoint is missing or corrupt."""


class PredictorFileError(NasError):
    """A predictor file is corrupt, of another version, or fitted on other features."""


class StageError(NasError):
    """A stage's inputs are missing (run the earlier stage first) or inconsistent."""


class NoFeasibleError(NasError):
    """No subnet meets the budgets: an answer, reported plainly with a non-zero exit."""

    exit_code = 1


def count_text(n: int) -> str:
    """A count with thousands separators, or its power of ten past 30 digits (Python refuses to print
    integers of more than 4,300 digits, and nobody reads them)."""
    return f"{n:,}" if n < 10**30 else f"about 10^{n.bit_length() * 0.30103:.0f}"


def dotted(prefix: str, name: str) -> str:
    """`prefix.name` as a setting is named in messages; a name TOML would have to quote (a space, a
    dot, a newline) is quoted, so the one-line message shows all of it."""
    part = name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else json.dumps(name)
    return f"{prefix}.{part}" if prefix else part


def table_error(key: str, value: Any) -> ConfigError:
    """The error for a setting that should be a table [key] and is missing or something else."""
    if value is None:
        return ConfigError(key, f"missing table [{key}]")
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return ConfigError(key, f"expected one table [{key}], got an array of tables [[{key}]]")
    return ConfigError(key, f"expected a table [{key}], got {value!r}")
