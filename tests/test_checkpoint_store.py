"""CheckpointStore on small trees (no training): the newest step restores, a changed, extra or unverifiable
file is refused with a clear error, a run's only checkpoint found corrupt is an error and not a silent
restart from scratch, and digests of steps orbax dropped are dropped too."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nas.checkpoint import CheckpointStore
from nas.errors import CheckpointError


def _tree(v: float) -> dict[str, np.ndarray]:
    return {"w": np.full((3,), v, np.float32)}


def _store(tmp_path: Path, steps: list[int]) -> CheckpointStore:
    store = CheckpointStore(tmp_path / "ckpt", keep=2)
    for s in steps:
        store.save(s, _tree(float(s)))
    store.wait()
    return store


def test_the_newest_step_is_restored(tmp_path: Path) -> None:
    _store(tmp_path, [1, 2])
    step, tree = CheckpointStore(tmp_path / "ckpt").restore_latest(_tree(0.0))
    assert step == 2 and np.asarray(tree["w"]).tolist() == [2.0, 2.0, 2.0]


def test_a_file_added_to_a_checkpoint_is_refused(tmp_path: Path) -> None:
    _store(tmp_path, [1])
    (tmp_path / "ckpt" / "1" / "default" / "stray").write_bytes(b"x")
    with pytest.raises(CheckpointError, match=r"ckpt/1 is unreadable or corrupt: default/stray differs"):
        CheckpointStore(tmp_path / "ckpt").restore_latest(_tree(0.0))


def test_unreadable_digests_are_refused_not_skipped(tmp_path: Path) -> None:
    _store(tmp_path, [1])
    (tmp_path / "ckpt.sha256" / "1.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"1\.json \(its digests, unreadable\)"):
        CheckpointStore(tmp_path / "ckpt").restore_latest(_tree(0.0))


def test_the_only_checkpoint_corrupt_is_an_error_even_when_falling_back(tmp_path: Path) -> None:
    _store(tmp_path, [1])
    data = next(p for p in sorted((tmp_path / "ckpt" / "1" / "default").rglob("*")) if p.is_file())
    data.write_bytes(data.read_bytes() + b"\0")
    with pytest.raises(CheckpointError, match=r"ckpt/1 is unreadable or corrupt.*train --force"):
        CheckpointStore(tmp_path / "ckpt").restore_latest(_tree(0.0), fallback=True,
                                                        redo="run `nas train --force` to train from the start")


def test_digests_of_steps_orbax_no_longer_keeps_are_removed(tmp_path: Path) -> None:
    _store(tmp_path, [1, 2, 3])  # keep=2
    assert sorted(p.name for p in (tmp_path / "ckpt.sha256").glob("*.json")) == ["2.json", "3.json"]
