"""A run directory that is damaged, belongs to another experiment, or cannot be written: one clear
line, exit code 2, and nothing of the run overwritten or left half-current."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import nas.pipeline
from conftest import REPO, write_tiny
from nas.cli import main
from nas.context import prepare


def _copy_run(run_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    return copy


def _one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_stage_out_of_order_writes_nothing(tmp_path: Path, capsys) -> None:
    exp = write_tiny(tmp_path)
    runs = tmp_path / "runs"
    assert main(["measure", str(exp), "--runs-root", str(runs), "--quiet"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "stage 'train'" in line and "nas train" in line
    assert not runs.exists()


def test_run_dir_of_another_experiment_is_refused(finished_run, tmp_path: Path, capsys,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    _, run_dir = finished_run
    copy = _copy_run(run_dir, tmp_path)
    before = {p: p.read_bytes() for p in (copy / "run.json", copy / "experiment.toml", copy / "space.json")}
    other = write_tiny(tmp_path, name="other")
    monkeypatch.setattr(nas.pipeline, "stage_function", lambda stage: pytest.fail(f"stage {stage} ran"))
    assert main(["train", str(other), "--run-dir", str(copy), "--quiet"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "'tiny'" in line and "'other'" in line and "--run-dir" in line
    assert {p: p.read_bytes() for p in before} == before


def test_the_folder_of_runs_given_as_the_run_dir_is_refused(tmp_path: Path, capsys,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    # `--run-dir runs` made the runs root a run, and every new run under runs/ was refused from then on.
    runs = tmp_path / "runs"
    (runs / "mycnn").mkdir(parents=True)
    (runs / "mycnn" / "run.json").write_text('{"name": "mycnn"}')
    monkeypatch.setattr(nas.pipeline, "stage_function", lambda stage: pytest.fail(f"stage {stage} ran"))
    assert main(["train", str(write_tiny(tmp_path)), "--run-dir", str(runs), "--quiet"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "is a folder of runs, not a run" in line and str(runs / "tiny") in line
    assert sorted(p.name for p in runs.iterdir()) == ["mycnn"]
    assert main(["query", str(runs), "--budget", "size_kb=3"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "is a folder of runs, not a run (no run.json): name one of them, e.g. " in line and "mycnn" in line
    # Made a run before this check: the error for a new run inside it says how to undo that.
    (runs / "run.json").write_text('{"name": "tiny"}')
    assert main(["train", str(write_tiny(tmp_path, "fresh")), "--runs-root", str(runs), "--quiet"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "is inside the run directory" in line and "remove its run.json" in line


def test_a_rerun_that_crashes_leaves_the_stage_stale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = prepare(write_tiny(tmp_path), run_dir=tmp_path / "run")
    nas.pipeline.open_run_dir(ctx)
    nas.pipeline.describe_run(ctx)
    ctx.mark_done("train", {})
    assert ctx.is_current("train")

    def crashing(c, **_):  # noqa: ANN001, ANN202 - a stage function that dies half-way
        (c.path("train") / "half.bin").write_bytes(b"partial")
        raise RuntimeError("killed half-way")

    monkeypatch.setattr(nas.pipeline, "stage_function", lambda stage: crashing)
    with pytest.raises(RuntimeError):
        nas.pipeline.run_stage(ctx, "train")
    assert not ctx.is_current("train")  # the old stamp no longer vouches for the mixed folder


@pytest.mark.parametrize("damage, words", [
    ("no_config", ["line 3", "config"]),
    ("config_outside_space", ["line 3", "config.depth", "is not one of"]),
    ("latency_null", ["line 3", "latency_ms is None"]),
    ("not_an_object", ["line 3", "'key'"]),
    ("latency_zero", ["line 3", "latency_ms is 0.0", "above 0"]),
    ("accuracy_above_one", ["line 3", "accuracy is 7.5", "[0, 1]"]),
    ("latency_huge", ["line 3", "latency_ms is 1e+308", "at most 1e+150"]),  # overflowed the features
    ("repeated_row", ["line 3", "repeats the subnet of line 1"]),  # in the training and held-out rows at once
    ("no_size", ["line 3", "size_kb is None, expected a count >= 0"]),  # a KeyError in search, after its trials
    ("negative_macs", ["line 3", "macs is -7, expected a count >= 0"]),
    ("latency_of_401_digits", ["line 3", "latency_ms is 1000", "...", "expected a finite number"]),
    ("not_utf8", ["not UTF-8"]),
    ("torn_last_line", ["is corrupt"]),  # the finished table is never torn: it was damaged later
])
def test_damaged_measurement_table_is_one_clear_line(finished_run, tmp_path: Path, capsys, damage: str,
                                                     words: list[str]) -> None:
    exp, run_dir = finished_run
    copy = _copy_run(run_dir, tmp_path)
    table = copy / "measure" / "table.jsonl"
    rows = [json.loads(x) for x in table.read_text().splitlines()]
    row = rows[2]
    if damage == "no_config":
        del row["config"]
    elif damage == "config_outside_space":
        row["config"]["depth"] = 9
    elif damage == "latency_null":
        row["latency_ms"] = None
    elif damage == "latency_zero":
        row["latency_ms"] = 0.0
    elif damage == "accuracy_above_one":
        row["accuracy"] = 7.5
    elif damage == "latency_huge":
        row["latency_ms"] = 1e308
    elif damage == "repeated_row":
        rows[2] = rows[0]
    elif damage == "no_size":
        del row["size_kb"]
    elif damage == "negative_macs":
        row["macs"] = -7
    elif damage == "latency_of_401_digits":
        row["latency_ms"] = 10**400
    elif damage == "not_an_object":
        rows[2] = [row["key"]]
    table.write_text("".join(json.dumps(r) + "\n" for r in rows))
    if damage == "not_utf8":
        table.write_bytes(table.read_bytes().replace(b'"key"', b'"k\xff\xfe"', 1))
    elif damage == "torn_last_line":
        table.write_bytes(table.read_bytes()[:-40])
    assert main(["fit", str(exp), "--run-dir", str(copy), "--force", "--quiet"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "table.jsonl" in line and all(w in line for w in words), line
    assert not (copy / "fit" / "stamp.json").exists()  # the forced re-run failed: fit is not current


def test_a_predictor_that_predicts_non_finite_values_is_named(finished_run, tmp_path: Path, capsys) -> None:
    _, run_dir = finished_run
    copy = _copy_run(run_dir, tmp_path)
    path = copy / "fit" / "latency_ms.json"
    header = json.loads(path.read_text())
    del header["sha256"]  # edited by hand, so the digest does not stop it first
    header["model"]["scaler"]["y_mean"] = 1e6  # exp(1e6) of a log-latency model overflows
    path.write_text(json.dumps(header))
    assert main(["query", str(copy), "--from", "predictors", "--budget", "size_kb=4"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "latency_ms.json" in line and "not a finite number" in line


def test_too_few_measured_subnets_to_fit(finished_run, tmp_path: Path, capsys) -> None:
    exp, run_dir = finished_run
    copy = _copy_run(run_dir, tmp_path)
    table = copy / "measure" / "table.jsonl"
    table.write_text("".join(table.read_text().splitlines(keepends=True)[:3]))
    assert main(["fit", str(exp), "--run-dir", str(copy), "--force", "--quiet"]) == 2
    assert "3 rows, but the measure stage wrote" in _one_error_line(capsys.readouterr().err)  # lines lost
    stamp = json.loads((copy / "measure" / "stamp.json").read_text())
    (copy / "measure" / "stamp.json").write_text(json.dumps({**stamp, "rows": 3}))  # a stage that measured 3
    assert main(["fit", str(exp), "--run-dir", str(copy), "--force", "--quiet"]) == 2
    assert "measure.samples" in _one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize("where", ["a_folder", "under_a_file"])
def test_unwritable_output_path_is_one_clear_line(finished_run, tmp_path: Path, capsys, where: str) -> None:
    _, run_dir = finished_run
    (tmp_path / "file.txt").write_text("x")
    out = tmp_path if where == "a_folder" else tmp_path / "file.txt" / "page.html"
    assert main(["report", str(run_dir), "--out", str(out)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert ("is a folder" if where == "a_folder" else "a file is in the way") in line
    assert (tmp_path / "file.txt").read_text() == "x"


def test_run_dir_under_a_file_is_one_clear_line(tmp_path: Path, capsys) -> None:
    exp = write_tiny(tmp_path)
    (tmp_path / "file.txt").write_text("x")
    assert main(["train", str(exp), "--run-dir", str(tmp_path / "file.txt" / "run"), "--quiet"]) == 2
    assert "a file is in the way" in _one_error_line(capsys.readouterr().err)
    # `nas run` printed "[train]" above it (the experiment file itself given as --run-dir; review).
    assert main(["run", str(exp), "--run-dir", str(exp)]) == 2
    captured = capsys.readouterr()
    assert "a file is in the way" in _one_error_line(captured.err) and "[train]" not in captured.out + captured.err


def test_corrupt_checkpoint_prints_one_line_from_a_process(finished_run, tmp_path: Path) -> None:
    # In a process, the failed restore's other reads used to fail again when Python exited, each
    # printed as "Exception ignored in <coroutine ...>" with a TensorStore spec (13-683 lines).
    exp, run_dir = finished_run
    copy = _copy_run(run_dir, tmp_path)
    for f in (copy / "train" / "ckpt").rglob("*"):
        if f.is_file() and "ocdbt" in str(f.parent):
            f.write_bytes(b"\0garbage" * 16)
    proc = subprocess.run([sys.executable, "-m", "nas.cli", "measure", str(exp), "--run-dir", str(copy), "--force",
                           "--quiet"], cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 2, proc.stderr
    line = _one_error_line(proc.stderr)
    assert "corrupt" in line and "TensorStore" not in line and len(line) < 400


def test_a_failed_export_leaves_no_folders_behind(finished_run, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import nas.export
    from nas.measure import load_table

    exp, run_dir = finished_run
    ctx = prepare(exp, run_dir=run_dir)

    def failing(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202 - fails half-way, as a full disk would
        args[4].mkdir(parents=True)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(nas.export, "write_exported", failing)
    with pytest.raises(OSError):
        nas.export.export_one(ctx, load_table(ctx)[0], tmp_path / "new" / "deeper" / "member")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fmt", ["npz", "orbax"])
def test_every_shipped_format_is_checked_not_only_the_artefact(finished_run, tmp_path: Path, fmt: str,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer that damages the packed params while the StableHLO artefact is fine is caught at export."""
    import dataclasses

    import nas.export
    from nas import packing
    from nas.errors import StageError
    from nas.measure import load_table

    exp, run_dir = finished_run
    ctx = prepare(exp, run_dir=run_dir)
    ctx = dataclasses.replace(ctx, exp=dataclasses.replace(
        ctx.exp, export=dataclasses.replace(ctx.exp.export, formats=("stablehlo", fmt))))
    real = getattr(packing, f"save_{fmt}")

    def doubling(path, tree):  # every float array written twice its value
        real(path, [{k: a * 2 if a.dtype == np.float32 else a for k, a in layer.items()} for layer in tree])

    monkeypatch.setattr(packing, f"save_{fmt}", doubling)
    with pytest.raises(StageError, match=f"\\({fmt}\\): exported outputs differ"):
        nas.export.export_one(ctx, load_table(ctx)[0], tmp_path / "member")
    monkeypatch.setattr(packing, f"save_{fmt}", real)
    metrics = nas.export.export_one(ctx, load_table(ctx)[0], tmp_path / "member")
    assert metrics["export_checked"] == ["stablehlo", fmt]


def test_an_earlier_search_never_answers_for_the_current_chain(finished_run, tmp_path: Path) -> None:
    """Refitted predictors and validated rows left in RUN/search by a search before a retrain (or any new
    train, measure or fit) are not used: queries and the next search read the current fit's."""
    from nas.context import prepare
    from nas.measure import exact_metrics
    from nas.search import latest_predictors, measured_rows, search_key
    from search_spaces import config_key

    exp, run_dir = finished_run
    copy = _copy_run(run_dir, tmp_path)
    two = tmp_path / "two.toml"
    two.write_text(exp.read_text().replace("[search]", "[search]\nrounds = 2", 1))
    ctx = prepare(two, run_dir=copy)
    (copy / "search" / "round1").mkdir(exist_ok=True)
    (copy / "search" / "round1" / "quality.json").write_text("{}")
    measured = {json.loads(x)["key"] for x in (copy / "measure" / "table.jsonl").read_text().splitlines()}
    config = next(c for c in ctx.space.enumerate() if config_key(c) not in measured)
    row = {"key": config_key(config), "config": config, "accuracy": 0.5, "latency_ms": 0.01,
           **exact_metrics(ctx, config)}
    (copy / "search" / "validated.jsonl").write_text(json.dumps(row) + "\n")
    (copy / "search" / "fit_id.txt").unlink()
    (copy / "search" / "fingerprint.txt").write_text(search_key(ctx) + "\n")  # a search from before fit_id.txt
    assert latest_predictors(ctx) == copy / "search" / "round1" and row["key"] in measured_rows(ctx)
    (copy / "search" / "fit_id.txt").write_text(ctx.stamp_id("fit") + "\n")
    assert latest_predictors(ctx) == copy / "search" / "round1" and row["key"] in measured_rows(ctx)
    assert main(["fit", str(two), "--run-dir", str(copy), "--force", "--quiet"]) == 0  # a new fit: the chain moves on
    assert latest_predictors(ctx) == copy / "fit" and row["key"] not in measured_rows(ctx)


def test_a_larger_validate_top_measures_more_of_the_same_front(finished_run, tmp_path: Path, capsys) -> None:
    exp, run_dir = finished_run
    copy = _copy_run(run_dir, tmp_path)
    first = json.loads((copy / "search" / "round0.done.json").read_text())
    assert first["newly_measured"] == len((copy / "search" / "validated.jsonl").read_text().splitlines()) <= \
        first["validated"]
    # From validate_top = 1: the fixture's predicted front, timed on a loaded machine, was once only the 4
    # its validate_top measures, which left "more" nothing to measure.
    fewer = tmp_path / "fewer.toml"
    fewer.write_text(exp.read_text().replace("validate_top = 4", "validate_top = 1", 1))
    assert main(["search", str(fewer), "--run-dir", str(copy), "--quiet"]) == 0
    before = json.loads((copy / "search" / "round0.done.json").read_text())
    assert before["trials"] == first["trials"] and before["validated"] == 1 and before["newly_measured"] == 0
    before_rows = len((copy / "search" / "validated.jsonl").read_text().splitlines())
    more = tmp_path / "more.toml"
    more.write_text(exp.read_text().replace("validate_top = 4", "validate_top = 12", 1))
    assert main(["search", str(more), "--run-dir", str(copy), "--quiet"]) == 0
    after = json.loads((copy / "search" / "round0.done.json").read_text())
    assert after["trials"] == before["trials"]  # the same study, not searched again
    assert after["validate_top"] == 12 and after["validated"] == min(12, after["predicted_front"])
    assert before["predicted_front"] > 1 and after["validated"] > before["validated"]
    rows = (copy / "search" / "validated.jsonl").read_text().splitlines()
    # Members measured before (the first run's 4, the table's rows) are validated, not measured again, and not
    # counted as measured: the search's summary summed "validated" over rounds.
    assert after["newly_measured"] == len(rows) - before_rows < after["validated"]
    rounds = json.loads((copy / "search" / "rounds.json").read_text())
    assert json.loads((copy / "search" / "stamp.json").read_text())["newly_measured"] == sum(
        r["newly_measured"] for r in rounds) < sum(r["validated"] for r in rounds)


@pytest.mark.parametrize("damage", ["[1, 2]", '{"not": "a list"}', '[{"key": "k"}]'])
def test_a_damaged_measured_front_is_one_line_for_export(finished_run, tmp_path: Path, capsys, damage: str) -> None:
    exp, run_dir = finished_run
    copy = _copy_run(run_dir, tmp_path)
    (copy / "search" / "front.json").write_text(damage)
    assert main(["export", str(exp), "--run-dir", str(copy), "--force", "--quiet"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "front.json" in line and "nas search --force" in line


def test_damaged_bookkeeping_files_are_not_tracebacks(tmp_path: Path) -> None:
    """A stage folder's marker and the workers' shared files hold bytes or JSON of the wrong shape: the
    folder counts as another run's (emptied), the shared files as empty."""
    from nas.context import prepare
    from nas.workers import LiveHolders

    ctx = prepare(write_tiny(tmp_path), run_dir=tmp_path / "run")
    (tmp_path / "run" / "fit").mkdir(parents=True)
    (tmp_path / "run" / "fit" / "fingerprint.txt").write_bytes(b"\xff\xfe\x00")
    (tmp_path / "run" / "fit" / "old.json").write_text("{}")
    ctx.begin("fit")
    assert not (tmp_path / "run" / "fit" / "old.json").exists()
    for content in (b"\xff\xfe", b"[1, 2]", b'{"k": [1]}'):
        (tmp_path / "workers.json").write_bytes(content)
        assert LiveHolders(tmp_path / "workers.json", "k").others() == {}


def test_the_exported_front_is_refused_after_an_earlier_stage_ran_again(finished_run, tmp_path: Path,
                                                                       capsys) -> None:
    """A retrain, measurement or fit since the search (each stamp names the one it was made after): the
    exported members describe another supernet, so the query says so rather than answering."""
    exp, run_dir = finished_run
    copy = _copy_run(run_dir, tmp_path)
    assert main(["query", str(copy), "--budget", "size_kb=8"]) == 0
    capsys.readouterr()
    stamp = json.loads((copy / "fit" / "stamp.json").read_text())
    (copy / "fit" / "stamp.json").write_text(json.dumps({**stamp, "id": "a-fit-run-since"}))
    assert main(["query", str(copy), "--budget", "size_kb=8"]) == 2
    assert "stage 'fit' ran again" in _one_error_line(capsys.readouterr().err)


def test_with_several_rounds_trials_and_validate_top_key_a_new_search(tmp_path: Path) -> None:
    from nas.context import prepare
    from nas.search import search_key

    def key(rounds: int, trials: int, top: int) -> str:
        folder = tmp_path / f"{rounds}-{trials}-{top}"
        folder.mkdir()
        text = write_tiny(folder, trials=trials).read_text().replace("validate_top = 4", f"validate_top = {top}")
        (folder / "tiny.toml").write_text(text.replace("[search]", f"[search]\nrounds = {rounds}", 1))
        return search_key(prepare(folder / "tiny.toml", run_dir=tmp_path / "run"))

    assert key(1, 40, 4) == key(1, 80, 8)  # one round: more trials extend the study, more validation re-measures
    assert len({key(2, 40, 4), key(2, 80, 4), key(2, 40, 8)}) == 3


def _npz_experiment(tmp_path: Path) -> Path:
    """The tiny experiment on an npz data file at tmp_path/data/d.npz (path relative to the experiment)."""
    from conftest import write_tiny

    rng = np.random.default_rng(0)
    (tmp_path / "data").mkdir()
    np.savez(tmp_path / "data" / "d.npz", x_train=rng.normal(size=(80, 8)).astype(np.float32),
             y_train=np.arange(80) % 3, x_test=rng.normal(size=(30, 8)).astype(np.float32), y_test=np.arange(30) % 3)
    exp = write_tiny(tmp_path)
    exp.write_text(exp.read_text().replace('dataset = "digits"', 'dataset = "npz"\npath = "data/d.npz"'))
    return exp


def test_a_moved_data_file_keeps_the_run_current(tmp_path: Path) -> None:
    """Data counts by its content: after the npz file (and the experiment's path to it) moved, the
    stamped stages stay current and the query's context is the run's (stamped by hand, no training)."""
    from nas.context import prepare
    from nas.pipeline import describe_run, open_run_dir
    from nas.query import run_context

    exp = _npz_experiment(tmp_path)
    run = tmp_path / "run"
    ctx = prepare(exp, run_dir=run)
    open_run_dir(ctx)
    describe_run(ctx)
    for stage in ("train", "measure", "fit"):
        ctx.mark_done(stage, {})
    (tmp_path / "data").rename(tmp_path / "moved")
    exp.write_text(exp.read_text().replace("data/d.npz", "moved/d.npz"))
    moved = prepare(exp, run_dir=run)
    assert moved.first_stale("fit") is None
    # The run's copy names the old path: it serves with the data path the experiment file names now,
    # and nothing else of that file (edited since: another name, other trials).
    exp.write_text(exp.read_text().replace('name = "tiny"', 'name = "other"').replace("trials = 40", "trials = 5"))
    again = run_context(run)
    assert again.first_stale("fit") is None and str(again.exp.data.path).endswith("moved/d.npz")
    assert again.exp.name == "tiny" and again.exp.search.trials == 40
    exp.write_text(exp.read_text().replace('name = "other"', 'name = "tiny"').replace("trials = 5", "trials = 40"))
    with np.load(tmp_path / "moved" / "d.npz") as data:
        arrays = dict(data)
    np.savez(tmp_path / "moved" / "d.npz", **{**arrays, "y_train": arrays["y_train"][::-1]})
    assert prepare(exp, run_dir=run).first_stale("fit") == "train"  # other data: stale


def test_data_changed_as_training_begins_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The stamp names the data the stage began with: a file rewritten under it fails the stage."""
    import nas.train
    from nas.context import prepare
    from nas.errors import StageError
    from nas.pipeline import run_stage

    exp = _npz_experiment(tmp_path)
    loaded = nas.train.load_data

    rewrites = []

    def load_then_rewrite(config):  # another process rewrites the file just after it was read, once
        splits = loaded(config)
        if not rewrites:
            with np.load(config.path) as data:
                arrays = dict(data)
            np.savez(config.path, **{**arrays, "y_train": arrays["y_train"][::-1]})
            rewrites.append(config.path)
        return splits

    monkeypatch.setattr(nas.train, "load_data", load_then_rewrite)
    ctx = prepare(exp, run_dir=tmp_path / "run")
    with pytest.raises(StageError, match="changed as the train stage began"):
        run_stage(ctx, "train", quiet=True)
    assert not ctx.is_current("train")
    run_stage(ctx, "train", quiet=True)  # the same context, run again: the data as it is now
    assert ctx.is_current("train") and prepare(exp, run_dir=tmp_path / "run").is_current("train")


def test_nas_run_with_every_stage_current_describes_the_run_again(tmp_path: Path) -> None:
    """The experiment moved (every stage current): `nas run` skips them all and the run's copy and
    run.json follow, so queries read the experiment `nas run` just checked (stamped by hand)."""
    from nas.context import STAGES, prepare
    from nas.pipeline import describe_run, open_run_dir, run_all

    exp = _npz_experiment(tmp_path)
    run = tmp_path / "run"
    ctx = prepare(exp, run_dir=run)
    open_run_dir(ctx)
    describe_run(ctx)
    for stage in STAGES:
        ctx.mark_done(stage, {})
    moved = tmp_path / "project"
    moved.mkdir()
    (tmp_path / "data").rename(moved / "data")
    exp.rename(moved / exp.name)
    ctx = prepare(moved / exp.name, run_dir=run)
    parsed = (moved / exp.name).read_bytes()
    (moved / exp.name).write_text("edited after it was read\n")  # the copy is what the stages were given
    assert all(r == "skipped" for k, r in run_all(ctx, quiet=True).items() if k != "wall_s")
    assert json.loads((run / "run.json").read_text())["experiment"] == str((moved / exp.name).resolve())
    assert (run / "experiment.toml").read_bytes() == parsed


def test_a_subfolder_it_cannot_enter_does_not_hide_the_other_runs(tmp_path: Path, monkeypatch) -> None:
    runs = tmp_path / "runs"
    for name in ("a", "b"):
        (runs / name).mkdir(parents=True)
        (runs / name / "run.json").write_text("{}")
    real = Path.is_file

    def is_file(self: Path) -> bool:
        if self.parent.name == "a":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "is_file", is_file)
    assert nas.pipeline.runs_inside(runs) == [runs / "b" / "run.json"]
