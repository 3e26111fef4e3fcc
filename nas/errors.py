"""Project errors: each names what is wrong so the CLI can print one line and exit 2."""

from __future__ import annotations


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
