"""Optuna multi-objective search over the predictors under hard budgets, in resumable studies
shared by any number of workers; the predicted feasible front is measured for real, and with
`rounds > 1` the measurements refit the predictors for the next round (LINAS-like). The
hypervolume of the measured front is recorded per round."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from nas.config import Budget
from nas.context import Context
from nas.errors import NoFeasibleError, StageError, count_text, dotted
from nas.ga_samplers import nsga2, nsga3
from nas.hypervolume import hypervolume
from nas.interrupts import sigterm_as_interrupt
from nas.io import append_jsonl, read_json, write_bytes, write_json
from nas.journal import journal_storage
from nas.measure import exact_metrics, load_table, measure_configs, read_measured_rows
from nas.metrics import metric_info
from nas.oracle import Oracle
from nas.pareto import budgets_missed_message, feasible, pareto_front, spread
from nas.progress import progress, say
from nas.workers import COMPLETE, Evaluate, file_lock, owner_host, owner_name, run_worker, slot_holders, worker_slot
from search_spaces import Config, config_key

optuna.logging.set_verbosity(optuna.logging.WARNING)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # NSGA-III is marked experimental

# Subnets whose counted metrics may be checked to settle a budget the search missed (40-250 us each).
COUNT_LIMIT = 100_000
COUNT_SECONDS = 5.0  # and no longer: a CNN or transformer subnet takes 2-5x an MLP's

SAMPLERS = {
    "nsga2": lambda cfg, seed: nsga2(population_size=cfg.population_size, seed=seed),
    "nsga3": lambda cfg, seed: nsga3(population_size=cfg.population_size, seed=seed),
    "tpe": lambda cfg, seed: optuna.samplers.TPESampler(seed=seed, multivariate=True),
    "random": lambda cfg, seed: optuna.samplers.RandomSampler(seed=seed),
}


def storage_url(ctx: Context) -> Any:
    """The studies' storage in the run directory: a journal file (default) or SQLite."""
    ctx.path("search").mkdir(parents=True, exist_ok=True)
    if "://" in ctx.exp.search.storage:
        # A database the user runs; workers still coordinate slots through the run directory's lock file.
        return ctx.exp.search.storage
    if ctx.exp.search.storage == "sqlite":
        return f"sqlite:///{ctx.path('search', 'study.db').absolute()}"
    return journal_storage(journal_path(ctx))


def journal_path(ctx: Context) -> Path:
    """The run's journal file, absolute: its lock is a symlink to this path, and a relative target
    resolves from the link's own folder, so a lock left by a killed worker pointed nowhere and Optuna
    spun on it at full CPU instead of freeing it after the grace period."""
    return ctx.path("search", "study.journal").absolute()


def study_lock(ctx: Context) -> Path:
    """The lock file the study's workers coordinate under: slots, trial reservations, writes."""
    return ctx.path("search", "study.lock")


def search_key(ctx: Context) -> str:
    """Identity of the search's partial work: predictors, sampler, objectives, budgets, rounds.
    Changing only the number of workers keeps it, and with one round the numbers of trials and
    measured front members too. With more rounds either changes what round 0 measures, so its
    refit, so the predictors that scored the next rounds' trials: a new search."""
    exp = ctx.exp
    kept = {"workers": None, **({"trials": None, "validate_top": None} if exp.search.rounds == 1 else {})}
    identity = [ctx.stamp_id("fit"), {**asdict(exp.search), **kept},
                [asdict(o) for o in exp.objectives], [asdict(b) for b in exp.budgets]]
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:12]


def search_folder_current(ctx: Context) -> bool:
    """Whether RUN/search holds work that starts from the current fit (so its refitted predictors and
    measured rows describe the current supernet and measurement), not from an earlier one."""
    if not ctx.is_current("fit"):
        return False
    marker = ctx.path("search", "fit_id.txt")
    if marker.is_file():
        return marker.read_text(errors="replace").strip() == ctx.stamp_id("fit")
    # Searches before fit_id.txt: their key names the fit (and the search settings of the time).
    marker = ctx.path("search", "fingerprint.txt")
    return marker.is_file() and marker.read_text(errors="replace").strip() == search_key(ctx)


def study_name(ctx: Context, round_: int = 0) -> str:
    """The study of one round."""
    return f"{ctx.exp.name}-{search_key(ctx)}-r{round_}"


def predictor_folder(ctx: Context, round_: int) -> Path:
    """Round 0 searches on the fit stage's predictors; round r on those refitted after round r-1."""
    return ctx.path("fit") if round_ == 0 else ctx.path("search", f"round{round_}")


def latest_predictors(ctx: Context) -> Path:
    """The most informed predictors of a run: the last refit round's, else the fit stage's."""
    ctx.require("fit")
    # A retrain, a new measurement or a refit leaves the old search's refitted predictors behind.
    rounds = [r for r in range(1, ctx.exp.search.rounds) if (predictor_folder(ctx, r) / "quality.json").is_file()
              ] if search_folder_current(ctx) else []
    return predictor_folder(ctx, max(rounds) if rounds else 0)


def make_evaluator(ctx: Context, oracle: Oracle) -> Evaluate:
    """configs -> (objective vectors, named budget violations) from the predictors."""
    exp = ctx.exp

    def evaluate(configs: list[dict[str, int]]) -> tuple[list[list[float]], list[dict[str, float]]]:
        values = oracle.evaluate(configs)
        objectives = [[float(values[o.metric][i]) for o in exp.objectives] for i in range(len(configs))]
        constraints = [{str(b): float(b.violation(values[b.metric][i])) for b in exp.budgets}
                       for i in range(len(configs))]
        return objectives, constraints

    return evaluate


def run_round_trials(ctx: Context, round_: int, worker_index: int, warm: list[dict[str, int]], *,
                     quiet: bool = False) -> int:
    """This worker's share of the round's trials (the study ends with exactly `search.trials`)."""
    cfg = ctx.exp.search
    oracle = Oracle(ctx, predictor_folder(ctx, round_))
    study = open_study(ctx, round_)  # a corrupt storage fails here, in one clear line
    # A resumed or extended study gets a stream of its own: with the seed alone, a random sampler replayed
    # the configs of the trials already done (review).
    done = len(study.get_trials(deepcopy=False, states=COMPLETE))
    with progress(f"search r{round_} ({cfg.sampler})", total=cfg.trials, quiet=quiet) as bar:
        return run_worker(
            storage=storage_url(ctx), study_name=study_name(ctx, round_),
            directions=[o.direction for o in ctx.exp.objectives],
            sampler=SAMPLERS[cfg.sampler](cfg, sampler_seed(cfg.seed, worker_index, round_, done)),
            suggest=ctx.space.suggest, evaluate=make_evaluator(ctx, oracle), target=cfg.trials,
            batch=cfg.population_size, lock_path=study_lock(ctx), warm_start=warm,
            worker=worker_index, on_progress=bar.update,
        )


def sampler_seed(seed: int, worker: int, round_: int, done: int = 0) -> int:
    """The 32-bit seed of one worker's sampler in one round of a study holding `done` finished trials, hashed
    from all four (seed * 1000 + worker + 97 * round gave seeds 2**29 apart one stream, and round 11 the
    next seed's worker 67)."""
    return int(np.random.SeedSequence([seed, worker, round_, done]).generate_state(1)[0])


# The driver SQLAlchemy loads for each URL scheme, and the package that brings it.
_DRIVERS = {"postgresql": "psycopg[binary]", "postgresql+psycopg": "psycopg[binary]",
            "postgresql+psycopg2": "psycopg2-binary", "mysql": "mysqlclient", "mysql+pymysql": "pymysql"}


def open_study(ctx: Context, round_: int) -> optuna.Study:
    """The round's study, created if new (StageError in one line if the storage is unreadable)."""
    try:
        storage = storage_url(ctx)
        # Under the run directory's lock: separate processes starting together on an empty database
        # would otherwise race to create its tables (PostgreSQL: UniqueViolation on a type name).
        with file_lock(study_lock(ctx)):
            study = optuna.create_study(study_name=study_name(ctx, round_), storage=storage, load_if_exists=True,
                                        directions=[o.direction for o in ctx.exp.objectives])
            if study.metric_names is None:  # optuna-dashboard labels its axes with them (else "Objective 0")
                study.set_metric_names([o.metric for o in ctx.exp.objectives])
            return study
    except Exception as e:  # a corrupt journal/db surfaces as many exception types
        url = ctx.exp.search.storage
        if "://" not in url:
            # Optuna's own words can be cryptic ("Should not reach."): name the file and the way out.
            name = "study.db" if url == "sqlite" else "study.journal"
            cause = " ".join(str(e).split()).split(" [SQL:")[0][:300]  # SQLAlchemy's text spans lines
            raise StageError(f"search storage {ctx.path('search', name)} is unreadable ({type(e).__name__}: "
                             f"{cause}); move it away to start the search afresh") from None
        from sqlalchemy.engine import make_url

        shown = make_url(url).render_as_string(hide_password=True)
        if isinstance(e, ImportError):
            scheme = url.partition("://")[0]
            raise StageError(f"search storage {shown}: its database driver is not installed "
                             f"(pip install '{_DRIVERS.get(scheme, 'the driver')}')") from None
        cause = e.__cause__ or e  # optuna wraps the driver's error; the driver's says what failed
        text = " ".join(str(cause).split())  # one line: drivers' messages span several
        raise StageError(f"search storage {shown} cannot be used: {type(cause).__name__}: {text}"[:400]) from None


def predicted_front(ctx: Context, study: optuna.Study, oracle: Oracle) -> list[dict[str, Any]]:
    """Distinct configs of the study's feasible Pareto front with their predicted metrics."""
    best = study.best_trials
    if not best:
        raise NoFeasibleError(no_feasible_message(ctx, study))
    configs = list({config_key(t.user_attrs["config"]): t.user_attrs["config"] for t in best}.values())
    values = oracle.evaluate(configs)
    return [{"key": config_key(c), "config": c, "predicted": {m: float(v[i]) for m, v in values.items()}}
            for i, c in enumerate(configs)]


def no_feasible_message(ctx: Context, study: optuna.Study) -> str:
    """Plain words on which budget failed and how close the search came."""
    trials = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    closest = {str(b): min((t.constraints.get(str(b), np.inf) for t in trials), default=np.inf)
               for b in ctx.exp.budgets}
    message = budgets_missed_message(closest, "subnet", "predicted")
    tried = len({config_key(t.user_attrs["config"]) for t in trials if "config" in t.user_attrs})
    size = ctx.space.size()
    if tried >= size:
        return message
    counted = count_meeting_budgets(ctx)
    if counted is None:
        # The search saw only these: a subnet it never tried may still meet the budgets.
        return message + (f" (among the {tried:,} distinct subnets the search tried, of {count_text(size)} in the "
                          "space: more [search] trials, or the subnet you expect in [search] warm_start, may find "
                          "one)")
    n, example, partial = counted
    if n == 0:
        which = " meet " + "; ".join(map(str, partial)) if partial else ""
        return message + (f" (nor does any of the {count_text(size)} subnets of the space{which}: their counted "
                          "metrics were checked)")
    if partial:  # the others are on predicted metrics: the search's trials are all that is known of them
        meet = "meets" if n == 1 else "meet"
        return message + (f" (among the {tried:,} distinct subnets the search tried, of {count_text(size)} in the "
                          f"space, {n:,} of which {meet} the budgets on counted metrics: more [search] trials, or "
                          f"the subnet you expect in [search] warm_start, e.g. {toml_inline(example)}, may find one)")
    return message + (f" among the {tried:,} distinct subnets the search tried, but by count {n:,} of the "
                      f"{count_text(size)} in the space do: add one to [search] warm_start, e.g. "
                      f"{toml_inline(example)}, or run more trials")


def count_meeting_budgets(ctx: Context) -> tuple[int, Config, tuple[Budget, ...]] | None:
    """(how many subnets of the space meet every budget on a counted metric, the first of them, those
    budgets when the others are on predicted metrics, else ()) when there is such a budget and the space
    can be counted within COUNT_SECONDS; else None."""
    counted = tuple(b for b in ctx.exp.budgets if getattr(metric_info(b.metric), "source", None) == "exact")
    if not counted or ctx.space.size() > COUNT_LIMIT:
        return None
    deadline = time.monotonic() + COUNT_SECONDS  # per subnet: ~40 us (MLP) to ~250 us (transformer)
    n, first = 0, {}
    for c in ctx.space.enumerate(COUNT_LIMIT):
        if time.monotonic() > deadline:
            return None
        values = exact_metrics(ctx, c)
        if all(b.satisfied(values[b.metric]) for b in counted):
            n, first = n + 1, first or c
    return n, first, (counted if len(counted) < len(ctx.exp.budgets) else ())


def toml_inline(config: Config) -> str:
    """A config as a TOML inline table, as [search] warm_start takes it (dotted names quoted)."""
    return "{" + ", ".join(f"{dotted('', k)} = {v}" for k, v in config.items()) + "}"


def no_measured_feasible_message(ctx: Context, rows: list[dict[str, Any]]) -> str:
    """Plain words on which budget no measured subnet meets and how close the nearest came."""
    closest = {}
    for b in ctx.exp.budgets:
        gaps = [b.violation(float(r[b.metric])) for r in rows if isinstance(r.get(b.metric), (int, float))]
        closest[str(b)] = min((g for g in gaps if np.isfinite(g)), default=np.inf)
    return budgets_missed_message(closest, "measured subnet", "measured") + "; relax them or measure more"


def measured_rows(ctx: Context) -> dict[str, dict[str, Any]]:
    """Every subnet measured so far: the measure table plus the search's validated front members."""
    rows = {r["key"]: r for r in load_table(ctx)}
    if search_folder_current(ctx):  # else measured on an earlier supernet, or by other settings
        validated = read_measured_rows(ctx, ctx.path("search", "validated.jsonl"), "nas search --force")
        rows.update({r["key"]: r for r in validated})
    return rows


def validate_front(ctx: Context, front: list[dict[str, Any]], *, quiet: bool = False
                   ) -> tuple[list[dict[str, Any]], int]:
    """The measured rows of up to `validate_top` members of the predicted front, and how many of them
    were measured now (the rest reuse the table's or an earlier round's rows)."""
    from nas.data import load_data
    from nas.train import load_supernet

    known = measured_rows(ctx)
    picks = spread(range(len(front)), [e["predicted"] for e in front], ctx.exp.objectives[0],
                   ctx.exp.search.validate_top)
    todo = [front[i]["config"] for i in picks if front[i]["key"] not in known]
    if todo:
        splits = load_data(ctx.exp.data)
        # Timed later than the measure table and refitted on with it: in the table's units (anchors).
        measure_configs(ctx, load_supernet(ctx), todo, splits.x_val, splits.y_val, quiet=quiet,
                        on_row=lambda r: append_jsonl(ctx.path("search", "validated.jsonl"), r),
                        label="validate front", reference=load_table(ctx))
    known = measured_rows(ctx)
    return [known[front[i]["key"]] for i in picks], len(todo)


def front_hypervolume(ctx: Context, rows: list[dict[str, Any]]) -> float:
    """Hypervolume of the feasible measured front, each objective scaled by the measure table's
    best..worst range, reference point at the table's worst. Fixed scaling keeps rounds comparable;
    the value exceeds 1 when searched subnets beat the table's best."""
    table = load_table(ctx)
    objectives = ctx.exp.objectives
    sign = np.array([-1.0 if o.direction == "maximize" else 1.0 for o in objectives])
    ref_values = np.array([[r[o.metric] for o in objectives] for r in table]) * sign
    lo, hi = ref_values.min(axis=0), ref_values.max(axis=0)
    feasible_rows = [r for r in rows if feasible(r, ctx.exp.budgets)]
    if not feasible_rows:
        return 0.0
    pts = np.array([[r[o.metric] for o in objectives] for r in feasible_rows]) * sign
    scale = np.where(hi > lo, hi - lo, 1.0)
    return hypervolume((pts - lo) / scale, np.ones(len(objectives)))


def finish_round(ctx: Context, round_: int, *, quiet: bool = False) -> dict[str, Any]:
    """Predicted front -> measured -> hypervolume; refit for the next round. Done once, by
    whichever worker gets here first; the others wait for its marker (and, as a re-run does, write
    again whatever of its files was deleted since)."""
    marker = ctx.path("search", f"round{round_}.done.json")
    with file_lock(ctx.path("search", "finish.lock")):
        study = open_study(ctx, round_)
        digest = trials_digest(study)
        done = recorded_round(ctx, round_, digest)
        if done is not None:
            restore_round_files(ctx, round_, study, done, quiet=quiet)
            return done
        t0 = time.time()
        oracle = Oracle(ctx, predictor_folder(ctx, round_))
        front = predicted_front(ctx, study, oracle)
        write_json(ctx.path("search", f"predicted_front_r{round_}.json"), front)
        validated, new = validate_front(ctx, front, quiet=quiet)
        rows = list(measured_rows(ctx).values())
        summary = {"round": round_, "trials": len(study.get_trials(deepcopy=False)), "predicted_front": len(front),
                   "validate_top": ctx.exp.search.validate_top, "validated": len(validated), "newly_measured": new,
                   "measured": len(rows),
                   "front_size": len(pareto_front([r for r in rows if feasible(r, ctx.exp.budgets)],
                                                  ctx.exp.objectives)),
                   "hypervolume": front_hypervolume(ctx, rows), "study_trials": digest}
        if round_ + 1 < ctx.exp.search.rounds:
            from nas.fit import fit_predictors

            quality = fit_predictors(ctx, rows, predictor_folder(ctx, round_ + 1), quiet=True)
            summary["predictor_quality"] = {
                m: {"kendall_tau": q["holdout"]["kendall_tau"], "mape": q["holdout"]["mape"]}
                for m, q in quality.items() if isinstance(q, dict)
            }
        summary["wall_s"] = round(time.time() - t0, 2)
        path = ctx.path("search", "rounds.json")
        rounds = [r for r in (_json_objects(path, "search rounds", ("round",)) if path.is_file() else [])
                  if r["round"] < round_]
        write_json(path, rounds + [summary])
        write_json(marker, summary)
        say(f"  round {round_}: {summary['trials']} trials, predicted front {len(front)}, measured "
            f"{len(validated)} of it; measured front {summary['front_size']}, hypervolume "
            f"{summary['hypervolume']:.4f}", quiet=quiet)
        return summary


def recorded_round(ctx: Context, round_: int, digest: str) -> dict[str, Any] | None:
    """The round's summary if it was finished on this study (`digest`: its trials' digest) with these
    settings and its measured rows are all still there: its marker, else its entry in rounds.json
    (written just before the marker, and left alone when only the marker was deleted). None: do it."""
    cfg = ctx.exp.search
    recorded = []
    marker = ctx.path("search", f"round{round_}.done.json")
    if marker.is_file():
        recorded.append(read_json(marker, f"round {round_} summary"))
    path = ctx.path("search", "rounds.json")
    if path.is_file():
        # Only an entry that names its study: one of an older version's, without, is no evidence alone.
        recorded += [r for r in _json_objects(path, "search rounds", ("round",))
                     if r["round"] == round_ and r.get("study_trials") == digest]
    measured = len(measured_rows(ctx))
    for done in recorded:
        # A larger validate_top (one round) keeps the study but must measure more of its front; a
        # study rebuilt since (its storage damaged and moved away) has another front to measure; rows
        # it measured that are gone (validated.jsonl deleted) are measured again, or the measured
        # front and the next round's refit would lack them.
        # (A marker written before it recorded validate_top, or the study's trials, is taken as done.)
        if isinstance(done, dict) and done.get("trials") == cfg.trials \
                and done.get("validate_top", cfg.validate_top) == cfg.validate_top \
                and done.get("study_trials", digest) == digest \
                and isinstance(done.get("measured", 0), int) and done.get("measured", 0) <= measured:
            return done
    return None


def predictors_complete(ctx: Context, folder: Path) -> bool:
    """Whether `folder` holds a predictor for each predicted metric and the quality.json written after them."""
    from nas.features import predicted_metrics
    from nas.fit import predictor_path

    return (folder / "quality.json").is_file() and all(predictor_path(folder, m).is_file()
                                                       for m in predicted_metrics(ctx))


def restore_round_files(ctx: Context, round_: int, study: optuna.Study, done: dict[str, Any], *,
                        quiet: bool = False) -> None:
    """Write again what a finished round (`done`: its summary) wrote and was deleted since: its marker
    is no proof that its files are still there, and without them the next round or the search's end fails."""
    restored = []
    front = ctx.path("search", f"predicted_front_r{round_}.json")
    if not front.is_file():
        # The same front the round measured: the study and the round's predictors are unchanged.
        write_json(front, predicted_front(ctx, study, Oracle(ctx, predictor_folder(ctx, round_))))
        restored.append(front.name)
    folder = predictor_folder(ctx, round_ + 1)
    if round_ + 1 < ctx.exp.search.rounds and not predictors_complete(ctx, folder):
        from nas.fit import fit_predictors

        # On the rows the round fitted on (the table's, then those validated up to this round, in the
        # order measured_rows keeps), not on later rounds' too: the next round's study was scored on
        # these predictors, and later ones on its measurements.
        rows = list(measured_rows(ctx).values())
        fit_predictors(ctx, rows[:done.get("measured", len(rows))], folder, quiet=True)
        restored.append(f"{folder.name}/")
    path = ctx.path("search", "rounds.json")
    rounds = _json_objects(path, "search rounds", ("round",)) if path.is_file() else []
    if [r for r in rounds if r["round"] == round_] != [done]:
        # Later rounds' entries stay: each is checked against its own marker when its round comes.
        write_json(path, sorted([r for r in rounds if r["round"] != round_] + [done], key=lambda r: r["round"]))
        restored.append(path.name)
    marker = ctx.path("search", f"round{round_}.done.json")
    if not marker.is_file() or read_json(marker, f"round {round_} summary") != done:
        write_json(marker, done)
        restored.append(marker.name)
    if restored:
        say(f"  round {round_}: done before; wrote again its {', '.join(restored)}", quiet=quiet)


def trials_digest(study: optuna.Study) -> str:
    """What identifies a study's finished trials: a digest of their uids (each trial gets a fresh one)."""
    uids = sorted(str(t.user_attrs.get("uid")) for t in study.get_trials(deepcopy=False, states=COMPLETE))
    return hashlib.sha256("\n".join(uids).encode()).hexdigest()[:16]


def _json_objects(path: Path, what: str, keys: tuple[str, ...]) -> list[dict[str, Any]]:
    """A JSON list of objects that each have `keys` (StageError naming the file otherwise)."""
    data = read_json(path, what)
    if not isinstance(data, list) or not all(isinstance(e, dict) and all(k in e for k in keys) for e in data):
        # --force would read it again: deleted, it is written again from the rounds' markers and studies.
        raise StageError(f"{path}: expected a list of objects with {', '.join(map(repr, keys))}; delete it "
                         "and run `nas search` again, which writes it again")
    return data


def warm_configs(ctx: Context, round_: int) -> list[dict[str, int]]:
    """Tried first: the user's warm-start configs, largest and smallest; later rounds add the measured front."""
    configs = [ctx.space.validate(c) for c in ctx.exp.search.warm_start]
    configs += [ctx.space.largest(), ctx.space.smallest()]
    if round_:
        rows = [r for r in measured_rows(ctx).values() if feasible(r, ctx.exp.budgets)]
        configs += [rows[i]["config"] for i in pareto_front(rows, ctx.exp.objectives)]
    return list({config_key(c): c for c in configs}.values())


SPAWNED_TEXT = "NAS_SPAWNED_EXPERIMENT"  # environment variable: a file with the experiment text spawned workers use
SPAWNED_BY = "NAS_SPAWNED_BY"  # environment variable: the pid of the `nas search --workers N` that spawned a worker


def spawned_text_path(ctx: Context) -> Path:
    """Where this process leaves its experiment text for the workers it spawns (a dot file: no output)."""
    return ctx.path("search", f".experiment.{os.getpid()}.toml")


def spawn_workers(ctx: Context, count: int) -> list[subprocess.Popen]:
    """Extra worker processes on the same study (`nas search --spawned`: they spawn none themselves)."""
    if count <= 1:
        return []
    cmd = [sys.executable, "-m", "nas.cli", "search", str(ctx.exp.source), "--run-dir", str(ctx.run_dir), "--quiet"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parents[1]),
                                                                     os.environ.get("PYTHONPATH")]))}
    if ctx.exp.text:  # the experiment as this process read it, not the file as it may read by now (edited)
        write_bytes(spawned_text_path(ctx), ctx.exp.text.encode())
        env[SPAWNED_TEXT] = str(spawned_text_path(ctx))
    env[SPAWNED_BY] = str(os.getpid())  # whose death stops them (nas.cli: nas.interrupts.stop_when_orphaned)
    return [subprocess.Popen([*cmd, "--spawned"], env=env, stdout=subprocess.DEVNULL) for _ in range(1, count)]


def stop_workers(procs: list[subprocess.Popen], error: BaseException) -> None:
    """Stop the spawned workers still running, as this process ends on `error`: SIGINT if it was the
    user's interrupt, which they take as theirs (each frees its reserved batch and says nothing), else
    SIGTERM, which ends one still starting up quietly (SIGINT raised KeyboardInterrupt in its imports,
    a traceback each on the terminal) and one past it as an interrupt (nas.interrupts)."""
    interrupted, seen = False, error
    while seen is not None and not interrupted:
        # A clean-up that failed while the interrupt unwound (nas.cli treats it so) is the interrupt too.
        interrupted = isinstance(seen, KeyboardInterrupt)
        seen = seen.__cause__ or seen.__context__
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGINT if interrupted else signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def search(ctx: Context, *, quiet: bool = False, workers: int | None = None, spawned: bool = False) -> dict[str, Any]:
    """The search stage: rounds of trials on predictors (shared by workers), measured fronts, refits.

    Returns the stage's summary plus this process's part (`this_worker`): with several workers the
    summary is written by whichever finishes first."""
    t0 = time.time()
    cfg = ctx.exp.search
    key = search_key(ctx)
    added, trial_s = 0, 0.0
    with contextlib.ExitStack() as held:
        # One lock over the check, the emptying and the claim: a search with other settings started
        # now cannot empty the folder under this one, nor this one under it.
        with file_lock(ctx.path("search.lock")):
            refuse_other_search(ctx, key)
            if not spawned:  # what nas.pipeline.run_stage leaves to a search until it holds the study
                from nas.pipeline import describe_run

                describe_run(ctx)
                ctx.path("search", "stamp.json").unlink(missing_ok=True)
            ctx.begin("search", key=key)
            write_bytes(ctx.path("search", "fit_id.txt"), (ctx.stamp_id("fit") + "\n").encode())
            # Claimed before spawning, so a lone `nas search` is worker 0 and its trials follow the seed.
            index = held.enter_context(worker_slot(study_lock(ctx), key))
        extra: list[subprocess.Popen] = []
        try:
            try:
                held.enter_context(contextlib.nullcontext() if spawned else sigterm_as_interrupt())
                extra = [] if spawned else spawn_workers(ctx, workers or cfg.workers)
                for round_ in range(cfg.rounds):
                    t = time.time()
                    added += run_round_trials(ctx, round_, index, warm_configs(ctx, round_), quiet=quiet)
                    trial_s += time.time() - t
                    finish_round(ctx, round_, quiet=quiet)
                for p in extra:  # they may be measuring a round's front: no time limit here
                    p.wait()
            except BaseException as e:
                # Interrupted or failed: the spawned workers stop too (they would otherwise run the whole
                # study while this process waits for them), their finished trials kept for the resume.
                stop_workers(extra, e)
                raise
        finally:
            if not spawned:  # the experiment text handed to the workers (none written for one worker)
                spawned_text_path(ctx).unlink(missing_ok=True)
        # Still holding the worker slot: a search with other settings started while this one measures
        # its front (tens of seconds) would otherwise see no live worker and empty the folder under it.
        failed = [p.returncode for p in extra if p.returncode]
        if failed:
            # This process ran every round to its full count of trials, so the study is complete: the
            # others made up for the failed workers' share (a killed worker loses only its unsaved trials).
            print(f"note: {len(failed)} search worker(s) ended with exit codes {failed}; the others finished "
                  "the study", file=sys.stderr)
        with file_lock(ctx.path("search", "finish.lock")):
            if ctx.is_current("search"):
                summary = ctx.stamp_summary("search")  # stamped by another worker (or an earlier run)
            else:
                summary = finish_search(ctx, quiet=quiet, started=t0)
    summary["this_worker"] = {"index": index, "trials": added, "trial_wall_s": round(trial_s, 2)}
    return summary


def refuse_other_search(ctx: Context, key: str) -> None:
    """StageError when live workers of a search with other settings hold the run's search folder, which
    beginning this one would empty under them (their study lost, their workers crashing)."""
    running = slot_holders(study_lock(ctx), key).under_other_keys()
    if running:
        owners = [owner_name(o) for held in running.values() for o in held]
        remote = [o for o in owners if owner_host(o) != socket.gethostname()]
        # A worker on another machine cannot be checked from here: if it died, its entry stays.
        hint = (f"; if {', '.join(remote)} no longer runs, remove its entry from "
                f"{ctx.path('search', 'workers.json')}") if remote else ""
        raise StageError(f"another `nas search` with other settings is running in {ctx.run_dir} (worker "
                         f"{', '.join(owners)}); wait for it to end, or stop it, then run this one{hint}")


def busy_seconds(intervals: list[tuple[float, float]], idle: float = 10.0) -> float:
    """Seconds covered by (start, end) intervals, gaps under `idle` s counted in (the sampler's turns
    between generations) and longer ones not: a search killed and resumed an hour later ran for
    its two busy spells, not for the hour between them."""
    total, start, end = 0.0, None, None
    for a, b in sorted(intervals):
        if end is not None and a - end < idle:
            end = max(end, b)
            continue
        if end is not None:
            total += end - start
        start, end = a, b
    return total + (end - start if end is not None else 0.0)


def trial_phase(ctx: Context) -> dict[str, Any]:
    """What the studies record of the trial phase: trials, distinct workers that added trials, and
    seconds during which trials were being run, summed over rounds."""
    trials, span, workers = 0, 0.0, set()
    for round_ in range(ctx.exp.search.rounds):
        done = open_study(ctx, round_).get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        trials += len(done)
        span += busy_seconds([(t.datetime_start.timestamp(), t.datetime_complete.timestamp()) for t in done])
        workers.update(t.user_attrs.get("worker", 0) for t in done)
    return {"trials": trials, "workers": len(workers), "trial_wall_s": round(span, 2),
            "trials_per_s": round(trials / max(span, 1e-9), 1)}


def proposed_predictions(paths: Sequence[Path]) -> dict[str, Any]:
    """Each config's prediction by the first of the rounds' predicted fronts (`paths`, in round order) that
    held it: made before it was measured, where a later round's refit was trained on its measurement."""
    predicted: dict[str, Any] = {}
    for path in paths:
        for e in _json_objects(path, "predicted front", ("key", "predicted")):
            predicted.setdefault(e["key"], e["predicted"])
    return predicted


def finish_search(ctx: Context, *, quiet: bool = False, started: float | None = None) -> dict[str, Any]:
    """The measured front over every measured subnet, written once (`started`: the stage's start time,
    for the stamp's wall_s, which the report's stage times read)."""
    measured = list(measured_rows(ctx).values())
    rows = [r for r in measured if feasible(r, ctx.exp.budgets)]
    if not rows:
        raise NoFeasibleError(no_measured_feasible_message(ctx, measured))
    rounds = _json_objects(ctx.path("search", "rounds.json"), "search rounds", ("round", "hypervolume"))
    predicted = proposed_predictions([ctx.path("search", f"predicted_front_r{r}.json")
                                      for r in range(ctx.exp.search.rounds)])
    # Every round's predictors were fitted on the measure table's rows: their predictions of those are
    # in-sample, whichever round's front held them ("table"); the report plots only the others.
    table_keys = {r["key"] for r in load_table(ctx)}
    front = [{**rows[i], "predicted": predicted.get(rows[i]["key"]),
              "source": "search" if rows[i]["key"] in predicted and rows[i]["key"] not in table_keys else "table"}
             for i in pareto_front(rows, ctx.exp.objectives)]
    front.sort(key=lambda r: r[ctx.exp.objectives[0].metric])
    write_json(ctx.path("search", "front.json"), front)
    write_json(ctx.path("search", "predicted_front.json"), [{"key": k, "predicted": v} for k, v in predicted.items()])
    summary = {**trial_phase(ctx), "rounds": len(rounds), "hypervolume_per_round": [r["hypervolume"] for r in rounds],
               "predicted_front": rounds[-1]["predicted_front"],
               # Subnets the search measured: a front member measured before is validated, not measured
               # again (the sum of "validated" counted it once per round); rounds recorded before: at most.
               "newly_measured": sum(r.get("newly_measured", r.get("validated", 0)) for r in rounds),
               "measured_front": len(front), "study": study_name(ctx, len(rounds) - 1),
               # What the report needs to draw this front when it has not been exported.
               "objectives": [o.metric for o in ctx.exp.objectives], "budgets": [str(b) for b in ctx.exp.budgets]}
    say(f"  measured front: {len(front)} subnets; hypervolume per round "
        + ", ".join(f"{h:.4f}" for h in summary["hypervolume_per_round"]), quiet=quiet)
    if started is not None:
        summary["wall_s"] = round(time.time() - started, 2)
    ctx.mark_done("search", summary)
    return dict(summary)
