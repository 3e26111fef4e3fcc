"""Several workers on one study evaluate exactly the trials it asks for: each reserves its batch, so none
evaluates configs the others already hold slots for (their results would be dropped past the target)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna

REPO = Path(__file__).resolve().parents[1]

COUNTING_WORKER = '''
import sys, time
from pathlib import Path
import optuna
from nas.workers import run_worker

folder, index = Path(sys.argv[1]), int(sys.argv[2])
optuna.logging.set_verbosity(optuna.logging.WARNING)

def evaluate(configs):
    time.sleep(0.05)  # long enough for the workers' batches to overlap
    with open(folder / f"evaluated.{index}", "a") as f:
        f.write(f"{len(configs)}\\n")
    return [[c["x"], -c["x"]] for c in configs], [{} for _ in configs]

storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(folder / "j.log")))
run_worker(storage=storage, study_name="s", directions=["minimize", "minimize"],
           sampler=optuna.samplers.RandomSampler(seed=index),
           suggest=lambda t: {"x": t.suggest_categorical("x", list(range(50)))},
           evaluate=evaluate, target=43, batch=5, lock_path=folder / "study.lock", worker=index)
'''


def test_three_workers_evaluate_exactly_the_target_between_them(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(COUNTING_WORKER)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, str(script), str(tmp_path), str(i)], env=env) for i in range(3)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0, 0]
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp_path / "j.log")))
    trials = optuna.load_study(study_name="s", storage=storage).get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(trials) == 43
    evaluated = sum(int(n) for path in tmp_path.glob("evaluated.*") for n in path.read_text().split())
    assert evaluated == 43
