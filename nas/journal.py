"""The search's journal-file storage: a write lock that mends a torn last line, and batches of
appended trials synced to disk once instead of once per trial."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import optuna
from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock

from nas.io import cut_torn_line


class _CuttingLock(JournalFileSymlinkLock):
    """Optuna's journal write lock that, once held, cuts a torn last line before the write: a worker
    killed mid-append leaves one, which Optuna skips when reading but would append onto, corrupting
    the journal for good (other workers keep appending for the rest of the round)."""

    def __init__(self, filepath: str, grace_period: int | None = 30):
        super().__init__(filepath, grace_period=grace_period)
        self.journal = Path(filepath)

    def acquire(self) -> bool:
        """Take the lock, then cut a torn last line (one byte read when there is none)."""
        held = super().acquire()
        if self.journal.is_file():
            with open(self.journal, "r+b") as f:
                if cut_torn_line(f):
                    print(f"search: cut a torn last line from {self.journal} (a worker stopped mid-write)",
                          file=sys.stderr)
        return held


class _BatchingBackend(JournalFileBackend):
    """Optuna's journal file backend; inside `one_write()` appends share one lock and one fsync.

    Optuna takes the lock and fsyncs the file for every log: 2 ms a trial on this machine's disk,
    20 s of a 10,000-trial search. A worker persists a generation of trials at once, so it holds the
    lock for the generation and syncs once at its end. Each append is still flushed to the file at
    once (the storage reads its own writes back), so a worker killed mid-batch loses nothing more
    than before: unsynced writes survive the process, only not the machine."""

    def __init__(self, path: str, lock: JournalFileSymlinkLock):
        super().__init__(path, lock_obj=lock)
        self._path, self._write_lock = path, lock
        self._open: IO[bytes] | None = None

    @contextlib.contextmanager
    def one_write(self) -> Iterator[None]:
        """Hold the write lock over the appends made inside, and fsync the file once at the end."""
        self._write_lock.acquire()
        try:
            with open(self._path, "ab") as f:
                self._open = f
                try:
                    yield
                finally:
                    self._open = None
                    f.flush()
                    os.fsync(f.fileno())
        finally:
            self._write_lock.release()

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        """Append logs as Optuna does; inside `one_write()`, without taking the lock or syncing."""
        if self._open is None:
            super().append_logs(logs)
            return
        self._open.write("".join(json.dumps(log, separators=(",", ":")) + "\n" for log in logs).encode("utf-8"))
        self._open.flush()


class JournalStorage(optuna.storages.JournalStorage):
    """Optuna's journal storage on a file, with `one_write()` for a batch of appends."""

    def __init__(self, backend: _BatchingBackend):
        super().__init__(backend)
        self.one_write = backend.one_write


def journal_storage(path: Path) -> JournalStorage:
    """The journal storage on `path` (absolute), freeing a lock left by a killed worker."""
    _drop_lock_pointing_nowhere(Path(f"{path}.lock"))
    # A worker killed while holding the lock leaves it behind; 10 s of silence frees it.
    lock = _CuttingLock(str(path), grace_period=10)
    return JournalStorage(_BatchingBackend(str(path), lock))


def _drop_lock_pointing_nowhere(lock: Path) -> None:
    # A lock whose target is relative was left by a killed worker of a version before journal_path
    # was absolute (no live worker makes one now); Optuna would spin on it for ever, never freeing it.
    try:
        if lock.is_symlink() and not os.path.isabs(os.readlink(lock)):
            lock.unlink()
    except OSError:  # gone already: freed by its owner or another worker
        pass
