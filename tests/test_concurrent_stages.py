"""A stage works on the earlier stage's outputs as they were when it began, whatever another process runs
meanwhile; linked stage folders are replaced, never followed into, by --force (review of two commands at
once on one run directory)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import write_tiny
from nas.cli import main
from nas.context import Context, prepare
from nas.errors import StageError


def rerun_elsewhere(ctx: Context, stage: str) -> None:
    """What another process re-running `stage` leaves: a stamp with a new id."""
    path = ctx.path(stage, "stamp.json")
    stamp = json.loads(path.read_text())
    path.write_text(json.dumps({**stamp, "id": "another-process"}))


@pytest.fixture()
def trained(tmp_path: Path) -> Context:
    """A run whose train stage is stamped done (no weights: the stages below are stand-ins)."""
    from nas.pipeline import describe_run, open_run_dir

    ctx = prepare(write_tiny(tmp_path), run_dir=tmp_path / "run")
    open_run_dir(ctx)
    describe_run(ctx)
    ctx.begin("train")
    ctx.mark_done("train", {})
    return ctx


def test_a_stage_is_not_marked_done_on_an_earlier_stage_rerun_meanwhile(trained: Context, monkeypatch) -> None:
    import nas.pipeline as pipeline

    ctx = trained
    began_on = ctx.stamp_id("train")
    seen = []

    def measure(ctx: Context, quiet: bool = False) -> dict:
        ctx.begin("measure")
        rerun_elsewhere(ctx, "train")  # `nas train --force` in a second terminal
        seen.append((ctx.stamp_id("train"), ctx.fingerprint("measure")))
        ctx.mark_done("measure", {})
        return {}

    monkeypatch.setattr(pipeline, "stage_function", lambda stage: measure)
    with pytest.raises(StageError, match="stage 'train' ran again .* while 'measure' ran"):
        pipeline.run_stage(ctx, "measure", quiet=True)
    # It saw the train it began on throughout, was stamped on neither, and is not taken as current.
    assert seen[0][0] == began_on
    assert not ctx.path("measure", "stamp.json").exists() and not ctx.is_current("measure")
    assert ctx.stamp_id("train") == "another-process"  # unpinned once the stage is over


def test_the_study_a_search_names_stays_while_the_predictors_are_refitted(trained: Context, monkeypatch) -> None:
    """`nas fit` during `nas search`: the study name came from the fit stamp as it was each time it was read,
    so the search's trials went to a new empty study and it said no subnet met the budgets."""
    import nas.pipeline as pipeline
    from nas.search import study_name

    ctx = trained
    for stage in ("measure", "fit"):
        ctx.begin(stage)
        ctx.mark_done(stage, {})
    names = []

    def search(ctx: Context, quiet: bool = False) -> dict:
        names.append(study_name(ctx, 0))
        rerun_elsewhere(ctx, "fit")
        names.append(study_name(ctx, 0))
        return {}

    monkeypatch.setattr(pipeline, "stage_function", lambda stage: search)
    pipeline.run_stage(ctx, "search", quiet=True)
    assert names[0] == names[1] != study_name(ctx, 0)


def test_force_replaces_a_linked_stage_folder_without_touching_its_target(trained: Context, tmp_path: Path,
                                                                          monkeypatch) -> None:
    import nas.pipeline as pipeline

    ctx = trained
    shared = tmp_path / "shared_train"
    shutil.move(ctx.path("train"), shared)
    (shared / "checkpoint").write_text("another run's weights")
    ctx.path("train").symlink_to(shared, target_is_directory=True)
    found = []

    def train(ctx: Context, quiet: bool = False) -> dict:
        found.extend(p.name for p in ctx.begin("train").iterdir())
        return {}

    monkeypatch.setattr(pipeline, "stage_function", lambda stage: train)
    pipeline.run_stage(ctx, "train", quiet=True, fresh=True)
    # From nothing (it resumed the linked checkpoints and trained nothing), and the shared folder is intact.
    assert found == ["fingerprint.txt"] and not ctx.path("train").is_symlink()
    assert (shared / "checkpoint").read_text() == "another run's weights"


def test_export_force_twice_over_a_linked_export_folder(finished_run, tmp_path: Path) -> None:
    """The first --force left `.export.old` as the link; every later one failed "Not a directory" and left
    a whole `.export.tmp` behind."""
    exp, run_dir = finished_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    shared = tmp_path / "shared_export"
    shutil.move(copy / "export", shared)
    (copy / "export").symlink_to(shared, target_is_directory=True)
    for _ in range(2):
        assert main(["export", str(exp), "--run-dir", str(copy), "--force", "--quiet"]) == 0
        assert (copy / "export" / "front.json").is_file() and not (copy / "export").is_symlink()
        assert not (copy / ".export.old").exists() and not (copy / ".export.tmp").exists()
    assert (shared / "front.json").is_file()  # the linked folder is left as it was


def test_a_stage_running_elsewhere_is_said_to_be_running_not_missing(trained: Context) -> None:
    """`nas fit` while `nas measure` runs said "run `nas measure` first"."""
    from nas.workers import sole_lock

    ctx = trained
    with pytest.raises(StageError, match="stage 'measure' has no current output"):
        ctx.require("measure")
    with sole_lock(ctx.path("measure.lock"), "busy"):
        with pytest.raises(StageError, match=r"stage 'measure' is running in .*\(process .+\); wait for it"):
            ctx.require("measure")
    with pytest.raises(StageError, match="has no current output"):
        ctx.require("measure")
