"""The search's journal storage: a torn last line is cut before the next append, a lock left with a
relative target is freed while a live (absolute) one is kept, and batched appends land in the file."""

from __future__ import annotations

import os
from pathlib import Path

import optuna
import pytest

from nas.journal import journal_storage


def _study_with_trials(path: Path, n: int) -> optuna.Study:
    study = optuna.create_study(storage=journal_storage(path), study_name="s")
    for i in range(n):
        study.add_trial(optuna.trial.create_trial(params={"x": float(i)},
                                                  distributions={"x": optuna.distributions.FloatDistribution(0, 9)},
                                                  value=float(i)))
    return study


def test_a_torn_last_line_is_cut_before_the_next_append(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "study.journal"
    _study_with_trials(path, 2)
    path.write_bytes(path.read_bytes() + b'{"op_code": 4, "worker_id": "torn", "stu')  # a worker killed mid-write
    study = optuna.load_study(storage=journal_storage(path), study_name="s")
    study.add_trial(optuna.trial.create_trial(params={"x": 5.0},
                                              distributions={"x": optuna.distributions.FloatDistribution(0, 9)},
                                              value=5.0))
    assert "cut a torn last line" in capsys.readouterr().err
    assert b"torn" not in path.read_bytes()
    again = optuna.load_study(storage=journal_storage(path), study_name="s")
    assert [t.value for t in again.trials] == [0.0, 1.0, 5.0]  # the append after it is readable, not glued on


def test_only_a_lock_pointing_nowhere_is_freed(tmp_path: Path) -> None:
    path = tmp_path / "study.journal"
    lock = Path(f"{path}.lock")
    os.symlink("study.journal", lock)  # relative: left by a killed worker of an older version
    journal_storage(path)
    assert not lock.is_symlink()
    os.symlink(str(path), lock)  # absolute: a live worker's lock
    journal_storage(path)
    assert lock.is_symlink()


def test_appends_inside_one_write_are_in_the_file(tmp_path: Path) -> None:
    path = tmp_path / "study.journal"
    storage = journal_storage(path)
    study = optuna.create_study(storage=storage, study_name="s")
    with storage.one_write():
        for i in range(3):
            study.add_trial(optuna.trial.create_trial(
                params={"x": float(i)}, distributions={"x": optuna.distributions.FloatDistribution(0, 9)},
                value=float(i)))
    again = optuna.load_study(storage=journal_storage(path), study_name="s")
    assert [t.value for t in again.trials] == [0.0, 1.0, 2.0]
