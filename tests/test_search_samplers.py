"""The search's samplers as [search] configures them: seeded (same seed, same proposals) and with the
configured population size for the genetic ones."""

from __future__ import annotations

from types import SimpleNamespace

import optuna
import pytest

from nas.search import SAMPLERS


def _proposals(sampler: optuna.samplers.BaseSampler, n: int = 30) -> list[dict[str, int]]:
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    out = []
    for _ in range(n):
        trial = study.ask()
        x, y = trial.suggest_categorical("x", [1, 2, 3, 4]), trial.suggest_categorical("y", [8, 16, 32])
        study.tell(trial, [x + y / 10, x * y])
        out.append({"x": x, "y": y})
    return out


@pytest.mark.parametrize("name", ["nsga2", "nsga3", "tpe", "random"])
def test_a_sampler_is_seeded_by_the_seed_it_is_given(name: str) -> None:
    cfg = SimpleNamespace(population_size=6)
    first, again, other = (_proposals(SAMPLERS[name](cfg, seed)) for seed in (5, 5, 6))
    assert first == again
    assert first != other


@pytest.mark.parametrize("name", ["nsga2", "nsga3"])
def test_a_genetic_sampler_takes_the_configured_population_size(name: str) -> None:
    assert SAMPLERS[name](SimpleNamespace(population_size=6), 0)._population_size == 6
