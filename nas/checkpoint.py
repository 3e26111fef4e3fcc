"""Orbax checkpoints of pytrees with a clear error for corrupt ones (never pickle)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from nas.errors import CheckpointError

logging.getLogger("absl").setLevel(logging.ERROR)


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
            message = f"checkpoint {self.directory}/{step} is unreadable or corrupt: {e}"
            raise CheckpointError(message.splitlines()[0]) from None

    def wait(self) -> None:
        """Block until pending saves are on disk."""
        self._manager.wait_until_finished()
