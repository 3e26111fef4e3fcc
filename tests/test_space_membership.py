"""Search space membership: what `validate` refuses, what `smallest`/`sample` give, the enumeration
limit, and spaces whose gates are themselves gated (a CNN stage's expand gating its kernel)."""

from __future__ import annotations

import numpy as np
import optuna
import pytest

from nas.errors import ConfigError
from search_spaces import Dimension, SearchSpace, config_key


def _layered() -> SearchSpace:
    """depth 1..2; layer 1's width only counts at depth 2."""
    return SearchSpace((Dimension("depth", (1, 2)), Dimension("w.0", (8, 16)),
                        Dimension("w.1", (8, 16), gate="depth", gate_below=1)))


def _nested() -> SearchSpace:
    """A gate that is gated itself: expand.1 counts at depth 2, kernel.1 only when expand.1 is 2."""
    return SearchSpace((Dimension("depth", (1, 2)), Dimension("expand.1", (1, 2), gate="depth", gate_below=1),
                        Dimension("kernel.1", (3, 5), gate="expand.1", gate_below=1)))


def test_choices_out_of_order_are_refused() -> None:
    # `largest` is the last choice and inactive layers are pinned to it: [8, 4] would make 4 the "largest".
    with pytest.raises(ConfigError, match="ascending"):
        SearchSpace((Dimension("w", (8, 4)),))


def test_a_dimension_gated_by_itself_is_refused() -> None:
    # Its activity would depend on its own value: size() recursed for ever on it.
    with pytest.raises(ConfigError, match="earlier"):
        SearchSpace((Dimension("depth", (1, 2), gate="depth"),))


def test_an_active_dimension_left_out_is_refused_not_filled_in() -> None:
    space = _layered()
    assert space.validate({"depth": 1, "w.0": 8}) == {"depth": 1, "w.0": 8, "w.1": 16}  # past the depth: fine
    with pytest.raises(ConfigError, match=r"config\.w\.1.*missing"):
        space.validate({"depth": 2, "w.0": 8})  # layer 1 exists at depth 2: its width must be given


def test_a_bool_is_not_taken_for_the_choice_1() -> None:
    with pytest.raises(ConfigError, match=r"config\.depth"):
        _layered().validate({"depth": True, "w.0": 8})


def test_smallest_is_canonical_and_at_every_first_choice() -> None:
    space = _layered()
    small = space.smallest()
    assert small == {"depth": 1, "w.0": 8, "w.1": 16}  # layer 1 is past the depth: its largest choice
    assert space.validate(small) == small


def test_samples_reach_every_choice_of_every_dimension() -> None:
    space = _layered()
    rng = np.random.default_rng(0)
    drawn = [space.sample(rng) for _ in range(200)]
    for d in space.dimensions:
        assert {c[d.name] for c in drawn} == set(d.choices), d.name


def test_suggest_offers_optuna_every_choice_of_every_dimension() -> None:
    space = _layered()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    space.suggest(trial)
    for d in space.dimensions:  # every dimension asked for, the inactive one too, with all its choices
        assert trial.distributions[d.name].choices == d.choices, d.name


def test_enumeration_up_to_the_limit_itself() -> None:
    space = _layered()
    assert space.size() == 6
    assert len(space.enumerate(limit=6)) == 6  # a space of exactly the limit is enumerated
    with pytest.raises(ConfigError, match="enumeration limit 5"):
        space.enumerate(limit=5)


def test_nested_gates_enumerate_each_subnet_once_in_canonical_form() -> None:
    space = _nested()
    configs = space.enumerate()
    # depth 1: expand.1 pinned at 2, which leaves kernel.1 free (2); depth 2: expand 1 (kernel pinned) or 2 (x2)
    assert space.size() == len(configs) == len({config_key(c) for c in configs}) == 5
    for c in configs:
        assert space.validate(c) == c
    settings = [base for base, _ in space.gate_settings()]
    assert {"depth": 1, "expand.1": 1, "kernel.1": 5} not in settings  # a gate past the depth is not a setting
