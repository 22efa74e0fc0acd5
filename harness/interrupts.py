"""Ctrl-C and SIGTERM that are never lost.

Python drops an exception raised inside a weak-reference callback ("Exception ignored in ..."),
and the memory tracker frees storages in such callbacks during every measured step, so a
Ctrl-C landing there would let the run go on to its end. While ``sticky()`` is on, an interrupt
is also remembered, and ``check()`` (between training steps and rounds) raises it again. SIGTERM
(``kill``, a batch scheduler's stop) is handled alike, as ``Terminated``.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class Terminated(KeyboardInterrupt):
    """SIGTERM: stops a run as Ctrl-C does (every completed round recorded), told apart by its exit code."""


_pending: type[KeyboardInterrupt] | None = None
_active = False  # inside sticky(), in the main thread
received: type[KeyboardInterrupt] | None = None  # the last signal's kind, kept after sticky() ends
SIGNALS = {signal.SIGINT: KeyboardInterrupt, signal.SIGTERM: Terminated}


def _on_signal(signum: int, frame: object) -> None:
    global _pending, received
    _pending = received = SIGNALS[signum]
    raise _pending


@contextmanager
def sticky() -> Iterator[None]:
    """Remember every Ctrl-C for ``check()``. Only Python's main thread handles signals: elsewhere
    nothing changes."""
    global _pending, _active, received
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = None
    previous = {signum: signal.signal(signum, _on_signal) for signum in SIGNALS}
    _active = True
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _pending, _active = None, False


def take_back() -> None:
    """Handle SIGINT and SIGTERM here again after a library installed its own (Ray's start-up does;
    its SIGTERM handler's exit would be lost in its logging and the suite run on). Only while
    ``sticky()`` is on, in the main thread."""
    if _active and threading.current_thread() is threading.main_thread():
        for signum in SIGNALS:
            signal.signal(signum, _on_signal)


def check() -> None:
    """Raise a Ctrl-C or SIGTERM that arrived where Python could not raise it."""
    if _pending is not None:
        raise _pending
