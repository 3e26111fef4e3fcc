"""The incremental NSGA samplers propose exactly what Optuna's own do, seed for seed."""

from __future__ import annotations

import warnings

import numpy as np
import optuna
import pytest

from nas.ga_samplers import _FITS, NSGAII, NSGAIII, nsga2, nsga3

# The incremental samplers extend Optuna 5.0's and 5.1's internals; another Optuna gets the stock
# samplers from the factories and there is nothing of the project's here to test.
pytestmark = pytest.mark.skipif(not _FITS, reason=f"optuna {optuna.__version__}: the stock GA samplers are used")

optuna.logging.set_verbosity(optuna.logging.WARNING)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # NSGA-III
CHOICES = {f"x{i}": list(range(5)) for i in range(6)}


def _objectives(params: dict[str, int]) -> tuple[list[float], float]:
    x = np.array([params[k] for k in sorted(params)], float)
    # Two conflicting objectives and a budget some configs break.
    return [float(np.sin(x).sum() + 0.1 * x[0] * x[1]), float(x.sum())], float(x[2] + x[3] - 6)


def _tell(study: optuna.Study, trial: optuna.Trial, params: dict[str, int], n: int) -> None:
    if n % 37 == 5:
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        return
    values, budget = _objectives(params)
    trial.set_constraint("budget", budget)
    study.tell(trial, values)


def _run(sampler: optuna.samplers.BaseSampler, trials: int, batch: int, foreign_every: int,
         foreign_key: str) -> list[dict[str, int]]:
    """Ask/tell in batches as the search's workers do, adding trials "from another worker"
    (already complete, generation recorded) between batches, and a failed trial now and then.
    batch 0: trials finish out of order, up to 3 running at once (later ones may finish first)."""
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    rng = np.random.default_rng(1)
    seen: list[dict[str, int]] = []
    running: list[tuple[optuna.Trial, dict[str, int], int]] = []
    while len(seen) < trials:
        for _ in range(batch or 1):
            t = study.ask()
            seen.append({k: t.suggest_categorical(k, v) for k, v in CHOICES.items()})
            running.append((t, seen[-1], len(seen)))
        while running and (batch or len(running) > 2):
            _tell(study, *running.pop(int(rng.integers(len(running))) if not batch else 0))
        if foreign_every and len(seen) % foreign_every == 0:
            p = {k: int(rng.integers(5)) for k in CHOICES}
            values, budget = _objectives(p)
            gen = max([t.system_attrs.get(foreign_key, 0) for t in study.trials] + [0])
            study.add_trial(optuna.trial.create_trial(
                params=p, distributions={k: optuna.distributions.CategoricalDistribution(v)
                                         for k, v in CHOICES.items()},
                values=values, system_attrs={foreign_key: gen, "constraints": [budget]}))
    return seen


@pytest.mark.parametrize("ours, stock", [(NSGAII, optuna.samplers.NSGAIISampler),
                                         (NSGAIII, optuna.samplers.NSGAIIISampler)])
@pytest.mark.parametrize("batch, foreign_every", [(1, 0), (10, 30), (7, 0), (0, 0), (0, 20)])
def test_same_proposals_as_optuna(ours, stock, batch, foreign_every) -> None:
    """Several generations, batches, failed trials and trials added from outside: same configs."""
    key = stock._get_generation_key()
    got = _run(ours(population_size=10, seed=3), 240, batch, foreign_every, key)
    want = _run(stock(population_size=10, seed=3), 240, batch, foreign_every, key)
    assert got == want
    assert len({tuple(p.values()) for p in got}) > 50  # the samplers did search, not repeat


def test_keeps_optunas_storage_keys() -> None:
    """A study begun with Optuna's sampler resumes under ours in the same generation."""
    study = optuna.create_study(directions=["maximize", "minimize"],
                                sampler=optuna.samplers.NSGAIISampler(population_size=10, seed=0))
    study.optimize(lambda t: _objectives({k: t.suggest_categorical(k, v) for k, v in CHOICES.items()})[0],
                   n_trials=35)
    resumed = optuna.load_study(study_name=study.study_name, storage=study._storage,
                                sampler=NSGAII(population_size=10, seed=0))
    trial = resumed.ask()
    trial.suggest_categorical("x0", CHOICES["x0"])  # the sampler runs on the first suggestion
    assert NSGAII._get_generation_key() == "NSGAIISampler:generation"
    assert resumed._storage.get_trial(trial._trial_id).system_attrs["NSGAIISampler:generation"] == 3


def test_one_sampler_over_many_studies_matches_optuna() -> None:
    """A sampler object reused for study after study (whose storages may reuse a freed object's id)."""
    def proposals(sampler: optuna.samplers.BaseSampler) -> list[dict[str, int]]:
        seen = []
        for _ in range(8):
            study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
            study.optimize(lambda t: _objectives({k: t.suggest_categorical(k, v) for k, v in CHOICES.items()})[0],
                           n_trials=25)
            seen += [t.params for t in study.trials]
            del study
        return seen

    assert proposals(NSGAII(population_size=10, seed=5)) == proposals(optuna.samplers.NSGAIISampler(
        population_size=10, seed=5))


def test_the_factories_give_the_incremental_samplers_on_this_optuna() -> None:
    # On an Optuna without the overridden internals they fall back to the stock samplers.
    assert type(nsga2(population_size=10, seed=0)) is NSGAII and type(nsga3(population_size=10, seed=0)) is NSGAIII


def test_samplers_pickle_and_search_on_after() -> None:
    # Optuna 5.0's samplers pickle and users save them; 5.1's hold a lock and do not: the project's do on both.
    import pickle

    sampler = nsga2(population_size=10, seed=0)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    study.optimize(lambda t: _objectives({k: t.suggest_categorical(k, v) for k, v in CHOICES.items()})[0],
                   n_trials=25)
    again = pickle.loads(pickle.dumps(sampler))
    assert type(again) is NSGAII and not again._tallies and not again._parents
    study.sampler = again
    study.optimize(lambda t: _objectives({k: t.suggest_categorical(k, v) for k, v in CHOICES.items()})[0],
                   n_trials=15)
    assert len(study.trials) == 40 and again._parents  # searched on, its caches rebuilt


def _objective(trial: optuna.Trial) -> list[float]:
    params = {k: trial.suggest_categorical(k, v) for k, v in CHOICES.items()}
    values, budget = _objectives(params)
    trial.set_constraint("budget", budget)
    return values


def test_threads_sharing_the_sampler_never_cut_a_generation_short(monkeypatch) -> None:
    import time

    from nas import ga_samplers

    real_add = ga_samplers._Tally.add

    def slow_add(self, generation: int) -> None:  # widens the window before `upto` moves past the trial
        real_add(self, generation)
        time.sleep(1e-3)

    monkeypatch.setattr(ga_samplers._Tally, "add", slow_add)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=NSGAII(population_size=10, seed=0))
    study.optimize(_objective, n_trials=200, n_jobs=4)
    key = NSGAII._get_generation_key()
    sizes = np.bincount([t.system_attrs[key] for t in study.trials])
    assert (sizes[:-1] >= 10).all(), sizes  # a double-counted trial closed generations at 8-9 trials


def test_a_reused_study_id_gets_its_own_parents(tmp_path) -> None:
    # SQLite hands a deleted study's id to the next one: cached parents of the old study must not
    # serve the new one (the proposals then left the stock sampler's at the second generation).
    def run(sampler: optuna.samplers.BaseSampler, url: str) -> list[dict]:
        storage = optuna.storages.get_storage(url)  # one object for both studies, as a long-lived process holds
        first = optuna.create_study(study_name="a", storage=storage, directions=["maximize", "minimize"],
                                    sampler=sampler)
        first.optimize(_objective, n_trials=40)
        optuna.delete_study(study_name="a", storage=storage)
        second = optuna.create_study(study_name="b", storage=storage, directions=["maximize", "minimize"],
                                     sampler=sampler)
        assert second._study_id == first._study_id
        second.optimize(_objective, n_trials=40)
        return [t.params for t in second.trials]

    ours = run(NSGAII(population_size=10, seed=3), f"sqlite:///{tmp_path / 'ours.db'}")
    assert ours == run(optuna.samplers.NSGAIISampler(population_size=10, seed=3), f"sqlite:///{tmp_path / 'st.db'}")


@pytest.mark.parametrize("ours, stock", [(NSGAII, optuna.samplers.NSGAIISampler),
                                         (NSGAIII, optuna.samplers.NSGAIIISampler)])
def test_a_resumed_study_of_thousands_of_generations(ours, stock) -> None:  # noqa: ANN001
    """A search resumed on 1,200 generations (its in-memory mirror of the study caches no parents):
    Optuna recurses once per generation to find the parents, past Python's limit of 1,000; the
    incremental sampler finds them bottom-up, within the limit, and proposes what Optuna does."""
    import sys

    def asks(study: optuna.Study, n: int) -> list[dict[str, int]]:
        seen = []
        for i in range(n):
            t = study.ask()
            seen.append({k: t.suggest_categorical(k, v) for k, v in CHOICES.items()})
            _tell(study, t, seen[-1], i + 1)
        return seen

    first = optuna.create_study(directions=["maximize", "minimize"], sampler=ours(population_size=2, seed=0))
    asks(first, 2_400)

    def resumed(sampler: optuna.samplers.BaseSampler) -> list[dict[str, int]]:
        study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
        study.add_trials(first.get_trials(deepcopy=False))
        return asks(study, 6)

    assert sys.getrecursionlimit() <= 1_000
    got = resumed(ours(population_size=2, seed=5))
    before = sys.getrecursionlimit()
    sys.setrecursionlimit(50_000)
    try:
        want = resumed(stock(population_size=2, seed=5))
    finally:
        sys.setrecursionlimit(before)
    assert got == want
