"""Ctrl-C in ``askdraw chat``: counted while a turn, a recording or a wait runs
(:class:`CtrlC`), and always noticed at the prompt (:class:`wake_up_at_prompt`)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any


class CtrlC:
    """Counts Ctrl-C presses inside :meth:`catching` instead of raising KeyboardInterrupt."""

    def __init__(self) -> None:
        self.count = 0

    def catching(self, on_interrupt: Callable[[], None]) -> _Catching:
        """A context in which Ctrl-C calls ``on_interrupt`` (and counts, from 0) instead of raising.
        Only the main thread can take signals; elsewhere it changes nothing."""
        return _Catching(self, on_interrupt)


class _Catching:
    def __init__(self, counter: CtrlC, on_interrupt: Callable[[], None]) -> None:
        self.counter = counter
        self.on_interrupt = on_interrupt
        self.previous: Any = None

    def handler(self, signum: int, frame: Any) -> None:
        self.counter.count += 1
        self.on_interrupt()

    def __enter__(self) -> None:
        self.counter.count = 0
        self.previous = None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self.handler)

    def __exit__(self, *exc: Any) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


class wake_up_at_prompt:
    """While the prompt waits for a line, wake the main thread 4 times a second (a no-op SIGALRM).
    A Ctrl-C that lands between readline printing the prompt and starting to wait for keys only
    marks the signal; readline then waits with no timeout and notices it at the next key press
    (a race in CPython's readline: seen about once in 8 resumed sessions). The wake-up makes
    readline look at the marked signal, so Ctrl-C at the prompt always leaves."""

    PERIOD = 0.25

    def __enter__(self) -> None:
        self.armed = (threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer"))
        if self.armed:
            self.previous = signal.signal(signal.SIGALRM, lambda signum, frame: None)
            signal.setitimer(signal.ITIMER_REAL, self.PERIOD, self.PERIOD)

    def __exit__(self, *exc: Any) -> None:
        if self.armed:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self.previous)


__all__ = ["CtrlC", "wake_up_at_prompt"]
