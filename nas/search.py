"""Optuna multi-objective search over the predictors under hard budgets, in a resumable study;
then the predicted feasible front is measured for real and the measured front kept."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict
from typing import Any

import numpy as np
import optuna

from nas.config import Experiment
from nas.context import Context
from nas.errors import NoFeasibleError, StageError
from nas.io import append_jsonl, read_jsonl, write_json
from nas.measure import load_table, measure_configs
from nas.oracle import Oracle
from nas.pareto import feasible, pareto_front, spread
from nas.progress import progress, say
from search_spaces import config_key

optuna.logging.set_verbosity(optuna.logging.WARNING)

SAMPLERS = {
    "nsga2": lambda cfg: optuna.samplers.NSGAIISampler(population_size=cfg.population_size, seed=cfg.seed),
    "tpe": lambda cfg: optuna.samplers.TPESampler(seed=cfg.seed, multivariate=True),
    "random": lambda cfg: optuna.samplers.RandomSampler(seed=cfg.seed),
}


def storage_url(ctx: Context) -> Any:
    """The study's storage in the run directory: a journal file (default) or SQLite."""
    ctx.path("search").mkdir(parents=True, exist_ok=True)
    if ctx.exp.search.storage == "sqlite":
        return f"sqlite:///{ctx.path('search', 'study.db').absolute()}"
    path = str(ctx.path("search", "study.journal"))
    # A worker killed while holding the lock leaves it behind; 10 s of silence frees it.
    lock = optuna.storages.journal.JournalFileSymlinkLock(path, grace_period=10)
    backend = optuna.storages.journal.JournalFileBackend(path, lock_obj=lock)
    return optuna.storages.JournalStorage(backend)


def study_name(ctx: Context) -> str:
    """One study per (predictors, sampler, objectives, budgets): changing those starts a new study,
    changing only the number of trials continues the same one."""
    exp = ctx.exp
    identity = [ctx.stamp_id("fit"), {**asdict(exp.search), "trials": None, "validate_top": None},
                [asdict(o) for o in exp.objectives], [asdict(b) for b in exp.budgets]]
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]
    return f"{exp.name}-{digest}"


def open_study(ctx: Context) -> optuna.Study:
    """Create or reopen the study; trials a killed process left running are marked failed."""
    exp = ctx.exp
    try:
        study = optuna.create_study(
            study_name=study_name(ctx), storage=storage_url(ctx), load_if_exists=True,
            directions=[o.direction for o in exp.objectives], sampler=SAMPLERS[exp.search.sampler](exp.search),
        )
    except Exception as e:  # a corrupt journal/db surfaces as many exception types
        raise StageError(f"search storage in {ctx.path('search')} is unreadable: {e}".splitlines()[0]) from None
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study.tell(t.number, state=optuna.trial.TrialState.FAIL)
    return study


def objective_values(exp: Experiment, values: dict[str, np.ndarray], i: int) -> list[float]:
    """The i-th config's objective vector in the experiment's order."""
    return [float(values[o.metric][i]) for o in exp.objectives]


def run_trials(ctx: Context, study: optuna.Study, oracle: Oracle, *, quiet: bool = False) -> int:
    """Finish the study's remaining trials, a generation at a time, predictors evaluated in batch."""
    exp = ctx.exp
    done_states = (optuna.trial.TrialState.COMPLETE,)
    finished = len(study.get_trials(deepcopy=False, states=done_states))
    if not study.trials:
        for c in (ctx.space.largest(), ctx.space.smallest()):
            study.enqueue_trial(c)
    with progress(f"search {exp.search.sampler}", total=exp.search.trials, completed=finished, quiet=quiet) as bar:
        while finished < exp.search.trials:
            batch = min(exp.search.population_size, exp.search.trials - finished)
            trials = [study.ask() for _ in range(batch)]
            configs = [ctx.space.suggest(t) for t in trials]
            values = oracle.evaluate(configs)
            for i, (trial, config) in enumerate(zip(trials, configs)):
                trial.set_user_attr("config", config)
                for b in exp.budgets:
                    trial.set_constraint(str(b), float(b.violation(values[b.metric][i])))
                study.tell(trial, objective_values(exp, values, i))
            finished += batch
            bar.update(finished)
    return finished


def predicted_front(ctx: Context, study: optuna.Study) -> list[dict[str, Any]]:
    """Distinct configs of the study's feasible Pareto front with their predicted metrics."""
    best = study.best_trials
    if not best:
        raise NoFeasibleError(no_feasible_message(ctx, study))
    seen: dict[str, dict[str, Any]] = {}
    for t in best:
        config = t.user_attrs["config"]
        seen.setdefault(config_key(config), {"config": config})
    oracle_values = Oracle(ctx).evaluate([e["config"] for e in seen.values()])
    front = []
    for i, (key, e) in enumerate(seen.items()):
        pred = {m: float(v[i]) for m, v in oracle_values.items()}
        front.append({"key": key, "config": e["config"], "predicted": pred})
    return front


def no_feasible_message(ctx: Context, study: optuna.Study) -> str:
    """Plain words on which budget failed and how close the search came."""
    trials = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    parts = []
    for b in ctx.exp.budgets:
        best = min((t.constraints.get(str(b), np.inf) for t in trials), default=np.inf)
        parts.append(f"{b} (closest predicted: off by {best:.4g})")
    return f"no subnet meets the budgets: {'; '.join(parts)}"


def validate_front(ctx: Context, front: list[dict[str, Any]], *, quiet: bool = False) -> list[dict[str, Any]]:
    """Measure the predicted front for real (reusing table rows already measured); resumable."""
    from nas.data import load_data
    from nas.train import load_supernet

    table = {r["key"]: r for r in load_table(ctx)}
    log = ctx.path("search", "validated.jsonl")
    done = {r["key"]: r for r in read_jsonl(log)}
    picks = spread(range(len(front)), [e["predicted"] for e in front], ctx.exp.objectives[0].metric,
                   ctx.exp.search.validate_top)
    todo = [front[i]["config"] for i in picks if front[i]["key"] not in table and front[i]["key"] not in done]
    if todo:
        splits = load_data(ctx.exp.data)
        measure_configs(ctx, load_supernet(ctx), todo, splits.x_val, splits.y_val,
                        on_row=lambda r: append_jsonl(log, r), quiet=quiet, label="validate front")
    done = {r["key"]: r for r in read_jsonl(log)}
    return [done.get(front[i]["key"]) or table[front[i]["key"]] for i in picks]


def search(ctx: Context, *, quiet: bool = False) -> dict[str, Any]:
    """The search stage: trials on predictors, feasible predicted front, measured front."""
    t0 = time.time()
    oracle = Oracle(ctx)
    ctx.begin("search", key=study_name(ctx))
    study = open_study(ctx)
    n = run_trials(ctx, study, oracle, quiet=quiet)
    trial_s = time.time() - t0
    front = predicted_front(ctx, study)
    write_json(ctx.path("search", "predicted_front.json"), front)
    say(f"  {n} trials in {trial_s:.1f} s; predicted feasible front: {len(front)} subnets", quiet=quiet)
    validated = validate_front(ctx, front, quiet=quiet)
    predicted = {e["key"]: e["predicted"] for e in front}
    candidates = {r["key"]: r for r in load_table(ctx)}
    candidates.update({r["key"]: r for r in validated})
    rows = [r for r in candidates.values() if feasible(r, ctx.exp.budgets)]
    if not rows:
        budgets = "; ".join(str(b) for b in ctx.exp.budgets)
        raise NoFeasibleError(f"no measured subnet meets the budgets ({budgets}); predictors said "
                              f"{len(front)} would: refit with more samples or relax the budgets")
    measured_front = [
        {**rows[i], "predicted": predicted.get(rows[i]["key"]),
         "source": "search" if rows[i]["key"] in predicted else "table"}
        for i in pareto_front(rows, ctx.exp.objectives)
    ]
    measured_front.sort(key=lambda r: r[ctx.exp.objectives[0].metric])
    write_json(ctx.path("search", "front.json"), measured_front)
    summary = {"trials": n, "trial_wall_s": round(trial_s, 2), "trials_per_s": round(n / max(trial_s, 1e-9), 1),
               "predicted_front": len(front), "validated": len(validated), "measured_front": len(measured_front),
               "wall_s": round(time.time() - t0, 2), "study": study_name(ctx)}
    say(f"  measured front: {len(measured_front)} subnets ({len(validated)} front members measured)", quiet=quiet)
    ctx.mark_done("search", summary)
    return summary
