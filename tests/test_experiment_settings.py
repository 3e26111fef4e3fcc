"""Experiment parsing: the defaults README's settings table documents, the top-level seed inherited by
the sections that may set their own, and keys no section reads refused in every section."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from nas.config import parse_experiment
from nas.errors import ConfigError

MINIMAL: dict[str, Any] = {"name": "t", "data": {"dataset": "digits"}, "model": {"family": "mlp"},
                           "train": {"steps": 100}, "objectives": [{"metric": "accuracy"}, {"metric": "latency_ms"}]}


def _parse(**changes: Any) -> Any:
    raw = copy.deepcopy(MINIMAL)
    raw.update(changes)
    return parse_experiment(raw, Path("/nowhere/experiment.toml"))


def test_documented_defaults() -> None:
    exp = _parse()
    assert (exp.seed, exp.data.val_fraction, exp.data.test_fraction, exp.data.normalize, exp.data.split_seed) == \
        (0, 0.2, 0.2, "minmax", 0)
    t = exp.train
    assert (t.batch_size, t.optimizer, t.learning_rate, t.weight_decay, t.warmup_steps, t.schedule, t.grad_clip) == \
        (128, "adamw", 3e-3, 1e-4, 0, "cosine", 1.0)
    assert (t.sandwich_random, t.distill, t.distill_temperature, t.distill_loss, t.distill_alpha, t.checkpoint_every,
            t.smallest_bits, t.uniform_bits, t.label_loss, t.distill_reduce) == \
        (2, True, 1.0, "kl", (-0.5, 0.5), 200, "min", 0.0, "largest", "sum")
    m = exp.measure
    assert (m.samples, m.device, m.batch_size, m.repeats, m.warmup, m.min_time_ms, m.repeatability) == \
        (100, "cpu", 1, 7, 2, 5.0, 16)
    assert (exp.predictors.accuracy, exp.predictors.latency, exp.predictors.holdout) == ("ridge", "ridge", 0.2)
    s = exp.search
    assert (s.sampler, s.trials, s.storage, s.population_size, s.validate_top, s.rounds, s.workers) == \
        ("nsga2", 1000, "journal", 50, 40, 1, 1)
    assert (exp.export.max_models, exp.export.plot, exp.export.formats) == (10, True, ("stablehlo", "npz"))
    assert [(o.metric, o.direction) for o in exp.objectives] == [("accuracy", "maximize"), ("latency_ms", "minimize")]
    assert exp.budgets == ()


def test_sections_take_the_top_level_seed_unless_they_set_their_own() -> None:
    exp = _parse(seed=7)
    assert (exp.measure.seed, exp.predictors.seed, exp.search.seed) == (7, 7, 7)
    exp = _parse(seed=7, measure={"seed": 1}, predictors={"seed": 2}, search={"seed": 3})
    assert (exp.seed, exp.measure.seed, exp.predictors.seed, exp.search.seed) == (7, 1, 2, 3)


@pytest.mark.parametrize("section", ["data", "train", "measure", "predictors", "search", "export"])
def test_an_unknown_key_is_refused_in_every_section(section: str) -> None:
    table = copy.deepcopy(MINIMAL.get(section, {}))
    table["colour"] = 1
    with pytest.raises(ConfigError, match=rf"{section}\.colour.*unknown key"):
        _parse(**{section: table})


def test_an_export_format_given_twice_is_exported_once() -> None:
    assert _parse(export={"formats": ["npz", "stablehlo", "npz"]}).export.formats == ("npz", "stablehlo")


def test_an_objective_or_latency_target_named_twice_is_refused() -> None:
    with pytest.raises(ConfigError, match="objectives.*listed twice"):
        _parse(objectives=[{"metric": "size_kb"}, {"metric": "size_kb", "direction": "minimize"}])
    target = {"name": "gpu", "device": "cpu", "batch_size": 8}
    with pytest.raises(ConfigError, match="measure.targets.*listed twice"):
        _parse(measure={"targets": [target, target]})


def test_the_largest_and_smallest_count_towards_the_rows_the_predictors_need() -> None:
    # holdout 0.45 needs 7 measured subnets (3 held out, 4 fitted on): 5 samples + the largest and smallest.
    assert _parse(measure={"samples": 5}, predictors={"holdout": 0.45}).measure.samples == 5
    with pytest.raises(ConfigError, match=r"measure\.samples.*samples >= 5"):
        _parse(measure={"samples": 4}, predictors={"holdout": 0.45})
