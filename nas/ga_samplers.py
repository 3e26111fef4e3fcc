"""Optuna's NSGA-II and NSGA-III samplers with generation bookkeeping that costs O(new trials) per
trial instead of O(all trials): the same proposals, seed for seed, at 10,000 trials and beyond.

Optuna finds a new trial's generation by scanning every finished trial, and a cached parent
population by filtering every trial, once per trial: 10,000 trials cost ~50 M attribute reads, the
larger part of a predictor-driven search's time on a CPU (RESULTS, "Search throughput"). Trials
that are finished never change again, so the scan is kept as a running (highest generation, its
count) over the finished prefix of the study's trial list, and each generation's parents are kept
once found. Keys in storage are Optuna's own: studies started with the stock samplers resume.
Optuna 5.1 keeps the running count itself; there only the parents are cached (and found bottom-up).
"""

from __future__ import annotations

import copy
import threading
import weakref
from typing import Any

import optuna
from optuna.samplers import NSGAIIISampler, NSGAIISampler
from optuna.trial import FrozenTrial, TrialState

_FINISHED = (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)
# Optuna 5.1 counts generations incrementally itself and orders a generation's population by when
# its trials were first seen finished, which that count tracks: its own count is kept there, so
# the proposals stay Optuna's (a count of the mixin's beside it changed them).
_UPSTREAM_COUNT = hasattr(NSGAIISampler, "_sync_generation_cache")
# Lock objects do not pickle (Optuna 5.1's samplers hold one and no longer pickle; the mixin's do).
_UNPICKLED = ("_tallies", "_parents", "_lock", "_handoff", "_thread_lock")


class _Tally:
    """Highest generation among a study's complete trials and how many hold it, over the first
    `upto` trials, all of them finished."""

    def __init__(self) -> None:
        self.upto = 0
        self.top = 0
        self.count = 0

    def add(self, generation: int) -> None:
        """Count one complete trial's generation (Optuna starts at generation 0, count 0)."""
        if generation > self.top:
            self.top, self.count = generation, 1
        elif generation == self.top:
            self.count += 1


class _IncrementalGenerations:
    """Mixin for Optuna's genetic samplers: incremental `get_trial_generation`, cached parents."""

    _stock: type[optuna.samplers.BaseSampler]  # the Optuna class whose storage keys are kept

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[call-arg]
        self._fresh_caches()

    def _fresh_caches(self) -> None:
        # Per storage object (not its id, which a later storage may reuse), then per study id.
        self._tallies: weakref.WeakKeyDictionary[Any, dict[int, _Tally]] = weakref.WeakKeyDictionary()
        self._parents: weakref.WeakKeyDictionary[Any, dict[tuple[int, int], list[FrozenTrial]]] = \
            weakref.WeakKeyDictionary()
        # study.optimize(n_jobs > 1) calls in from threads: a tally half-updated by one would count a
        # trial twice for another and cut later generations short (the stock samplers keep no state).
        self._lock = threading.Lock()
        # (storage, study id, generation, its parents just selected) for the next generation's selection.
        self._handoff: tuple[Any, int, int, list[FrozenTrial]] | None = None

    def __getstate__(self) -> dict[str, Any]:
        # Weak-keyed caches and locks do not pickle (Optuna 5.0's samplers do, and users save them): dropped.
        return {k: v for k, v in self.__dict__.items() if k not in _UNPICKLED}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._fresh_caches()
        if _UPSTREAM_COUNT:
            self._thread_lock = threading.Lock()

    @classmethod
    def _get_generation_key(cls) -> str:
        return cls._stock._get_generation_key()  # type: ignore[attr-defined]

    @classmethod
    def _get_parent_cache_key_prefix(cls) -> str:
        return cls._stock._get_parent_cache_key_prefix()  # type: ignore[attr-defined]

    def get_trial_generation(self, study: optuna.Study, trial: FrozenTrial) -> int:
        """The trial's generation: that of the newest generation, or the next once it is full."""
        if _UPSTREAM_COUNT:
            generation = super().get_trial_generation(study, trial)  # type: ignore[misc]
            seen = self._cached_unseen_trial_start  # type: ignore[attr-defined]
            if self._cached_study_id == study._study_id:  # type: ignore[attr-defined]
                with self._lock:
                    self._tally(study, seen).upto = seen  # only to notice a reused study id
            return generation
        key = self._get_generation_key()
        generation = trial.system_attrs.get(key)
        if generation is not None:
            return generation
        trials = study._get_trials(deepcopy=False, states=None, use_cache=True)
        with self._lock:
            tally = self._tally(study, len(trials))
            while tally.upto < len(trials) and trials[tally.upto].state in _FINISHED:
                t = trials[tally.upto]
                if t.state == TrialState.COMPLETE:
                    tally.add(t.system_attrs.get(key, -1))
                tally.upto += 1
            now = copy.copy(tally)  # the finished prefix's count, plus complete trials after a running one
        for t in trials[now.upto:]:
            if t.state == TrialState.COMPLETE:
                now.add(t.system_attrs.get(key, -1))
        assert self._population_size is not None, "Population size must be set."  # type: ignore[attr-defined]
        generation = now.top if now.count < self._population_size else now.top + 1  # type: ignore[attr-defined]
        study._storage.set_trial_system_attr(trial._trial_id, key, generation)
        return generation

    def _tally(self, study: optuna.Study, trials: int) -> _Tally:
        """The study's tally, counted afresh (its cached parents forgotten) if the study now holds
        fewer than `trials` it was counted on: a study id reused. Call under the lock."""
        tallies = self._tallies.setdefault(study._storage, {})
        tally = tallies.setdefault(study._study_id, _Tally())
        if trials < tally.upto:
            tally = tallies[study._study_id] = _Tally()
            for cached in [k for k in self._parents.get(study._storage, {}) if k[0] == study._study_id]:
                del self._parents[study._storage][cached]
        return tally

    def get_parent_population(self, study: optuna.Study, generation: int) -> list[FrozenTrial]:
        """The generation's parents; after the first call, in trial order as Optuna returns them."""
        with self._lock:
            if self._handoff is not None and self._handoff[:3] == (study._storage, study._study_id, generation):
                found, self._handoff = self._handoff[3], None
                return found
            cached = self._parents.get(study._storage, {}).get((study._study_id, generation))
        if cached is not None:
            return cached
        # Optuna selects a generation's parents from the previous generation's, looked up the same way:
        # one recursion per generation not cached, and a resumed search (its mirror of the study holds
        # no cache) of thousands of generations passed Python's recursion limit. Found bottom-up instead,
        # each handed to the next selection in the order Optuna's recursion would have returned it.
        try:
            for earlier in self._uncached_before(study, generation):
                found = self._select_parents(study, earlier)
                with self._lock:
                    self._handoff = (study._storage, study._study_id, earlier, found)
            return self._select_parents(study, generation)
        finally:
            with self._lock:
                self._handoff = None

    def _uncached_before(self, study: optuna.Study, generation: int) -> range:
        """The generations before `generation` (from 1) whose parents neither cache holds, oldest first,
        down to the newest one either holds."""
        prefix = self._get_parent_cache_key_prefix()
        stored = study._storage.get_study_system_attrs(study._study_id)
        with self._lock:
            mine = {g for sid, g in self._parents.get(study._storage, {}) if sid == study._study_id}
        newest = generation - 1
        while newest > 0 and newest not in mine and f"{prefix}{newest}" not in stored:
            newest -= 1
        return range(newest + 1, generation)

    def _select_parents(self, study: optuna.Study, generation: int) -> list[FrozenTrial]:
        found = super().get_parent_population(study, generation)  # type: ignore[misc]
        # Optuna returns the selection's order when it selects and trial order from its cache after.
        with self._lock:
            self._parents.setdefault(study._storage, {})[(study._study_id, generation)] = \
                sorted(found, key=lambda t: t._trial_id)
        return found


class NSGAII(_IncrementalGenerations, NSGAIISampler):
    """`optuna.samplers.NSGAIISampler` with incremental generation bookkeeping."""

    _stock = NSGAIISampler


class NSGAIII(_IncrementalGenerations, NSGAIIISampler):
    """`optuna.samplers.NSGAIIISampler` with incremental generation bookkeeping."""

    _stock = NSGAIIISampler


# The Optuna internals the mixin overrides (Optuna 5.0 and 5.1); another version without them gets the
# stock samplers, slower at 10,000 trials but the same proposals.
_OVERRIDES = ("get_trial_generation", "get_parent_population", "_get_generation_key", "_get_parent_cache_key_prefix")
_FITS = all(hasattr(NSGAIISampler, name) and hasattr(NSGAIIISampler, name) for name in _OVERRIDES)


def nsga2(**kwargs: Any) -> optuna.samplers.BaseSampler:
    """NSGA-II: the incremental sampler where this Optuna has the internals it overrides."""
    return (NSGAII if _FITS else NSGAIISampler)(**kwargs)


def nsga3(**kwargs: Any) -> optuna.samplers.BaseSampler:
    """NSGA-III: the incremental sampler where this Optuna has the internals it overrides."""
    return (NSGAIII if _FITS else NSGAIIISampler)(**kwargs)
