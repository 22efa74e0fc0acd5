"""Ctrl-C that is never lost.

Python drops an exception raised inside a weak-reference callback ("Exception ignored in ..."),
and the memory tracker frees storages in such callbacks during every measured step, so a
Ctrl-C landing there would let the run go on to its end. While ``sticky()`` is on, an interrupt
is also remembered, and ``check()`` (between training steps and rounds) raises it again.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_pending = False


def _on_sigint(signum: int, frame: object) -> None:
    global _pending
    _pending = True
    raise KeyboardInterrupt


@contextmanager
def sticky() -> Iterator[None]:
    """Remember every Ctrl-C for ``check()``. Only Python's main thread handles signals: elsewhere
    nothing changes."""
    global _pending
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, _on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        _pending = False


def check() -> None:
    """Raise a Ctrl-C that arrived where Python could not raise it."""
    if _pending:
        raise KeyboardInterrupt
