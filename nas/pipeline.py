"""`nas run`: the stages in order, each skipped when its outputs are current."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from typing import Any

from nas.context import STAGES, Context
from nas.io import write_json
from nas.progress import say


def stage_function(stage: str) -> Callable[..., dict[str, Any]]:
    """The library function behind `nas <stage>` (imported lazily: jax is slow to import)."""
    import importlib

    return getattr(importlib.import_module(f"nas.{stage}"), stage)


def open_run_dir(ctx: Context) -> None:
    """Create the run directory with a copy of the experiment and where it came from."""
    ctx.run_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ctx.exp.source, ctx.path("experiment.toml"))
    write_json(ctx.path("run.json"), {"experiment": str(ctx.exp.source), "name": ctx.exp.name,
                                      "space_size": ctx.space.size()})
    write_json(ctx.path("space.json"), ctx.space.to_dict())


def run_stage(ctx: Context, stage: str, *, quiet: bool = False, **options: Any) -> dict[str, Any]:
    """Run one stage (resuming whatever it left unfinished); `options` go to the stage function."""
    open_run_dir(ctx)
    return stage_function(stage)(ctx, quiet=quiet, **options)


def run_all(ctx: Context, *, force: bool = False, quiet: bool = False) -> dict[str, Any]:
    """Every stage in order; a stage whose outputs are current is skipped unless `force`."""
    t0 = time.time()
    results: dict[str, Any] = {}
    stale = force
    for stage in STAGES:
        stale = stale or not ctx.is_current(stage)
        if not stale:
            say(f"[{stage}] up to date, skipped", quiet=quiet)
            results[stage] = "skipped"
            continue
        say(f"[{stage}]", quiet=quiet)
        t = time.time()
        results[stage] = run_stage(ctx, stage, quiet=quiet)
        say(f"[{stage}] done in {time.time() - t:.1f} s", quiet=quiet)
    results["wall_s"] = round(time.time() - t0, 1)
    return results
