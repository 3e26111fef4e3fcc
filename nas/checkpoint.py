"""Orbax checkpoints of pytrees with a clear error for corrupt ones (never pickle)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import traceback
import uuid
import warnings
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from nas.errors import CheckpointError
from nas.io import sha256_hex, write_json

logging.getLogger("absl").setLevel(logging.ERROR)

DATA_FOLDER = "default"  # where orbax keeps a step's one item (StandardSave), inside the step's folder


class _HeldStderr:
    """File descriptor 2 held in a temporary file for a block: replayed after it, or dropped for good.

    A restore of a corrupt checkpoint fails at its first bad read, and orbax closes its event loop
    while TensorStore still completes the others; each of those then prints its own traceback straight
    to descriptor 2 from TensorStore's threads ("Event loop is closed"), during and after the failure,
    and Python reports the abandoned coroutines, tasks and futures (with pages-long TensorStore specs)
    when it collects them: 3 to 683 lines around the one-line error, in 1 run of 3 to 20.
    """

    def __enter__(self) -> _HeldStderr:
        sys.stderr.flush()
        self._kept = os.dup(2)
        self._file = tempfile.TemporaryFile()
        os.dup2(self._file.fileno(), 2)
        self.drop = False
        return self

    def __exit__(self, *exc: object) -> None:
        sys.stderr.flush()
        if self.drop:
            self._silence()
        else:
            os.dup2(self._kept, 2)
            os.close(self._kept)
            self._file.seek(0)
            held = self._file.read()
            if held:  # what a good restore had to say, once the descriptor is back
                os.write(2, held)
        self._file.close()

    def _silence(self) -> None:
        """From now on descriptor 2 goes nowhere; Python's stderr carries what the main thread writes."""
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 2)
        os.close(null)
        stream = sys.stderr
        try:
            on_fd2 = stream.fileno() == 2
        except (AttributeError, OSError, ValueError):  # a capture object (pytest, notebooks): keep it
            on_fd2 = False
        if on_fd2:
            stream = open(self._kept, "w", buffering=1, encoding=stream.encoding,  # noqa: SIM115
                          errors="backslashreplace")
        else:
            os.close(self._kept)
        sys.stderr = _MainThreadOnly(stream)
        unraisable_hook = sys.unraisablehook

        def on_unraisable(u: Any) -> None:
            text = f"{u.object!r} {u.exc_value}" + "".join(traceback.format_tb(u.exc_traceback))
            if not any(word in text for word in ("orbax", "TensorStore", "Event loop is closed")):
                unraisable_hook(u)

        sys.unraisablehook = on_unraisable
        # This project runs no event loop of its own: what asyncio's logger says now is about those reads.
        logging.getLogger("asyncio").addFilter(lambda record: False)
        warnings.filterwarnings("ignore", message=r"coroutine '_read_\w*' was never awaited", category=RuntimeWarning)


class _MainThreadOnly:
    """A stderr that writes what the main thread and the progress bar write, and drops what other
    threads (orbax's and TensorStore's, tearing down a failed restore) write."""

    def __init__(self, stream: Any):
        self._stream = stream

    def write(self, text: str) -> int:
        """Write `text` if the main thread or rich's refresh thread writes it (the length either way)."""
        thread = threading.current_thread()
        # rich redraws a live progress bar from its own thread: dropped, the bar froze for the rest of
        # the process after one fallback past a corrupt checkpoint (training, then measuring).
        if thread is threading.main_thread() or any(c.__name__ == "_RefreshThread" for c in type(thread).__mro__):
            return self._stream.write(text)
        return len(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _digests(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under `folder`, by path relative to it."""
    return {p.relative_to(folder).as_posix(): sha256_hex(p) for p in sorted(folder.rglob("*")) if p.is_file()}


class CheckpointStore:
    """Step-numbered checkpoints in one folder; saves are atomic, so a kill leaves the last good one."""

    def __init__(self, directory: str | Path, keep: int = 2):
        self.directory = Path(directory).absolute()
        self._keep = keep
        self._manager = self._new_manager()

    def _new_manager(self) -> ocp.CheckpointManager:
        """An orbax manager of this folder, yet to decide between one item and several (see restore_latest)."""
        options = ocp.CheckpointManagerOptions(max_to_keep=self._keep, create=True, enable_async_checkpointing=False)
        return ocp.CheckpointManager(self.directory, options=options)

    def save(self, step: int, tree: Any) -> None:
        """Write `tree` as checkpoint `step` (CheckpointError, one line, when it cannot be written), and the
        SHA-256 of each of its files (orbax checks none: one flipped byte in 20 changed weights silently)."""
        with _HeldStderr() as held:
            try:
                self._manager.save(step, args=ocp.args.StandardSave(tree))
                self._manager.wait_until_finished()
                write_json(self._digest_path(step), _digests(self.directory / str(step)))
            except KeyboardInterrupt:
                # Ctrl-C mid-save left orbax's commit thread running into the interpreter's shutdown: a
                # "cannot schedule new futures after shutdown" traceback after the "interrupted" line, and a
                # <step>.orbax-checkpoint-tmp folder (review). Its commit takes a moment: let it end first.
                self._finish_quietly()
                raise
            except Exception as e:  # a full disk is TensorStore's ValueError, not an OSError
                held.drop = True  # and orbax's teardown of the failed write fills the terminal
                detail = str(e).split(" See full TensorStore details")[0].splitlines()[0][:300]
                raise CheckpointError(f"checkpoint {self.directory}/{step} could not be written ({detail}); free "
                                      "space or fix the folder, then run the same command again to resume") from None
        kept = {str(s) for s in self._manager.all_steps()}
        for stale in self._digest_path(step).parent.glob("*.json"):  # of steps orbax deleted (max_to_keep)
            if stale.stem not in kept:
                stale.unlink(missing_ok=True)

    def _digest_path(self, step: int) -> Path:
        """Where checkpoint `step`'s file digests are kept (beside the folder orbax manages)."""
        return self.directory.with_name(f"{self.directory.name}.sha256") / f"{step}.json"

    def _changed_file(self, step: int) -> str | None:
        """The first file of checkpoint `step` that differs from when it was saved (missing or extra
        included); None when all match or no digests were kept (a checkpoint written before they were)."""
        try:
            saved = json.loads(self._digest_path(step).read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError, RecursionError):
            saved = None
        if not isinstance(saved, dict):
            return f"{self._digest_path(step).name} (its digests, unreadable)"
        now = _digests(self.directory / str(step))
        return next((name for name in sorted(set(saved) | set(now)) if saved.get(name) != now.get(name)), None)

    def restore_latest(self, like: Any, *, fallback: bool = False, redo: str = "") -> tuple[int, Any] | None:
        """(step, tree shaped like `like`) of the newest checkpoint, or None if there is none. An unreadable
        one is a CheckpointError naming it (and `redo`, what writes it again), or with `fallback` (a run to
        resume) is said, moved aside, and the one before it tried."""
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
        steps = sorted(self._manager.all_steps(), reverse=True)
        for i, step in enumerate(steps):
            detail = self._restore(step, abstract)
            if not isinstance(detail, str):
                return step, detail[0]
            if not fallback or i + 1 == len(steps):
                hint = f"; {redo}" if redo else ""
                raise CheckpointError(f"checkpoint {self.directory}/{step} is unreadable or corrupt: {detail}{hint}")
            # Moved out of the way, not deleted (the error may not be the files' fault): training saves
            # this step again, which orbax refuses over an existing one.
            aside = self.directory.with_name(f"{self.directory.name}.unreadable") / f"{step}.{uuid.uuid4().hex[:8]}"
            aside.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(self.directory / str(step), aside)
            print(f"note: checkpoint {self.directory}/{step} is unreadable or corrupt ({detail}); moved to "
                  f"{aside}, resuming from step {steps[i + 1]}", file=sys.stderr)
            # A fresh manager, not reload(): orbax decides once, at its first restore, whether steps hold one
            # item or several, and keeps the answer, right or wrong, for every step after it.
            self._manager.close()
            self._manager = self._new_manager()
        return None

    def _restore(self, step: int, abstract: Any) -> tuple[Any] | str:
        """(tree,) of checkpoint `step`, or what made it unreadable, in one short line."""
        if not (self.directory / str(step) / DATA_FOLDER).is_dir():
            # Not left to orbax: it would read the step as a multi-item checkpoint (a "Composite"), and from
            # then on every older, good step too, so no fallback could restore any of them.
            return f"its data folder '{DATA_FOLDER}' is missing"
        changed = self._changed_file(step)
        if changed is not None:
            return f"{changed} differs from when it was saved (SHA-256)"
        with _HeldStderr() as held:
            try:
                return (self._manager.restore(step, args=ocp.args.StandardRestore(abstract)),)
            except Exception as e:  # orbax raises many kinds; all mean the same thing to the user
                held.drop = True
                # The rest is a pages-long TensorStore spec (a JSON object), on the first line or after it.
                detail = str(e).split(" See full TensorStore details")[0].splitlines()[0]
        detail = detail.split(" {")[0].split(": {")[0]
        return detail if len(detail) <= 200 else detail[:200] + "..."

    def wait(self) -> None:
        """Block until pending saves are on disk."""
        self._manager.wait_until_finished()

    def _finish_quietly(self) -> None:
        """Wait for orbax's pending work after an interrupt; a second Ctrl-C or its failure stops the wait."""
        try:
            self._manager.wait_until_finished()
        except BaseException:  # noqa: BLE001 - the first interrupt is what the caller re-raises
            pass
