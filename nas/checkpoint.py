"""Orbax checkpoints of pytrees with a clear error for corrupt ones (never pickle)."""

from __future__ import annotations

import logging
import sys
import traceback
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from nas.errors import CheckpointError

logging.getLogger("absl").setLevel(logging.ERROR)


def _ignore_abandoned_reads() -> None:
    """Drop the late failures of a failed restore's other reads, which nobody awaits any more.

    Python prints each (tens to hundreds of lines of TensorStore specs, or "Event loop is closed")
    when the process exits, after the one-line error that already said the checkpoint is corrupt.
    """
    previous = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        where = "".join(traceback.format_tb(unraisable.exc_traceback)) + repr(unraisable.object)
        if "orbax" in where or "Event loop is closed" in str(unraisable.exc_value):
            return
        previous(unraisable)

    sys.unraisablehook = hook


class CheckpointStore:
    """Step-numbered checkpoints in one folder; saves are atomic, so a kill leaves the last good one."""

    def __init__(self, directory: str | Path, keep: int = 2):
        self.directory = Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=False)
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def save(self, step: int, tree: Any) -> None:
        """Write `tree` as checkpoint `step`."""
        self._manager.save(step, args=ocp.args.StandardSave(tree))

    def restore_latest(self, like: Any) -> tuple[int, Any] | None:
        """(step, tree shaped like `like`) of the newest checkpoint, or None if there is none."""
        step = self._manager.latest_step()
        if step is None:
            return None
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
        try:
            return step, self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
        except Exception as e:  # orbax raises many kinds; all mean the same thing to the user
            _ignore_abandoned_reads()
            detail = str(e).split(" See full TensorStore details")[0]  # the rest is a pages-long spec
            message = f"checkpoint {self.directory}/{step} is unreadable or corrupt: {detail}"
            raise CheckpointError(message.splitlines()[0]) from None

    def wait(self) -> None:
        """Block until pending saves are on disk."""
        self._manager.wait_until_finished()
