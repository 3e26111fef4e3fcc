"""Shared fixtures: a tiny experiment that runs every stage in seconds on a 2-core CPU."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

# Tests must not fight over the 2 cores with XLA's thread pools more than necessary.
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

REPO = Path(__file__).resolve().parents[1]


def fake_predictors(monkeypatch: pytest.MonkeyPatch, folder: Path,
                    evaluate: Callable[[list[dict[str, Any]]], dict[str, Any]]) -> None:
    """Make the run's predictors `evaluate` (configs -> {metric: means, metric_std or metric_logstd: spreads})
    wherever nas.oracle.Oracle is built from `folder`: a predictor query without fitted files."""
    import nas.oracle
    import nas.search

    class Oracle:
        models = {"accuracy": None, "latency_ms": None}

        def __init__(self, ctx: Any, predictor_folder: Path) -> None:
            pass

        def evaluate(self, configs: list[dict[str, Any]]) -> dict[str, Any]:
            return evaluate(configs)

    monkeypatch.setattr(nas.search, "latest_predictors", lambda ctx: folder)
    monkeypatch.setattr(nas.oracle, "Oracle", Oracle)


def load_benchmark(name: str) -> ModuleType:
    """The script benchmarks/NAME.py as a module (the benchmarks are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

TINY = """
name = "{name}"
seed = 0

[data]
dataset = "digits"

[model]
family = "mlp"
max_depth = 2
max_width = 32

[model.space]
depth = [1, 2]
width = [8, 16, 32]
bits = [4, 8, 32]

[train]
steps = {steps}
batch_size = 64
warmup_steps = 5
checkpoint_every = {checkpoint_every}
sandwich_random = 1

[measure]
samples = 10
batch_size = 8
repeats = 3
warmup = 1
repeatability = 4
min_time_ms = 0.3

[predictors]
accuracy = "ridge"
latency = "ridge"

[search]
trials = {trials}
population_size = 10
validate_top = 4

[[objectives]]
metric = "accuracy"

[[objectives]]
metric = "latency_ms"

[[objectives]]
metric = "size_kb"

{budgets}

[export]
max_models = 3
"""


def write_tiny(folder: Path, name: str = "tiny", *, steps: int = 40, checkpoint_every: int = 20, trials: int = 40,
               budgets: str = '[[budgets]]\nmetric = "size_kb"\nmax = 4.0') -> Path:
    """Write the tiny experiment into `folder` and return its path."""
    path = folder / f"{name}.toml"
    path.write_text(TINY.format(name=name, steps=steps, checkpoint_every=checkpoint_every, trials=trials,
                                budgets=budgets))
    return path


def counted_gap(folder: Path) -> str:
    """Budgets on size_kb that the tiny space's smallest and largest subnets each meet alone but no subnet
    meets together (a range inside the widest gap between its sizes): a counted budget the search misses."""
    from nas.context import prepare
    from nas.measure import exact_metrics

    ctx = prepare(write_tiny(folder, "gap"))
    sizes = sorted({exact_metrics(ctx, c)["size_kb"] for c in ctx.space.enumerate(10**6)})
    lo, hi = max(zip(sizes, sizes[1:]), key=lambda pair: pair[1] - pair[0])
    third = (hi - lo) / 3
    return (f'[[budgets]]\nmetric = "size_kb"\nmin = {lo + third!r}\n\n'
            f'[[budgets]]\nmetric = "size_kb"\nmax = {hi - third!r}')


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory) -> tuple[Path, Path]:
    """(experiment, run directory) of the tiny experiment after `nas run`; tests copy it before changing it."""
    from nas.cli import main

    folder = tmp_path_factory.mktemp("e2e")
    exp = write_tiny(folder)
    run_dir = folder / "run"
    assert main(["run", str(exp), "--run-dir", str(run_dir), "--quiet"]) == 0
    return exp, run_dir

