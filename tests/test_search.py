"""Search at scale: several objectives and budgets (extra latency targets included), samplers,
warm start, the predictor-refit loop with hypervolume per round, and workers sharing a study."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import optuna
import pytest

from conftest import REPO, TINY
from nas.cli import main
from nas.workers import run_worker

BASE = dict(steps=40, checkpoint_every=20, trials=60, budgets="")


def experiment(folder: Path, name: str = "srch", *, search: str = "", objectives: str | None = None,
               budgets: str = "", **fmt) -> Path:
    """The tiny experiment with a batch-1 latency target, extra [search] keys, objectives and budgets."""
    text = TINY.format(name=name, **{**BASE, **fmt, "budgets": budgets})
    text = text.replace("min_time_ms = 0.3\n", 'min_time_ms = 0.3\n\n[[measure.targets]]\nname = "b1"\n'
                        'device = "cpu"\nbatch_size = 1\n')
    text = text.replace("validate_top = 4\n", "validate_top = 4\n" + search)
    if objectives is not None:
        head, _, _ = text.partition("[[objectives]]")
        _, _, tail = text.partition("[export]")
        text = head + objectives + "\n" + budgets + "\n[export]" + tail
    path = folder / f"{name}.toml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny run with train, measure (two latency targets) and fit done."""
    folder = tmp_path_factory.mktemp("search")
    exp = experiment(folder)
    run_dir = folder / "run"
    for stage in ("train", "measure", "fit"):
        assert main([stage, str(exp), "--run-dir", str(run_dir), "--quiet"]) == 0
    return exp, run_dir


def copy_run(run_dir: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(run_dir, dst, ignore=shutil.ignore_patterns("search"))
    return dst


def complete_trials(ctx, round_: int = 0) -> list:
    from nas.search import storage_url, study_name

    study = optuna.load_study(study_name=study_name(ctx, round_), storage=storage_url(ctx))
    return study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))


def test_measure_records_every_latency_target(fitted) -> None:
    _, run_dir = fitted
    rows = [json.loads(x) for x in (run_dir / "measure" / "table.jsonl").read_text().splitlines()]
    for r in rows:
        assert r["latency_ms"] > 0 and r["latency_ms@b1"] > 0 and r["latency_iqr_ms@b1"] >= 0
        assert r["flops"] == 2 * r["macs"] and r["peak_act_kb"] > 0
    assert (run_dir / "fit" / "latency_ms@b1.json").is_file()
    device = json.loads((run_dir / "measure" / "device.json").read_text())
    assert device["latency_ms@b1"]["batch_size"] == 1 and device["latency_ms"]["batch_size"] == 8


def test_four_objectives_and_three_budgets_hold_on_the_measured_front(fitted, tmp_path: Path) -> None:
    exp0, run_dir = fitted
    objectives = "".join(f'[[objectives]]\nmetric = "{m}"\n' for m in ("accuracy", "latency_ms", "latency_ms@b1",
                                                                       "size_kb"))
    budgets = ('[[budgets]]\nmetric = "size_kb"\nmax = 3.0\n[[budgets]]\nmetric = "peak_act_kb"\nmax = 0.5\n'
               '[[budgets]]\nmetric = "accuracy"\nmin = 0.2\n')
    exp = experiment(tmp_path, objectives=objectives, budgets=budgets)
    copy = copy_run(run_dir, tmp_path)
    assert main(["search", str(exp), "--run-dir", str(copy), "--quiet"]) == 0
    front = json.loads((copy / "search" / "front.json").read_text())
    assert front
    for r in front:
        assert r["size_kb"] <= 3.0 and r["peak_act_kb"] <= 0.5 and r["accuracy"] >= 0.2
    # Non-dominated on all four objectives.
    keys = [(-r["accuracy"], r["latency_ms"], r["latency_ms@b1"], r["size_kb"]) for r in front]
    for a in keys:
        assert not any(all(x <= y for x, y in zip(b, a)) and b != a for b in keys)
    # Read back with Optuna's own journal backend, as optuna-dashboard opens the file: the study names
    # its objectives (the dashboard labels its axes with them; unnamed, "Objective 0" ...).
    import optuna

    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(
        str(copy / "search" / "study.journal")))
    (summary,) = optuna.get_all_study_summaries(storage)
    study = optuna.load_study(study_name=summary.study_name, storage=storage)
    assert study.metric_names == ["accuracy", "latency_ms", "latency_ms@b1", "size_kb"]


def test_a_budget_the_measured_subnets_miss_is_an_answer_not_a_crash(fitted, tmp_path: Path, capsys) -> None:
    exp0, run_dir = fitted
    # Predicted subnets may look feasible, but no measured one reaches this accuracy.
    exp = experiment(tmp_path, budgets='[[budgets]]\nmetric = "accuracy"\nmin = 0.99\n')
    copy = copy_run(run_dir, tmp_path)
    assert main(["search", str(exp), "--run-dir", str(copy), "--quiet"]) == 1
    assert "meets the budgets" in capsys.readouterr().err


def test_worker_slots_are_distinct_and_lapse_with_their_process(tmp_path: Path) -> None:
    import socket

    from nas.workers import worker_slot

    lock, registry = tmp_path / "study.lock", tmp_path / "workers.json"
    with worker_slot(lock, "s") as first:
        assert first == 0
    assert json.loads(registry.read_text()) == {"s": {}}  # released on exit
    # A live process (our parent) holds slot 0, a process that has exited held slot 1.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    live = f"{socket.gethostname()}:{os.getppid()}"
    registry.write_text(json.dumps({"s": {live: 0, f"{socket.gethostname()}:{dead}": 1}}))
    with worker_slot(lock, "s") as mine, worker_slot(lock, "other") as elsewhere:
        assert (mine, elsewhere) == (1, 0)
    assert json.loads(registry.read_text())["s"] == {live: 0}


@pytest.mark.parametrize("sampler", ["nsga2", "nsga3", "tpe", "random"])
def test_samplers_are_seeded_and_finish_exactly(fitted, tmp_path: Path, sampler: str) -> None:
    from nas.context import prepare

    exp0, run_dir = fitted
    runs = []
    for k in range(2):
        folder = tmp_path / f"r{k}"
        folder.mkdir()
        exp = experiment(folder, search=f'sampler = "{sampler}"\nseed = 3\n')
        copy = copy_run(run_dir, folder)
        assert main(["search", str(exp), "--run-dir", str(copy), "--quiet"]) == 0
        trials = complete_trials(prepare(exp, run_dir=copy))
        assert len(trials) == 60
        runs.append([t.params for t in trials])
    assert runs[0] == runs[1]


def test_warm_start_configs_are_tried_first(fitted, tmp_path: Path) -> None:
    from nas.context import prepare

    _, run_dir = fitted
    warm = 'warm_start = [{depth = 1, "width.0" = 16, "bits.0" = 8, "width.1" = 32, "bits.1" = 32, "bits.out" = 4}]\n'
    exp = experiment(tmp_path, search=warm)
    copy = copy_run(run_dir, tmp_path)
    assert main(["search", str(exp), "--run-dir", str(copy), "--quiet"]) == 0
    first = complete_trials(prepare(exp, run_dir=copy))[0]
    assert first.user_attrs["config"] == {"depth": 1, "width.0": 16, "bits.0": 8, "width.1": 32, "bits.1": 32,
                                          "bits.out": 4}


def test_warm_start_outside_the_space_is_a_config_error(fitted, tmp_path: Path, capsys) -> None:
    warm = 'warm_start = [{depth = 1, "width.0" = 12, "bits.0" = 8, "width.1" = 32, "bits.1" = 32, "bits.out" = 4}]\n'
    exp = experiment(tmp_path, search=warm)
    assert main(["validate", str(exp)]) == 2
    assert capsys.readouterr().err.startswith("error: search.warm_start[0].width.0: 12 is not one of")


def test_refit_rounds_track_hypervolume(fitted, tmp_path: Path) -> None:
    exp = experiment(tmp_path, search="rounds = 3\n")
    copy = copy_run(fitted[1], tmp_path)
    assert main(["search", str(exp), "--run-dir", str(copy), "--quiet"]) == 0
    rounds = json.loads((copy / "search" / "rounds.json").read_text())
    assert [r["round"] for r in rounds] == [0, 1, 2]
    # Units of the measure table's objective box: searched subnets may beat its best, so > 1 is possible.
    assert all(r["hypervolume"] > 0 for r in rounds)
    # Each round adds its measured front members to what later rounds fit on and count.
    assert rounds[0]["measured"] <= rounds[1]["measured"] <= rounds[2]["measured"]
    assert rounds[0]["hypervolume"] <= rounds[1]["hypervolume"] <= rounds[2]["hypervolume"]
    assert (copy / "search" / "round1" / "accuracy.json").is_file()
    assert "predictor_quality" in rounds[0] and "predictor_quality" not in rounds[2]
    # Queries of the run ask the last refit round's predictors, the ones fitted on the most measurements.
    from nas.context import prepare
    from nas.search import latest_predictors

    assert latest_predictors(prepare(exp, run_dir=copy)) == copy / "search" / "round2"


def test_workers_option_finishes_exactly_the_requested_trials(fitted, tmp_path: Path, capsys) -> None:
    from nas.context import prepare

    exp = experiment(tmp_path, trials=300)
    copy = copy_run(fitted[1], tmp_path)
    assert main(["search", str(exp), "--run-dir", str(copy), "--workers", "2", "--quiet"]) == 0
    trials = complete_trials(prepare(exp, run_dir=copy))
    assert len(trials) == 300
    assert len({t.user_attrs["uid"] for t in trials}) == 300
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    mine = printed["this_worker"]
    assert mine["index"] == 0 and mine["trials"] == sum(t.user_attrs["worker"] == 0 for t in trials)
    stamp = json.loads((copy / "search" / "stamp.json").read_text())
    assert "this_worker" not in stamp and stamp["trials"] == 300
    assert stamp["workers"] == len({t.user_attrs["worker"] for t in trials})
    # The experiment text handed to the workers is removed once they are done (it piled up per search).
    assert not [p for p in (copy / "search").iterdir() if "experiment" in p.name] and "experiment" not in str(
        stamp["outputs"])
    # A worker that finds the search stamped by another prints the stamped summary, not the stamp's
    # bookkeeping (fingerprint, outputs, ...), which a spawned worker finishing second printed.
    from nas.search import search

    again = search(prepare(exp, run_dir=copy), quiet=True, spawned=True)
    assert again["trials"] == 300 and again["this_worker"]["trials"] == 0
    assert not {"fingerprint", "id", "after", "outputs"} & set(again), sorted(again)


def test_spawned_workers_use_the_experiment_as_their_parent_read_it(fitted, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The file edited after `nas search --workers N` began (trials 300 -> 600): its workers still run
    the parent's 300 (they re-read the file before, and ran a study of 600 under a stamp of 300)."""
    from nas.config import load_experiment
    from nas.context import prepare
    from nas.search import SPAWNED_TEXT, spawn_workers

    exp = experiment(tmp_path, trials=300)
    text = exp.read_text()
    exp.write_text(text.replace("trials = 300", "trials = 600"))
    copy = copy_run(fitted[1], tmp_path)
    (tmp_path / "as_read.toml").write_text(text)
    env = {**os.environ, "PYTHONPATH": str(REPO), SPAWNED_TEXT: str(tmp_path / "as_read.toml")}
    done = subprocess.run([sys.executable, "-m", "nas.cli", "search", str(exp), "--run-dir", str(copy), "--quiet",
                           "--spawned"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-500:]
    assert len(complete_trials(prepare(load_experiment(exp, text=text), run_dir=copy))) == 300
    # And `--workers N` hands its workers that text (not the file as it reads now).
    started = []
    monkeypatch.setattr(subprocess, "Popen", lambda cmd, **kw: started.append((cmd, kw["env"])))
    ctx = prepare(load_experiment(exp, text=text), run_dir=copy)
    assert spawn_workers(ctx, 1) == [] and not list((copy / "search").glob("*experiment*"))  # none to hand it to
    spawn_workers(ctx, 3)
    assert len(started) == 2 and all(Path(env[SPAWNED_TEXT]).read_text() == text for _, env in started)


def test_a_killed_worker_not_yet_reaped_is_not_alive() -> None:
    import socket

    from nas.workers import _alive

    # `nas search --workers N` reaps its workers only at the end: one killed before that is a zombie,
    # which still answers kill(pid, 0). Its reservation must lapse, or the others wait for it for ever.
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    owner = f"{socket.gethostname()}:{child.pid}"
    try:
        assert _alive(owner)
        os.kill(child.pid, signal.SIGKILL)
        deadline = time.time() + 10
        while _alive(owner) and time.time() < deadline:
            time.sleep(0.05)
        assert not _alive(owner)
        assert Path(f"/proc/{child.pid}").exists(), "the child should still be unreaped (a zombie)"
    finally:
        child.kill()
        child.wait()


def test_a_reused_pid_does_not_keep_a_dead_workers_hold() -> None:
    import socket

    from nas.workers import START_FIELD, _alive, _stat_fields, me

    # A worker killed -9 whose pid another process took since (a container's restarted search is pid 1
    # again): by pid alone its reservation never lapsed and the other workers waited for ever.
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        started = _stat_fields(child.pid)[START_FIELD]
        assert started and started.isdigit()
        host = socket.gethostname()
        assert _alive(f"{host}:{child.pid}:{started}")
        assert not _alive(f"{host}:{child.pid}:{int(started) + 1}")  # the pid's earlier owner
        assert _alive(f"{host}:{child.pid}")  # an entry written without a start time: the pid decides
        assert me() == f"{host}:{os.getpid()}:{_stat_fields(os.getpid())[START_FIELD]}"
    finally:
        child.kill()
        child.wait()


def test_a_search_is_not_refused_for_its_own_pid(tmp_path: Path) -> None:
    from nas.workers import LiveHolders, me

    # An entry of this very process under other settings (a killed search of another experiment whose
    # host:pid:start a restarted container repeats): not "another search running".
    registry = tmp_path / "workers.json"
    registry.write_text(json.dumps({"another-key": {me(): 0}, "third": {"elsewhere:12:5": 1}}))
    assert LiveHolders(registry, "mine").under_other_keys() == {"third": ["elsewhere:12:5"]}


def test_warm_start_claims_of_another_host_lapse_with_their_lease(tmp_path: Path) -> None:
    import nas.workers as workers

    # A worker killed on another host (or in a container restarted under a new host name) held its
    # warm-start claims for good: those configs, the largest and smallest among them, were never tried.
    claims = tmp_path / "warm_claims.json"
    claims.write_text(json.dumps({"study": {"old-container:57:99": ['{"x": 7}']},
                                  workers.SINCE: {"study": {"old-container:57:99": time.time() - 1e4}}}))
    study = optuna.create_study(directions=["minimize"])
    storage = study._storage
    optuna.create_study(study_name="study", storage=storage, directions=["minimize"])
    tried = []

    def evaluate(configs: list[dict[str, int]]) -> tuple[list[list[float]], list[dict[str, float]]]:
        tried.extend(configs)
        return [[float(c["x"])] for c in configs], [{} for _ in configs]

    workers.run_worker(storage=storage, study_name="study", directions=["minimize"],
                       sampler=optuna.samplers.RandomSampler(seed=0),
                       suggest=lambda t: {"x": t.suggest_int("x", 0, 9)}, evaluate=evaluate, target=4, batch=2,
                       lock_path=tmp_path / "study.lock", warm_start=[{"x": 7}])
    assert tried[0] == {"x": 7}  # enqueued first, the stale claim lapsed


def test_a_search_with_other_settings_does_not_empty_a_running_one(fitted, tmp_path: Path, capsys) -> None:
    import socket

    from nas.context import prepare

    exp = experiment(tmp_path, trials=100)
    copy = copy_run(fitted[1], tmp_path)
    search = copy / "search"
    search.mkdir()
    (search / "fingerprint.txt").write_text("another-key\n")
    (search / "study.journal").write_text("the running search's trials\n")
    live = f"{socket.gethostname()}:{os.getppid()}"  # our parent: alive for the whole test
    (search / "workers.json").write_text(json.dumps({"another-key": {live: 0}}))
    (search / "stamp.json").write_text('{"id": "the running search\'s"}')
    described = {name: (copy / name).read_bytes() for name in ("experiment.toml", "run.json")}
    assert main(["search", str(exp), "--run-dir", str(copy), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "another `nas search` with other settings is running" in err and live in err and "\n" not in err
    assert "workers.json" not in err  # a worker on this machine: checked, no hint needed
    (search / "workers.json").write_text(json.dumps({"another-key": {"elsewhere:12": 0}}))
    assert main(["search", str(exp), "--run-dir", str(copy), "--quiet"]) == 2
    assert "if elsewhere:12 no longer runs, remove its entry from" in capsys.readouterr().err
    (search / "workers.json").write_text(json.dumps({"another-key": {live: 0}}))
    assert (search / "study.journal").read_text() == "the running search's trials\n"  # left alone
    # The run's description (what queries read) and the search's stamp are the running search's still.
    assert {name: (copy / name).read_bytes() for name in described} == described
    assert (search / "stamp.json").is_file()
    (search / "stamp.json").unlink()
    # Once that worker is gone (its entry lapses), the folder is the new search's.
    (search / "workers.json").write_text(json.dumps({"another-key": {f"{socket.gethostname()}:{2**22 + 1}": 0}}))
    assert main(["search", str(exp), "--run-dir", str(copy), "--quiet"]) == 0
    assert len(complete_trials(prepare(exp, run_dir=copy))) == 100


def test_a_search_finishing_still_holds_its_folder(fitted, tmp_path: Path, monkeypatch) -> None:
    import socket

    import nas.search as search_module

    # The worker slot was freed before the front was measured (tens of seconds): a search with other
    # settings started then saw no live worker and emptied the folder under the finishing one.
    exp = experiment(tmp_path, trials=60)
    copy = copy_run(fitted[1], tmp_path)
    real, seen = search_module.finish_search, []

    def finishing(ctx, **kwargs):  # noqa: ANN001, ANN003, ANN202
        # What another process, starting a search with other settings now, finds running.
        code = ("import sys; from pathlib import Path; from nas.workers import slot_holders; "
                "print(slot_holders(Path(sys.argv[1]), 'another-key').under_other_keys())")
        seen.append(subprocess.run([sys.executable, "-c", code, str(search_module.study_lock(ctx))], cwd=REPO,
                                   capture_output=True, text=True, check=True).stdout)
        return real(ctx, **kwargs)

    monkeypatch.setattr(search_module, "finish_search", finishing)
    assert main(["search", str(exp), "--run-dir", str(copy), "--quiet"]) == 0
    assert len(seen) == 1 and f"{socket.gethostname()}:{os.getpid()}" in seen[0], seen


def separate_processes_share_one_study(exp: Path, run_dir: Path, trials: int, processes: int = 3) -> None:
    """`processes` separate `nas search` commands on one run directory end with exactly `trials` trials,
    each as its own worker (its own sampler seed)."""
    from nas.context import prepare

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-m", "nas.cli", "search", str(exp), "--run-dir", str(run_dir),
                               "--quiet"], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(processes)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0] * processes, [o[1][-500:] for o in outs]
    found = complete_trials(prepare(exp, run_dir=run_dir))
    assert len(found) == trials
    assert len({t.user_attrs["uid"] for t in found}) == trials == len({t.number for t in found})
    parts = [json.loads(o[0].strip().splitlines()[-1]).get("this_worker") for o in outs]
    # A process that arrives after the study is complete is up to date and prints no part.
    parts = [p for p in parts if p is not None]
    assert (run_dir / "search" / "stamp.json").is_file() and sum(p["trials"] for p in parts) == trials
    busy = [p for p in parts if p["trials"]]
    assert len({p["index"] for p in busy}) == len(busy)
    assert {t.user_attrs["worker"] for t in found} == {p["index"] for p in busy}


def test_separate_processes_share_one_study_exactly(fitted, tmp_path: Path) -> None:
    exp = experiment(tmp_path, trials=400)
    separate_processes_share_one_study(exp, copy_run(fitted[1], tmp_path), 400)


@contextlib.contextmanager
def bound_port() -> Iterator[int]:
    """A free loopback port, bound and not listening for the duration (connections are refused)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


def _initdb() -> Path | None:
    """The machine's PostgreSQL `initdb` (PATH, else Debian's versioned folders, newest first)."""
    found = shutil.which("initdb")
    if found:
        return Path(found)
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]), reverse=True)
    return versions[0] if versions else None


@pytest.fixture(scope="module")
def postgres_url():
    """A throwaway PostgreSQL server on loopback, started from the machine's own binaries; its URL."""
    import pwd
    import tempfile

    initdb = _initdb()
    if initdb is None:
        pytest.skip("no PostgreSQL server binaries (initdb) on this machine")
    # The server refuses to run as root: then it runs as the "postgres" account, in a folder it owns
    # outside pytest's root-only temporary tree.
    user = None
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' account to run the server as")
    folder = Path(tempfile.mkdtemp(prefix="nas-pg-"))
    as_user = {"user": user.pw_uid, "group": user.pw_gid} if user else {}
    if user:
        os.chown(folder, user.pw_uid, user.pw_gid)
    with bound_port() as port:  # free now: the server binds it next
        pass
    data, pg_ctl = folder / "data", initdb.parent / "pg_ctl"
    subprocess.run([str(initdb), "-D", str(data), "-A", "trust", "-U", "nas", "--no-sync", "-E", "UTF8"],
                   check=True, capture_output=True, **as_user)
    subprocess.run([str(pg_ctl), "-D", str(data), "-l", str(folder / "log"), "-w", "-o",
                    f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off", "start"],
                   check=True, capture_output=True, **as_user)
    try:
        yield f"postgresql://nas@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([str(pg_ctl), "-D", str(data), "-m", "immediate", "stop"], capture_output=True, **as_user)
        shutil.rmtree(folder, ignore_errors=True)


def test_separate_processes_share_a_postgresql_study_exactly(fitted, tmp_path: Path, postgres_url: str) -> None:
    exp = experiment(tmp_path, trials=300, search=f'storage = "{postgres_url}"\n')
    separate_processes_share_one_study(exp, copy_run(fitted[1], tmp_path), 300)


def test_a_database_that_cannot_be_reached_is_one_clear_line(fitted, tmp_path: Path, capsys) -> None:
    with bound_port() as port:
        url = f"postgresql://nas:s3cret@127.0.0.1:{port}/postgres"
        exp = experiment(tmp_path, search=f'storage = "{url}"\n')
        assert main(["search", str(exp), "--run-dir", str(copy_run(fitted[1], tmp_path)), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: search storage postgresql://nas:***@127.0.0.1:{port}/postgres cannot be used")
    assert "s3cret" not in err and "\n" not in err


def test_a_database_without_its_driver_names_the_package(fitted, tmp_path: Path, capsys) -> None:
    import importlib.util

    if importlib.util.find_spec("pymysql") is not None:
        pytest.skip("pymysql is installed here: the missing-driver path cannot be reached with it")
    exp = experiment(tmp_path, search='storage = "mysql+pymysql://nas:s3cret@127.0.0.1:1/nas"\n')
    assert main(["search", str(exp), "--run-dir", str(copy_run(fitted[1], tmp_path)), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("error: search storage mysql+pymysql://nas:***@127.0.0.1:1/nas: its database driver is not "
                   "installed (pip install 'pymysql')")


def test_corrupt_study_storage_is_one_clear_line(fitted, tmp_path: Path, capsys) -> None:
    exp = experiment(tmp_path)
    copy = copy_run(fitted[1], tmp_path)
    assert main(["search", str(exp), "--run-dir", str(copy), "--quiet"]) == 0
    journal = copy / "search" / "study.journal"
    journal.write_bytes(journal.read_bytes()[:300] + b"\n{not json\n")
    assert main(["search", str(exp), "--run-dir", str(copy), "--force", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: search storage {journal} is unreadable (") and "move it away" in err
    assert "\n" not in err
    # As the message says: moved away, the search starts afresh and its round is done again on the
    # new study (the old round's marker, same settings, was reused before: an unmeasured front).
    marker = json.loads((copy / "search" / "round0.done.json").read_text())
    journal.rename(tmp_path / "old.journal")
    assert main(["search", str(exp), "--run-dir", str(copy), "--force", "--quiet"]) == 0
    again = json.loads((copy / "search" / "round0.done.json").read_text())
    assert again["study_trials"] != marker["study_trials"] and again["wall_s"] != marker["wall_s"]
    (tmp_path / "sq").mkdir()
    sqlite = experiment(tmp_path / "sq", search='storage = "sqlite"\n')
    db = copy / "search" / "study.db"
    capsys.readouterr()
    assert main(["search", str(sqlite), "--run-dir", str(copy), "--quiet"]) == 0
    db.write_bytes(os.urandom(5000))
    assert main(["search", str(sqlite), "--run-dir", str(copy), "--force", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()  # SQLAlchemy's message spans lines: flattened, not cut
    assert err.startswith(f"error: search storage {db} is unreadable (") and "\n" not in err
    assert err.endswith("); move it away to start the search afresh"), err


def test_a_torn_last_journal_line_is_cut_and_the_study_resumes(fitted, tmp_path: Path, capsys) -> None:
    """A worker killed mid-append tears the journal's last line; Optuna skips it but would append onto it,
    corrupting the study for good. The search cuts it and finishes the study with every other trial kept."""
    import optuna

    exp = experiment(tmp_path)
    copy = copy_run(fitted[1], tmp_path)
    assert main(["search", str(exp), "--run-dir", str(copy), "--quiet"]) == 0
    journal = copy / "search" / "study.journal"
    lines = journal.read_bytes().splitlines(keepends=True)
    journal.write_bytes(b"".join(lines[:-3]) + lines[-3][: len(lines[-3]) // 2])  # torn mid-line
    assert main(["search", str(exp), "--run-dir", str(copy), "--force", "--quiet"]) == 0
    assert "cut a torn last line" in capsys.readouterr().err
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    (summary,) = optuna.get_all_study_summaries(storage)
    study = optuna.load_study(study_name=summary.study_name, storage=storage)
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    assert len(done) == json.loads((copy / "search" / "round0.done.json").read_text())["trials"]


class _FakeProgram:
    """A compiled subnet stand-in: per-call time = its MACs x the machine's current slowness (no clock)."""

    def __init__(self, macs: int, machine: dict) -> None:
        self.macs, self.machine = macs, machine
        self.iterations, self.calls, self.compile_s = 10, 1, 0.0

    def run(self, n: int) -> float:
        return self.macs * 1e-6 * self.machine["slowness"] * n / 1e3

    def run_calls(self, n: int) -> float:
        return 0.1 * n / 1e3


@pytest.fixture()
def fake_timing(fitted, monkeypatch):
    """(ctx, model, splits, configs, machine) with subnet programs replaced by `_FakeProgram`s."""
    import nas.measure
    from nas.context import prepare
    from nas.data import load_data
    from nas.measure import load_table
    from nas.train import load_supernet

    exp, run_dir = fitted
    ctx = prepare(exp, run_dir=run_dir)
    machine = {"slowness": 1.0}
    monkeypatch.setattr(nas.measure, "compile_subnets", lambda ctx, model, configs, device, batch, *a, **k: [
        _FakeProgram(ctx.family.macs(ctx.space, c), machine) for c in configs])
    configs = [r["config"] for r in load_table(ctx)[:7]]
    return ctx, load_supernet(ctx), load_data(ctx.exp.data), configs, machine


def test_a_later_session_is_timed_in_the_reference_units(fake_timing) -> None:
    from nas.measure import measure_configs

    ctx, model, splits, configs, machine = fake_timing
    first = measure_configs(ctx, model, configs, splits.x_val, splits.y_val, on_row=lambda r: None, quiet=True)
    assert all("latency_session_scale" not in r for r in first)  # one chunk, no reference: it is the reference
    machine["slowness"] = 0.5  # a later session on a machine twice as fast
    later = measure_configs(ctx, model, configs[:3], splits.x_val, splits.y_val, on_row=lambda r: None, quiet=True,
                            reference=first)
    for r, before in zip(later, first):
        for at in ("", "@b1"):
            assert r[f"latency_session_scale{at}"] == pytest.approx(2.0)
            assert r[f"latency_ms{at}"] == pytest.approx(before[f"latency_ms{at}"])  # in the reference's units
    plain = measure_configs(ctx, model, configs[:3], splits.x_val, splits.y_val, on_row=lambda r: None, quiet=True)
    assert plain[0]["latency_ms"] == pytest.approx(0.5 * first[0]["latency_ms"])  # no reference: as timed


def test_chunks_after_the_first_are_timed_in_its_units(fake_timing, monkeypatch) -> None:
    import nas.measure
    from nas.measure import measure_configs

    ctx, model, splits, configs, _ = fake_timing
    monkeypatch.setattr(nas.measure, "TIMING_CHUNK", 3)
    rows = measure_configs(ctx, model, configs, splits.x_val, splits.y_val, on_row=lambda r: None, quiet=True)
    assert all("latency_session_scale" not in r and r["latency_attempts"] == 2 for r in rows[:3])  # timed twice
    assert all(r["latency_session_scale"] == pytest.approx(1.0) and r["latency_session_scale@b1"] == pytest.approx(1.0)
               for r in rows[3:])


def test_latency_only_rows_carry_no_accuracy(fake_timing) -> None:
    from nas.measure import measure_configs

    ctx, model, splits, configs, _ = fake_timing
    timed = measure_configs(ctx, model, configs[:3], None, None, on_row=lambda r: None, quiet=True)
    full = measure_configs(ctx, model, configs[:3], splits.x_val, splits.y_val, on_row=lambda r: None, quiet=True)
    assert all("accuracy" not in r and r["latency_ms"] > 0 and r["latency_ms@b1"] > 0 for r in timed)
    assert all(0 <= r["accuracy"] <= 1 for r in full)
    assert [r["size_kb"] for r in timed] == [r["size_kb"] for r in full]


def test_busy_seconds_leave_out_the_time_a_search_was_not_running() -> None:
    from nas.search import busy_seconds

    assert busy_seconds([]) == 0.0
    # Overlapping trials of one generation (or of two workers) count once; short gaps between
    # generations count in; the hour between a killed search and its resumption does not.
    spells = [(0.0, 2.0), (1.0, 3.0), (4.0, 6.0), (3600.0, 3601.5), (3601.0, 3605.0)]
    assert busy_seconds(spells) == pytest.approx(6.0 + 5.0)
    assert busy_seconds(spells, idle=1e9) == pytest.approx(3605.0)


def test_every_warm_start_config_is_tried_when_they_outnumber_a_generation(fitted, tmp_path: Path) -> None:
    from nas.context import prepare

    _, run_dir = fitted
    space = prepare(experiment(tmp_path, name="probe"), run_dir=tmp_path / "probe").space
    configs = space.enumerate()[1:-1:7][:6]  # neither the largest nor the smallest
    inline = ", ".join("{" + ", ".join(f'"{k}" = {v}' for k, v in c.items()) + "}" for c in configs)
    exp = experiment(tmp_path, search=f"warm_start = [{inline}]\n")
    exp.write_text(exp.read_text().replace("population_size = ", "population_size = 4\n# was: "))
    copy = copy_run(run_dir, tmp_path)
    assert main(["search", str(exp), "--run-dir", str(copy), "--quiet"]) == 0
    trials = sorted(complete_trials(prepare(exp, run_dir=copy)), key=lambda t: t.number)
    first = [t.user_attrs["config"] for t in trials[:8]]
    # The 6 listed, then the largest and the smallest: two generations of 4, none dropped.
    assert first == [*configs, space.largest(), space.smallest()]
    assert json.loads((copy / "search" / "stamp.json").read_text())["wall_s"] > 0  # the report's stage times


WARM_WORKER = '''
import json, sys, time
from pathlib import Path
import optuna
from nas.workers import run_worker

folder, index = Path(sys.argv[1]), int(sys.argv[2])
warm = [{"x": i, "y": (7 * i) % 50} for i in range(23)]
optuna.logging.set_verbosity(optuna.logging.WARNING)

def evaluate(configs):
    time.sleep(0.05)  # long enough for the two workers' batches to overlap
    return [[c["x"] + c["y"], c["x"] - c["y"]] for c in configs], [{} for _ in configs]

storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(folder / "j.log")))
run_worker(storage=storage, study_name="s", directions=["minimize", "minimize"],
           sampler=optuna.samplers.NSGAIISampler(population_size=5, seed=index),
           suggest=lambda t: {"x": t.suggest_categorical("x", list(range(50))),
                              "y": t.suggest_categorical("y", list(range(50)))},
           evaluate=evaluate, target=60, batch=5, lock_path=folder / "study.lock", warm_start=warm, worker=index)
'''


def test_two_workers_try_every_warm_start_config(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WARM_WORKER)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, str(script), str(tmp_path), str(i)], env=env) for i in range(2)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp_path / "j.log")))
    trials = optuna.load_study(study_name="s", storage=storage).get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(trials) == 60 and len({t.user_attrs["uid"] for t in trials}) == 60
    assert {t.user_attrs["worker"] for t in trials} == {0, 1}
    tried = [json.dumps(t.user_attrs["config"], sort_keys=True) for t in trials]
    for i in range(23):  # 23 warm configs, batches of 5, two workers: each tried, none by both
        key = json.dumps({"x": i, "y": (7 * i) % 50}, sort_keys=True)
        assert key in tried[:35], f"warm config {i} not among the first trials"
    # Enqueued trials carry their fixed parameters: the 23 listed configs, each once (ignoring the other
    # live worker's claims, both enqueued some: mutation testing found the comment above unchecked).
    warm = sorted((t.params["x"], t.params["y"]) for t in trials if "fixed_params" in t.system_attrs)
    assert warm == [(i, (7 * i) % 50) for i in range(23)]


def _worker_on(tmp_path: Path, evaluate, target: int) -> Callable[[], int]:  # noqa: ANN001
    return lambda: run_worker(
        storage=_journal(tmp_path), study_name="s", directions=["minimize", "minimize"],
        sampler=optuna.samplers.RandomSampler(seed=0),
        suggest=lambda t: {"x": t.suggest_categorical("x", list(range(50)))},
        evaluate=evaluate, target=target, batch=10, lock_path=tmp_path / "study.lock")


def _journal(tmp_path: Path) -> optuna.storages.BaseStorage:
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp_path / "j.log")))


def _count(tmp_path: Path) -> int:
    study = optuna.load_study(study_name="s", storage=_journal(tmp_path))
    return len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)))


def _plain(configs):  # noqa: ANN001, ANN202
    return [[c["x"], -c["x"]] for c in configs], [{} for _ in configs]


def test_an_interrupt_between_reserving_and_evaluating_frees_the_batch(tmp_path: Path) -> None:
    """Ctrl-C that lands in the progress callback, after this worker reserved its batch: the batch is
    freed (it stayed held by a live process, as long as the process lived, and others waited on it)."""
    from nas.workers import LiveHolders

    def interrupted(done: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_worker(storage=_journal(tmp_path), study_name="s", directions=["minimize", "minimize"],
                   sampler=optuna.samplers.RandomSampler(seed=0),
                   suggest=lambda t: {"x": t.suggest_categorical("x", list(range(50)))},
                   evaluate=_plain, target=20, batch=10, lock_path=tmp_path / "study.lock", on_progress=interrupted)
    assert LiveHolders(tmp_path / "reservations.json", "s").others() == {}
    held = json.loads((tmp_path / "reservations.json").read_text())
    assert not held.get("s"), held


def test_a_reservation_from_another_machine_lapses_with_its_lease(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker on another host killed mid-batch: its pid cannot be checked from here, so its slots are
    held for REMOTE_LEASE_S and then taken over (the survivors waited for ever before). The values stay
    plain counts, which a worker of the previous version sums; an entry such a worker wrote, with no
    time, lapses REMOTE_LEASE_S after this process first saw it."""
    import threading

    import nas.workers
    from nas.workers import REMOTE_LEASE_S, SINCE, LiveHolders

    path = tmp_path / "reservations.json"
    now = time.time()
    path.write_text(json.dumps({"s": {"elsewhere:1": 30, "elsewhere:2": 5, "elsewhere:3": 7},
                                SINCE: {"s": {"elsewhere:1": now - REMOTE_LEASE_S - 1, "elsewhere:2": now}}}))
    held = LiveHolders(path, "s", lease=REMOTE_LEASE_S)
    assert held.others() == {"elsewhere:2": 5, "elsewhere:3": 7}
    held.set(4)
    written = json.loads(path.read_text())
    assert written["s"][nas.workers.me()] == 4 and set(written[SINCE]["s"]) == {"elsewhere:2", nas.workers.me()}
    monkeypatch.setattr(nas.workers.time, "time", lambda: now + REMOTE_LEASE_S + 1)
    assert held.others() == {}
    monkeypatch.undo()
    assert LiveHolders(tmp_path / "workers.json", "s").others() == {}  # no lease: another host is trusted
    (tmp_path / "workers.json").write_text(json.dumps({"s": {"elsewhere:1": 0}}))
    assert LiveHolders(tmp_path / "workers.json", "s").others() == {"elsewhere:1": 0}
    path.write_text(json.dumps({"s": {"elsewhere:1": 30}, SINCE: {"s": {"elsewhere:1": now - 999}}}))
    worker = threading.Thread(target=_worker_on(tmp_path, _plain, 40), daemon=True)
    worker.start()
    worker.join(120)
    assert not worker.is_alive() and _count(tmp_path) == 40


def test_a_batch_that_outlived_its_lease_keeps_only_the_room_left(tmp_path: Path) -> None:
    """While this worker evaluated its batch, others (its lease run out) filled the study up to 35 of
    40: it keeps 5 of its 10 trials, so the study ends with exactly the requested number."""
    def evaluate(configs):  # noqa: ANN001, ANN202
        if not others_done:
            others_done.append(True)
            study = optuna.load_study(study_name="s", storage=_journal(tmp_path))
            dist = {"x": optuna.distributions.CategoricalDistribution(list(range(50)))}
            study.add_trials([optuna.trial.create_trial(params={"x": i}, distributions=dist, values=[i, -i],
                                                        user_attrs={"uid": f"other{i}"}) for i in range(35)])
        return _plain(configs)

    others_done: list[bool] = []
    added = _worker_on(tmp_path, evaluate, 40)()
    assert added == 5 and _count(tmp_path) == 40


def _spawned_workers(run_dir: Path) -> list[int]:
    """Pids of live `nas search --spawned` processes on `run_dir`."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            args = cmdline.read_bytes().split(b"\0")
            if b"--spawned" in args and str(run_dir).encode() in args:
                found.append(int(cmdline.parent.name))
    return found


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name)
def test_interrupting_the_parent_of_workers_stops_them_all(fitted, tmp_path: Path, sig: signal.Signals) -> None:
    from nas.context import prepare

    # Ctrl-C sent to `nas search --workers 2` alone (not its process group) left its batch reserved and
    # the spawned worker waiting on it for ever, the parent waiting on the worker.
    # More trials than the parent can finish before the spawned worker's start-up (jax's import, up to
    # tens of seconds on a loaded machine) is over: it runs ~700 trials/s alone. The resume below asks
    # for a few more than were finished instead (with one round, `trials` keeps the study).
    exp = experiment(tmp_path, trials=1_000_000)
    copy = copy_run(fitted[1], tmp_path)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    # Ctrl-C as from a terminal, even when this test runs as a background job (whose processes
    # inherit SIGINT ignored, and Python then leaves it ignored: the search would never stop).
    parent = subprocess.Popen([sys.executable, "-m", "nas.cli", "search", str(exp), "--run-dir", str(copy),
                               "--workers", "2", "--quiet"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True,
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    journal = copy / "search" / "study.journal"
    deadline = time.time() + 120
    def both_running() -> bool:  # the spawned worker past its start-up, its trials in the study
        text = journal.read_text() if journal.is_file() else ""
        return '"worker": 1' in text or '"worker":1' in text

    while time.time() < deadline and not both_running():
        time.sleep(0.2)
    # SIGTERM (a `kill`, a scheduler) ended the parent at once, and SIGKILL does: the spawned worker
    # then ran the whole study on its own. It now stops, its batch freed, as on Ctrl-C.
    workers = _spawned_workers(copy)
    assert len(workers) == 1, workers
    parent.send_signal(sig)
    _, err = parent.communicate(timeout=240)  # it waits up to 60 s for its worker to stop
    if sig == signal.SIGKILL:
        assert parent.returncode == -signal.SIGKILL
        deadline = time.time() + 60
        while _spawned_workers(copy) and time.time() < deadline:
            time.sleep(0.2)
        assert not _spawned_workers(copy), "the orphaned worker runs on"
    else:
        assert parent.returncode == 130 and err.count("interrupted") == 1, err[-500:]
        assert not _spawned_workers(copy)
    reservations = json.loads((copy / "search" / "reservations.json").read_text())
    from nas.workers import SINCE, _alive, owner_name

    holders = [owner for key, entries in reservations.items() if key != SINCE
               for owner, held in entries.items() if held]
    # The parent frees its batch wherever the interrupt found it, and so does the worker, unless it
    # had to be killed (a minute later, on a loaded machine): its entry then lapses with its process.
    if sig != signal.SIGKILL:  # a parent killed -9 frees nothing itself: its entry lapses with it
        assert f"{socket.gethostname()}:{parent.pid}" not in [owner_name(o) for o in holders], reservations
    assert not [o for o in holders if _alive(o)], (reservations, parent.pid)
    done = len(complete_trials(prepare(exp, run_dir=copy)))
    assert done > 0
    exp = experiment(tmp_path, trials=done + 300)
    assert main(["search", str(exp), "--run-dir", str(copy), "--quiet"]) == 0
    trials = complete_trials(prepare(exp, run_dir=copy))
    assert len(trials) == done + 300 and len({t.user_attrs["uid"] for t in trials}) == done + 300


def test_sampler_seeds_differ_where_the_old_formula_repeated_itself() -> None:
    from nas.search import sampler_seed

    assert sampler_seed(1, 0, 0) != sampler_seed(1 + 2**29, 0, 0)
    assert sampler_seed(0, 0, 11) != sampler_seed(1, 67, 0)
    assert sampler_seed(3, 0, 0) == sampler_seed(3, 0, 0, 0) != sampler_seed(3, 0, 0, 60)
    assert all(0 <= sampler_seed(2**32 - 1, w, r, 10**6) < 2**32 for w in (0, 63) for r in (0, 50))


def test_an_extended_random_search_does_not_replay_its_first_trials(fitted, tmp_path: Path) -> None:
    """Raising `trials` resumes the study with a new stream: with the seed alone the random sampler drew
    the same configs again, trial 60 + i repeating trial 2 + i (after the two warm starts)."""
    from nas.context import prepare

    _, run_dir = fitted
    exp = experiment(tmp_path, search='sampler = "random"\nseed = 3\n')
    copy = copy_run(run_dir, tmp_path)
    assert main(["search", str(exp), "--run-dir", str(copy), "--quiet"]) == 0
    exp.write_text(exp.read_text().replace("trials = 60", "trials = 118"))
    assert main(["search", str(exp), "--run-dir", str(copy), "--quiet"]) == 0
    params = [t.params for t in complete_trials(prepare(exp, run_dir=copy))]
    assert len(params) == 118
    assert sum(params[60 + i] == params[2 + i] for i in range(58)) < 20
