"""Ctrl-C in loops: :class:`StopRequest` and :func:`deferred_interrupt` hold it until a step is done,
:func:`interruptible` turns it into :class:`~orand_addon.errors.Interrupted` (exit 130)."""

from __future__ import annotations

import contextlib
import os  # noqa: F401 (the doctests send signals)
import signal
import threading
from typing import Iterator

from ..errors import Interrupted


@contextlib.contextmanager
def interruptible(what: str) -> Iterator[None]:
    """Turn Ctrl-C into :class:`Interrupted` with a message saying how to resume."""
    try:
        yield
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted: {what}") from None


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


class InterruptFlag:
    """Whether Ctrl-C was pressed while it was held (:func:`deferred_interrupt`)."""

    requested: bool = False


@contextlib.contextmanager
def deferred_interrupt() -> Iterator[InterruptFlag]:
    """Hold Ctrl-C (SIGINT) until the block ends and report it in ``flag.requested`` (main thread only): a training
    step is never cut in half, so the checkpoint saved after it is consistent.

    >>> with deferred_interrupt() as flag:
    ...     os.kill(os.getpid(), signal.SIGINT)
    >>> flag.requested
    True
    """
    flag = InterruptFlag()
    if not _main_thread():
        yield flag
        return

    def remember(signum: int, frame: object) -> None:
        flag.requested = True

    previous = signal.signal(signal.SIGINT, remember)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def holding_interrupts(hold: bool) -> contextlib.AbstractContextManager[InterruptFlag]:
    """:func:`deferred_interrupt` for a whole loop when ``hold`` (under torchrun, which forwards Ctrl-C to every
    rank: all ranks act on it together after a step); otherwise Ctrl-C stays immediate between steps."""
    return deferred_interrupt() if hold else contextlib.nullcontext(InterruptFlag())


class StopRequest:
    """Ctrl-C (SIGINT) sets :attr:`requested` so the current step finishes and a checkpoint is saved; a second
    Ctrl-C interrupts at once (``KeyboardInterrupt``), except inside :meth:`step`, which holds it until the step
    ends. Outside the main thread, Ctrl-C stays a plain ``KeyboardInterrupt``.

    ``repeat_interrupts=False`` (under torchrun, which forwards the terminal's Ctrl-C a second time) ignores
    further Ctrl-C: every rank finishes the step, rank 0 saves, all stop together.

    >>> with StopRequest() as stop:
    ...     with stop.step():
    ...         os.kill(os.getpid(), signal.SIGINT)
    ...         os.kill(os.getpid(), signal.SIGINT)  # held: the step runs to its end
    >>> stop.requested
    True
    """

    def __init__(self, repeat_interrupts: bool = True) -> None:
        self.requested = False
        self.repeat_interrupts = repeat_interrupts
        self._previous = None

    def _handler(self, signum: int, frame: object) -> None:
        if self.requested and self.repeat_interrupts:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> "StopRequest":
        try:
            self._previous = signal.signal(signal.SIGINT, self._handler)
        except ValueError:  # not the main thread
            self._previous = None
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    @contextlib.contextmanager
    def step(self) -> Iterator[None]:
        """Hold Ctrl-C during one step (weights, optimizer and position change together); a Ctrl-C pressed
        meanwhile sets :attr:`requested`."""
        with deferred_interrupt() as flag:
            yield
        self.requested = self.requested or flag.requested
