"""A Ctrl-C whose KeyboardInterrupt Python swallows (raised inside a garbage-collector callback, where
jax keeps one) is raised again by the loops that check for it."""

from __future__ import annotations

import gc
import os
import signal
import sys
from collections.abc import Iterator

import pytest

from nas import interrupts


@pytest.fixture
def default_sigint() -> Iterator[None]:
    before = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    interrupts.interrupt_handled()
    yield
    signal.signal(signal.SIGINT, before)
    interrupts.interrupt_handled()


def _sigint_inside_a_gc_callback(monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGINT delivered while a gc callback runs: its KeyboardInterrupt is raised there, and ignored."""
    fired: list[bool] = []
    ignored: list[type] = []
    # Garbage left by earlier tests in this process (orbax's asyncio objects) raises its own unraisable
    # Exceptions when collected: collected first, and only interrupts are counted.
    gc.collect()
    monkeypatch.setattr(sys, "unraisablehook", lambda u: ignored.append(u.exc_type))

    def callback(phase: str, info: dict) -> None:
        if phase == "start" and not fired:
            fired.append(True)
            os.kill(os.getpid(), signal.SIGINT)
            sum(range(1000))  # Python runs the handler at its next check, still inside the callback

    gc.callbacks.append(callback)
    try:
        gc.collect()
    finally:
        gc.callbacks.remove(callback)
    assert fired and [e for e in ignored if not issubclass(e, Exception)] == [KeyboardInterrupt]


def test_python_swallows_an_interrupt_raised_in_a_gc_callback(default_sigint: None,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Why the module exists: with Python's own handler the interrupt is lost."""
    _sigint_inside_a_gc_callback(monkeypatch)
    interrupts.raise_if_interrupted()  # nothing remembered: the handler was Python's


def test_a_swallowed_interrupt_is_raised_again(default_sigint: None, monkeypatch: pytest.MonkeyPatch) -> None:
    interrupts.remember_interrupts()
    _sigint_inside_a_gc_callback(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        interrupts.raise_if_interrupted()
    interrupts.raise_if_interrupted()  # raised once


def test_a_handled_interrupt_is_not_raised_again(default_sigint: None) -> None:
    interrupts.remember_interrupts()
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
        sum(range(1000))
    interrupts.interrupt_handled()
    interrupts.raise_if_interrupted()


def test_an_ignored_sigint_stays_ignored(default_sigint: None) -> None:
    """A background job's processes inherit SIGINT ignored: remembering must not turn it back on."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    interrupts.remember_interrupts()
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
