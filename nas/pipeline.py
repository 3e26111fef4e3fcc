"""`nas run`: the stages in order, each skipped when its outputs are current."""

from __future__ import annotations

import contextlib
import errno
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nas.context import STAGES, Context
from nas.errors import ConfigError, NoFeasibleError, StageError
from nas.io import make_dir, remove_path, write_bytes, write_json
from nas.progress import say
from nas.query import runs_inside
from nas.workers import file_lock, sole_lock


def stage_function(stage: str) -> Callable[..., dict[str, Any]]:
    """The library function behind `nas <stage>` (imported lazily: jax is slow to import)."""
    import importlib

    return getattr(importlib.import_module(f"nas.{stage}"), stage)


def refuse_other_run(ctx: Context) -> None:
    """StageError if the run directory holds a run of another experiment (by name), or files of no run."""
    described = ctx.path("run.json")
    if not described.is_file():
        # Stages empty their folders of other inputs' work: a train/ or export/ of the user's in a folder
        # that is no run would be deleted, and a run inside another run's folders deleted with them.
        theirs = [ctx.run_dir / name for name in (*STAGES, "query") if (ctx.run_dir / name).exists()]
        if theirs:
            raise StageError(f"{ctx.run_dir} is not a run directory (no run.json) but holds {theirs[0].name}/, "
                             "which a stage would empty: choose a new --run-dir")
        # A folder of runs (the runs root given as --run-dir): made a run, it then refused every new run in it.
        runs = runs_inside(ctx.run_dir)
        if runs:
            raise StageError(f"{ctx.run_dir} holds other runs ({runs[0].parent.name}/ is one): it is a folder of "
                             f"runs, not a run; choose a new --run-dir, e.g. {ctx.run_dir / ctx.exp.name} "
                             "(--runs-root names the folder of runs)")
        outer = next((p for p in ctx.run_dir.resolve().parents if (p / "run.json").is_file()), None)
        if outer is not None:
            hint = (f" ({outer} is a folder of runs made a run itself, by --run-dir {outer}?: remove its run.json "
                    f"and stage folders to use it as one again)") if runs_inside(outer) else ""
            raise StageError(f"{ctx.run_dir} is inside the run directory {outer}: choose a --run-dir outside "
                             f"it{hint}")
    if described.is_file():
        # Another experiment's run: its stages would be overwritten one by one and its files mixed.
        try:
            owner = json.loads(described.read_text()).get("name")
        except (ValueError, AttributeError, RecursionError):
            owner = None  # unreadable: describe_run rewrites it, as for a fresh run
        if owner is not None and owner != ctx.exp.name:
            raise StageError(f"{ctx.run_dir} holds a run of experiment {owner!r}, not {ctx.exp.name!r}: "
                             f"choose another --run-dir (or remove that folder)")


def open_run_dir(ctx: Context) -> None:
    """Create the run directory (described by `describe_run` once a stage may run there)."""
    refuse_other_run(ctx)
    make_dir(ctx.run_dir)


def describe_run(ctx: Context) -> None:
    """The run's copy of the experiment its stages ran with, where it came from, and its space. Queries
    and the report read them while stages run: each file is replaced whole, never truncated first."""
    # The text the stages were given, not the file as it may read by now (edited while training ran).
    text = ctx.exp.text.encode() if ctx.exp.text else Path(ctx.exp.source).read_bytes()
    write_bytes(ctx.path("experiment.toml"), text)
    write_json(ctx.path("run.json"), {"experiment": str(ctx.exp.source), "name": ctx.exp.name,
                                      "space_size": min(ctx.space.size(), 2**63 - 1)})
    write_json(ctx.path("space.json"), ctx.space.to_dict())


def describe_if_current(ctx: Context) -> bool:
    """Describe the run again (`describe_run`) when every stage is current under this experiment:
    the run is what it describes (moved, say), and queries and the report read the run's copy.
    Under the search's lock, checked again there: a search with other settings may be starting."""
    if ctx.first_stale(STAGES[-1]) is not None:
        return False
    try:
        with file_lock(ctx.path("search.lock")):
            if ctx.first_stale(STAGES[-1]) is not None:
                return False
            describe_run(ctx)
    except OSError as e:
        # A finished run on a read-only disk (an archive, a shared mount) is still up to date: it keeps its copy.
        if e.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise
    return True


def times_subnets(ctx: Context, stage: str) -> bool:
    """Whether `stage` compiles and times on the latency targets' devices (fit does for a layer table)."""
    return stage in ("measure", "search") or (stage == "fit" and ctx.exp.predictors.latency == "lut")


def check_timing_setup(ctx: Context) -> None:
    """NasError naming the setting when a latency target's device is missing here or the XLA cache folder
    cannot be written; the main device first, then each extra target's."""
    from nas.latency import target_device
    from nas.measure import compilation_cache_folder

    for metric, device, _ in ctx.exp.measure.latency_targets():
        target_device(device, ctx.exp.measure.device_setting(metric))
    compilation_cache_folder(ctx)


def run_stage(ctx: Context, stage: str, *, quiet: bool = False, fresh: bool = False,
              **options: Any) -> dict[str, Any]:
    """Run one stage (resuming whatever it left unfinished, or from nothing when `fresh`: what
    --force asks for); `options` go to the stage function."""
    ctx.data_digests.clear()  # the stage's fingerprint names the data as it is when the stage begins
    i = STAGES.index(stage)
    if i:
        # Before anything is written: a stage run out of order leaves no run folder behind.
        ctx.require(STAGES[i - 1])
    if times_subnets(ctx, stage):
        # Said before the stage's stamp goes (or, with --force, its folder: the measured table with it).
        check_timing_setup(ctx)
        if stage == "fit":
            from nas.lut import check_tables_machine

            check_tables_machine(ctx)
    # The run is described (its copy of the experiment, which queries read) only once the stage may run:
    # a search once it holds its study (nas.search), another stage once it holds the stage's lock.
    open_run_dir(ctx)
    with ctx.pinned_stamp(STAGES[i - 1]) if i else contextlib.nullcontext():
        return _run_stage_body(ctx, stage, quiet=quiet, fresh=fresh, **options)


def _run_stage_body(ctx: Context, stage: str, *, quiet: bool, fresh: bool, **options: Any) -> dict[str, Any]:
    if stage == "search":  # workers share its study: nas.search coordinates them
        return _search_recording_failure(ctx, quiet=quiet, **options)
    # Two processes on one stage would write the same checkpoints, tables or export folder.
    with sole_lock(ctx.path(f"{stage}.lock"), f"another process is running stage '{stage}' in {ctx.run_dir} "
                                              "(`nas run` or `nas " + stage + "`); wait for it to end"):
        describe_run(ctx)
        # A re-run that crashes half-way must not leave the old stamp vouching for a mix of old and new files.
        ctx.path(stage, "stamp.json").unlink(missing_ok=True)
        if fresh and stage in ("train", "measure", "fit"):
            # Its checkpoints and partial tables too: else a forced train resumed at its last step and
            # trained nothing. Not the export, which replaces the old one only once the new one is whole.
            remove_path(ctx.path(stage))
        return stage_function(stage)(ctx, quiet=quiet, **options)


FAILED = "failed.json"  # in search/: why the last search found no subnet meeting the budgets


def _search_recording_failure(ctx: Context, **options: Any) -> dict[str, Any]:
    """The search stage, with why it failed kept in search/failed.json until one succeeds: the report and
    `nas query` said only "ran again (or failed)" and "being run again, or was stopped", and advised
    commands that failed again on the same budgets (review)."""
    try:
        result = stage_function("search")(ctx, **options)
    except NoFeasibleError as e:
        write_json(ctx.path("search", FAILED), {"error": str(e), "experiment": str(ctx.exp.source),
                                                "at": time.strftime("%Y-%m-%d %H:%M:%S")})
        raise
    ctx.path("search", FAILED).unlink(missing_ok=True)
    return result


def require_enough_subnets(ctx: Context) -> None:
    """ConfigError when the space has fewer subnets than the predictors are fitted and scored on."""
    if ctx.space.size() < ctx.exp.predictors.min_subnets():
        raise ConfigError("model.space", f"{ctx.space.size()} subnet(s): the predictors are fitted and scored on at "
                          f"least {ctx.exp.predictors.min_subnets()} different measured subnets; widen the space")


def run_all(ctx: Context, *, force: bool = False, quiet: bool = False) -> dict[str, Any]:
    """Every stage in order; a stage whose outputs are current is skipped unless `force`."""
    t0 = time.time()
    results: dict[str, Any] = {}
    ctx.data_digests.clear()  # a context used before sees the data as it is now
    if not force:
        describe_if_current(ctx)
    require_enough_subnets(ctx)  # `nas train` alone may train a smaller space
    # The first stage not current runs, and every one after it (each is stamped on the one before).
    first = STAGES[0] if force else ctx.first_stale(STAGES[-1])
    runs = STAGES[STAGES.index(first):] if first else ()
    if any(times_subnets(ctx, stage) for stage in runs):
        check_timing_setup(ctx)  # said now, not after training for an hour
    if runs:
        open_run_dir(ctx)  # a run directory that cannot be: its error was printed under "[train]"
    for stage in STAGES:
        if stage not in runs:
            say(f"[{stage}] up to date, skipped", quiet=quiet)
            results[stage] = "skipped"
            continue
        say(f"[{stage}]", quiet=quiet)
        t = time.time()
        results[stage] = run_stage(ctx, stage, quiet=quiet, fresh=force)
        say(f"[{stage}] done in {time.time() - t:.1f} s", quiet=quiet)
    results["wall_s"] = round(time.time() - t0, 1)
    return results
