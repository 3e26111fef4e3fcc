"""Ctrl-C that is not lost: Python swallows an exception raised inside a garbage-collector callback
(printing "Exception ignored ..."), and jax runs one at every collection, so a SIGINT whose
KeyboardInterrupt landed there left a search running (a spawned worker ran on until its parent
killed it a minute later). The signal is remembered as well as raised, and long loops raise it
again where they can stop cleanly."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from types import FrameType

_pending = threading.Event()


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    _pending.set()
    raise KeyboardInterrupt


def remember_interrupts() -> None:
    """Remember each SIGINT as well as raising KeyboardInterrupt (only where Python's default
    handler is installed: a SIGINT ignored, as in a background job, stays ignored)."""
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _on_sigint)


def interrupt_on_sigterm() -> None:
    """Take SIGTERM as an interrupt (remembered and raised as KeyboardInterrupt): a spawned search
    worker's parent stops it so when it fails, and the worker then frees its reserved batch and the
    journal's lock as on Ctrl-C instead of leaving them to lapse. Until this runs (its imports) SIGTERM
    ends the process at once, and quietly."""
    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _on_sigint)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM taken as an interrupt for the block, the handler before restored after (where it was
    the default and this is the main thread): the parent of spawned search workers, ended at once
    by a `kill` or a scheduler, left them running the study on their own."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return
    signal.signal(signal.SIGTERM, _on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def stop_when_orphaned(parent: int, every: float = 1.0) -> None:
    """Interrupt this process (a SIGTERM to itself) once `parent` is no longer its parent: a spawned
    worker whose `nas search --workers N` was killed (-9) stops within `every` s, its batch freed."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="orphan-watch", daemon=True).start()


def raise_if_interrupted() -> None:
    """KeyboardInterrupt if a SIGINT came since the last one was handled (it may have been swallowed)."""
    if _pending.is_set():
        _pending.clear()
        raise KeyboardInterrupt


def interrupt_handled() -> None:
    """The KeyboardInterrupt reached its handler: forget the SIGINT that raised it."""
    _pending.clear()
