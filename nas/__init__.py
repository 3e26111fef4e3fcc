"""nas: train a slimmable supernet once, search per-layer width/depth/bits under budgets, export the front."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:  # the stages import jax and flax: loaded on first use, not on `import nas`
    import jax

    from nas.context import Context

__all__ = [
    "Budget", "CheckpointError", "ConfigError", "DataError", "Experiment", "NasError", "NoFeasibleError",
    "Objective", "PredictorFileError", "StageError", "load_experiment", "load_exported", "predict_config",
    "prepare", "query", "query_predictors", "run",
]


def prepare(experiment: str | Path, run_dir: str | Path | None = None, runs_root: str | Path = "runs") -> Context:
    """Validate an experiment and bind it to its run directory (see nas.context.prepare)."""
    from nas.context import prepare as _prepare

    return _prepare(experiment, run_dir=run_dir, runs_root=runs_root)


def run(experiment: str | Path, run_dir: str | Path | None = None, runs_root: str | Path = "runs",
        force: bool = False, quiet: bool = False) -> dict[str, Any]:
    """Run every stage of an experiment, skipping current ones (see nas.pipeline.run_all)."""
    from nas.pipeline import run_all

    return run_all(prepare(experiment, run_dir, runs_root), force=force, quiet=quiet)


def load_exported(folder: str | Path, fmt: str | None = None) -> tuple[Callable[[Any], jax.Array], dict[str, Any]]:
    """Callable + metrics of an exported subnet (see nas.shipped.load_exported)."""
    from nas.shipped import load_exported as _load

    return _load(folder, fmt)


def query_predictors(run_dir: str | Path, budgets: Sequence[str] | Mapping[str, float],
                     **options: Any) -> dict[str, Any]:
    """Best predicted config of the whole space for a budget (see nas.budget_query.query_predictors)."""
    from nas.budget_query import query_predictors as _query

    return _query(run_dir, budgets, **options)
