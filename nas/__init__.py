"""nas: train a slimmable supernet once, search per-layer width/depth/bits under budgets, export the front."""

from nas.config import Budget, Experiment, Objective, load_experiment
from nas.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    NasError,
    NoFeasibleError,
    PredictorFileError,
    StageError,
)
from nas.query import predict_config, query

__all__ = [
    "Budget", "CheckpointError", "ConfigError", "DataError", "Experiment", "NasError", "NoFeasibleError",
    "Objective", "PredictorFileError", "StageError", "load_experiment", "load_exported", "predict_config",
    "prepare", "query", "query_predictors", "run",
]


def prepare(experiment, run_dir=None, runs_root="runs"):  # noqa: ANN001, ANN201 - thin lazy re-export
    """Validate an experiment and bind it to its run directory (see nas.context.prepare)."""
    from nas.context import prepare as _prepare

    return _prepare(experiment, run_dir=run_dir, runs_root=runs_root)


def run(experiment, run_dir=None, runs_root="runs", force=False, quiet=False):  # noqa: ANN001, ANN201
    """Run every stage of an experiment, skipping current ones (see nas.pipeline.run_all)."""
    from nas.pipeline import run_all

    return run_all(prepare(experiment, run_dir, runs_root), force=force, quiet=quiet)


def load_exported(folder):  # noqa: ANN001, ANN201
    """Callable + metrics of an exported subnet (see nas.export.load_exported)."""
    from nas.export import load_exported as _load

    return _load(folder)


def query_predictors(run_dir, budgets, **options):  # noqa: ANN001, ANN003, ANN201
    """Best predicted config of the whole space for a budget (see nas.budget_query.query_predictors)."""
    from nas.budget_query import query_predictors as _query

    return _query(run_dir, budgets, **options)
