"""Progress bars (rich) that stay silent when asked to, with one call shape for every stage."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True)


class _Bar:
    def __init__(self, progress: Progress | None, task: int | None):
        self._progress, self._task = progress, task

    def update(self, completed: int, info: str | None = None) -> None:
        """Move the bar to `completed`; `info` replaces the text after the bar when given."""
        if self._progress is None:
            return
        kwargs = {"info": info} if info is not None else {}
        self._progress.update(self._task, completed=completed, **kwargs)


@contextlib.contextmanager
def progress(label: str, total: int, *, completed: int = 0, quiet: bool = False) -> Iterator[_Bar]:
    """A bar for `total` units of work on stderr (nothing when `quiet`)."""
    if quiet or not console.is_terminal:
        # Logs and CI get the stage lines only; redrawn bars would be noise there.
        yield _Bar(None, None)
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn(), TextColumn("{task.fields[info]}"))
    with Progress(*columns, console=console) as p:
        task = p.add_task(label, total=total, completed=completed, info="")
        yield _Bar(p, task)


def say(message: str, *, quiet: bool = False) -> None:
    """One line of status on stderr."""
    if not quiet:
        console.print(message, highlight=False, markup=False, soft_wrap=True)
