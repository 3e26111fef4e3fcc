"""A finished search round's files deleted since are written again; failing `--workers N` stops its workers quietly."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_search import copy_run, experiment

from conftest import REPO
from nas.cli import main

ROUNDS = "rounds = 3\n"


@pytest.fixture(scope="module")
def searched(tmp_path_factory) -> tuple[Path, Path]:
    """(experiment, run directory) of a tiny run searched in three refit rounds."""
    folder = tmp_path_factory.mktemp("rounds")
    exp = experiment(folder, search=ROUNDS)
    run_dir = folder / "run"
    for stage in ("train", "measure", "fit", "search"):
        assert main([stage, str(exp), "--run-dir", str(run_dir), "--quiet"]) == 0
    return exp, run_dir


def round_files(search: Path) -> dict[str, bytes]:
    """What the rounds wrote: their markers, rounds.json, predicted fronts and refitted predictors."""
    names = ["rounds.json", *(f"round{r}.done.json" for r in range(3)),
             *(f"predicted_front_r{r}.json" for r in range(3))]
    files = {name: (search / name).read_bytes() for name in names if (search / name).is_file()}
    for r in (1, 2):
        files.update({p.relative_to(search).as_posix(): p.read_bytes() for p in (search / f"round{r}").rglob("*")
                      if p.is_file()})
    return files


@pytest.mark.parametrize("deleted", ["rounds.json", "round0.done.json", "round1.done.json", "round1", "round2",
                                     "predicted_front_r0.json", "predicted_front_r2.json"])
def test_a_deleted_round_file_is_written_again_as_it_was(searched, tmp_path: Path, deleted: str) -> None:
    """The round's marker was trusted: the round was skipped and its deleted file stayed missing (the search
    then failed on it), or, its marker deleted, the round was redone on later rounds' measurements too and
    rounds.json lost the later rounds."""
    exp, run_dir = searched
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    before = round_files(copy / "search")
    assert len([n for n in before if n.startswith("round1/")]) >= 3  # predictors and quality.json
    target = copy / "search" / deleted
    if target.is_dir():
        shutil.rmtree(target)
    else:
        target.unlink()
    assert main(["search", str(exp), "--run-dir", str(copy), "--quiet"]) == 0
    after = round_files(copy / "search")
    assert sorted(after) == sorted(before)
    # Refitted on the rows the round fitted on, not on later rounds' too: the same predictors.
    assert {n: after[n] for n in after if n != "rounds.json"} == {n: before[n] for n in before if n != "rounds.json"}
    assert json.loads(after["rounds.json"]) == json.loads(before["rounds.json"])
    stamp = json.loads((copy / "search" / "stamp.json").read_text())
    assert stamp["hypervolume_per_round"] == [r["hypervolume"] for r in json.loads(before["rounds.json"])]


@pytest.mark.parametrize("damaged", ["rounds.json", "predicted_front_r1.json"])
def test_a_damaged_round_file_names_advice_that_works(searched, tmp_path: Path, capsys, damaged: str) -> None:
    """The error named `nas search --force`, which read the same file and failed the same way."""
    exp, run_dir = searched
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    before = round_files(copy / "search")
    (copy / "search" / damaged).write_text('[{"no": "round"}]')
    assert main(["search", str(exp), "--run-dir", str(copy), "--force", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("delete it and run `nas search` again, which writes it again") and "\n" not in err
    (copy / "search" / damaged).unlink()
    assert main(["search", str(exp), "--run-dir", str(copy), "--quiet"]) == 0
    after = round_files(copy / "search")
    assert {n: after[n] for n in after if n != "rounds.json"} == {n: before[n] for n in before if n != "rounds.json"}
    assert json.loads(after["rounds.json"]) == json.loads(before["rounds.json"])


def test_a_round_whose_measurements_were_deleted_is_measured_again(searched, tmp_path: Path) -> None:
    """validated.jsonl deleted: the rounds' markers were trusted and the measured front was the table's alone."""
    exp, run_dir = searched
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    validated = copy / "search" / "validated.jsonl"
    keys = [json.loads(line)["key"] for line in validated.read_text().splitlines()]
    validated.unlink()
    assert main(["search", str(exp), "--run-dir", str(copy), "--quiet"]) == 0
    assert sorted(json.loads(line)["key"] for line in validated.read_text().splitlines()) == sorted(keys)
    rounds = json.loads((copy / "search" / "rounds.json").read_text())
    assert [r["round"] for r in rounds] == [0, 1, 2]


SLOW_START = """import sys, time
if "--spawned" in sys.argv:  # a spawned search worker: still starting up when its parent fails
    time.sleep(30)
"""


def test_a_failing_parent_stops_its_starting_workers_quietly(searched, tmp_path: Path) -> None:
    """`nas search --workers 3` that fails (no subnet meets the budget) while its workers are still
    starting up (kept there by a sitecustomize, as a loaded machine keeps them in their imports): they
    got SIGINT and each printed a KeyboardInterrupt traceback, and the experiment text handed to them
    stayed behind."""
    exp = experiment(tmp_path, budgets='[[budgets]]\nmetric = "latency_ms"\nmax = 1e-9\n')  # predicted: searched
    copy = copy_run(searched[1], tmp_path)
    slow = tmp_path / "slow"
    slow.mkdir()
    (slow / "sitecustomize.py").write_text(SLOW_START)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(slow), str(REPO)])}
    # SIGINT as from a terminal even when the tests run as a background job (which starts them with it
    # ignored): it would reach the workers' start-up, were they sent it.
    t0 = time.time()
    done = subprocess.run([sys.executable, "-m", "nas.cli", "search", str(exp), "--run-dir", str(copy),
                           "--workers", "3", "--quiet"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert done.returncode == 1, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no subnet meets the budgets"), done.stderr[-2000:]
    assert time.time() - t0 < 30  # the workers were stopped, not waited for
    assert not list((copy / "search").glob(".experiment.*"))


class _Worker:
    """A spawned worker stand-in that records the signal it was sent."""

    def __init__(self, running: bool) -> None:
        self.running, self.sent = running, []

    def poll(self) -> int | None:
        return None if self.running else 0

    def send_signal(self, sig: int) -> None:
        self.sent.append(sig)

    def wait(self, timeout: float | None = None) -> int:
        return 0


def test_workers_get_sigint_only_when_the_user_interrupted() -> None:
    from nas.search import stop_workers

    for error, expected in ((RuntimeError("a failure"), signal.SIGTERM), (KeyboardInterrupt(), signal.SIGINT)):
        workers = [_Worker(True), _Worker(False)]
        stop_workers(workers, error)
        assert [w.sent for w in workers] == [[expected], []]
    # A clean-up failing while the interrupt unwound (a lock file gone, say) is still the user's interrupt.
    try:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise OSError("clean-up failed") from None
    except OSError as e:
        workers = [_Worker(True)]
        stop_workers(workers, e)
        assert workers[0].sent == [signal.SIGINT]


def test_a_spawned_worker_takes_sigterm_as_an_interrupt() -> None:
    """Past its start-up a spawned worker stopped by its failing parent frees its batch as on Ctrl-C."""
    from nas import interrupts

    before = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        interrupts.interrupt_on_sigterm()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)
            sum(range(1000))  # Python runs the handler at its next check
        with pytest.raises(KeyboardInterrupt):  # remembered, in case a gc callback swallowed it
            interrupts.raise_if_interrupted()
    finally:
        signal.signal(signal.SIGTERM, before)
        interrupts.interrupt_handled()


def test_a_members_prediction_is_the_round_that_proposed_it(tmp_path: Path) -> None:
    """The report's predicted-vs-measured plot took the last round's prediction, whose refit was trained
    on the member's own measurement (review: 0.1775 shown for a subnet round 0 predicted at 0.1535)."""
    from nas.search import proposed_predictions

    r0, r1 = tmp_path / "predicted_front_r0.json", tmp_path / "predicted_front_r1.json"
    r0.write_text(json.dumps([{"key": "a", "predicted": {"accuracy": 0.1535}}]))
    r1.write_text(json.dumps([{"key": "a", "predicted": {"accuracy": 0.1775}},
                              {"key": "b", "predicted": {"accuracy": 0.3}}]))
    assert proposed_predictions([r0, r1]) == {"a": {"accuracy": 0.1535}, "b": {"accuracy": 0.3}}
