"""Search space: JSON round trip, canonical configs, size, encoding, validation."""

from __future__ import annotations

import json

import numpy as np
import optuna
import pytest

from nas.errors import ConfigError
from search_spaces import Dimension, SearchSpace, config_key
from supernets import get_family


@pytest.fixture
def space() -> SearchSpace:
    model = {"family": "mlp", "max_depth": 3, "max_width": 64,
             "space": {"depth": [1, 2, 3], "width": [16, 32, 64], "bits": [4, 8, 32]}}
    return get_family("mlp").parse_space(model, 64, 10)


def test_json_round_trip_is_exact(space: SearchSpace) -> None:
    text = json.dumps(space.to_dict())
    again = SearchSpace.from_dict(json.loads(text))
    assert again == space
    assert json.dumps(again.to_dict()) == text


def test_size_counts_distinct_subnets(space: SearchSpace) -> None:
    configs = space.enumerate()
    assert len(configs) == space.size() == len({config_key(c) for c in configs})
    # depth 1: 3 widths x 3 bits x 3 head bits; each extra layer multiplies by 9
    assert space.size() == 27 + 27 * 9 + 27 * 81


def test_inactive_layers_have_one_spelling(space: SearchSpace) -> None:
    a = space.validate({**space.largest(), "depth": 1, "width.2": 16, "bits.1": 4})
    b = space.validate({**space.largest(), "depth": 1})
    assert a == b
    enc = space.encode(a)
    assert enc[space.names.index("width.1")] == 0.0 and enc[space.names.index("width.0")] == 1.0


def test_sampled_configs_are_valid_and_seeded(space: SearchSpace) -> None:
    a = [space.sample(np.random.default_rng(3)) for _ in range(5)]
    b = [space.sample(np.random.default_rng(3)) for _ in range(5)]
    assert a == b
    for c in a:
        assert space.validate(c) == c


@pytest.mark.parametrize(
    "change, key",
    [({"width.0": 48}, "config.width.0"), ({"bits.out": 2}, "config.bits.out"), ({"depth": 4}, "config.depth"),
     ({"nope": 1}, "config.nope"), ({"width.0": "16"}, "config.width.0"),
     ({"depth": 1, "width.1": 7}, "config.width.1")],  # a layer past the depth may be left out, not mistyped
)
def test_validate_names_the_bad_dimension(space: SearchSpace, change: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        space.validate({**space.largest(), **change})


def test_suggest_through_optuna_gives_canonical_configs(space: SearchSpace) -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(10):
        trial = study.ask()
        c = space.suggest(trial)
        assert space.validate(c) == c
        study.tell(trial, 0.0)


def test_bad_spaces_are_rejected() -> None:
    with pytest.raises(ConfigError, match="empty"):
        SearchSpace((Dimension("a", ()),))
    with pytest.raises(ConfigError, match="earlier"):
        SearchSpace((Dimension("a", (1, 2), gate="b"), Dimension("b", (1, 2))))


def test_a_space_built_from_lists_works_and_bad_forms_are_one_line() -> None:
    # Lists (as JSON and TOML give them) were kept, and the first size() was "unhashable type: 'list'".
    space = SearchSpace([Dimension("depth", [1, 2]), Dimension("w2", [8, 16], gate="depth", gate_below=1)])
    assert space.size() == 3 and len(space.enumerate()) == 3 and space.dimensions[1].choices == (8, 16)
    assert SearchSpace((Dimension("a", (-2, 0)),)).encode({"a": -2}).tolist() == [-2.0]  # was 1 / 0
    for bad in ({}, {"dimensions": 3}, {"dimensions": [], "meta": None}, []):
        with pytest.raises(ConfigError, match="space"):
            SearchSpace.from_dict(bad)


@pytest.mark.parametrize("change", [{"choices": "48"}, {"choices": [2.9, 8.7]}, {"choices": [True, 8]},
                                    {"name": 7}, {"gate_below": "1"}, {"gate_below": 1.9}])
def test_a_space_read_back_refuses_values_it_never_writes(space: SearchSpace, change: dict) -> None:
    # Coerced, "48" would read as choices [4, 8] and 1.9 as gate 1: a different space without a word.
    data = space.to_dict()
    gated = next(i for i, d in enumerate(data["dimensions"]) if "gate" in d)
    data["dimensions"][gated if "gate_below" in change else 0].update(change)
    with pytest.raises(ConfigError, match="space.dimensions"):
        SearchSpace.from_dict(data)


def test_size_of_a_cnn_with_many_stages_is_counted_stage_by_stage() -> None:
    """Size walked every setting of the depth gates, 2^stages of them: 40 stages never finished `nas
    validate` (review). Stages are independent, so the size is (the rest) x (one stage's count)^stages."""
    family = get_family("cnn")

    def cnn(stages: int) -> SearchSpace:
        model = {"family": "cnn", "stem": 4, "max_expand": 2, "max_kernel": 3,
                 "stages": [{"channels": 4, "max_depth": 2, "stride": 1}] * stages,
                 "space": {"depth": [1, 2], "expand": [1, 2], "kernel": [3], "bits": [4, 32]}}
        return family.parse_space(model, 64, 3, (8, 8, 1))

    one, two = cnn(1).size(), cnn(2).size()
    assert one == len(cnn(1).enumerate()) and two == len(cnn(2).enumerate())
    per_stage = two // one
    assert cnn(40).size() == (one // per_stage) * per_stage**40
