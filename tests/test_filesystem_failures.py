"""A full or read-only disk: errors name the file concerned, and a finished run stays answerable (review)."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

import pytest

from conftest import write_tiny
from nas.cli import main
from nas.errors import StageError
from nas.io import write_bytes


def test_a_full_disk_names_the_file_being_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import nas.io

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")  # what a write or fsync says: no file named

    target = tmp_path / "measure" / "table.jsonl"
    monkeypatch.setattr(nas.io.os, "fsync", full)
    with pytest.raises(OSError) as caught:
        write_bytes(target, b"rows")
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(target)
    assert list(target.parent.iterdir()) == []  # nor its temp file left behind


def test_a_finished_run_on_a_read_only_disk_is_up_to_date(finished_run, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """Root ignores file modes, so the read-only mount is the lock file failing as it does on one."""
    import nas.pipeline

    exp, run_dir = finished_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)

    def read_only(path: Path):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(nas.pipeline, "file_lock", read_only)
    capsys.readouterr()
    assert main(["run", str(exp), "--run-dir", str(copy), "--quiet"]) == 0
    assert main(["export", str(exp), "--run-dir", str(copy)]) == 0
    assert "[export] up to date" in capsys.readouterr().err


def test_an_unwritable_default_xla_cache_names_the_runs_folder_not_a_setting(tmp_path: Path) -> None:
    from nas.context import prepare
    from nas.measure import compilation_cache_folder

    ctx = prepare(write_tiny(tmp_path), run_dir=tmp_path / "runs" / "tiny")
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / ".xla-cache").write_text("a file where the cache folder goes")
    with pytest.raises(StageError, match=r"the XLA cache beside the run directory .*runs must be writable"):
        compilation_cache_folder(ctx)
