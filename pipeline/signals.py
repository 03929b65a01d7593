"""Stop signals outside a run, and telling one signal delivered twice from a second signal.

Owns what SIGINT/SIGTERM/SIGHUP do before `pipeline.runner.execute` takes over (loading a model,
building an engine, a benchmark) and the clock that both use to ignore a repeated delivery.
What a signal does *during* a run (drain, stop, reload) is the runner's business.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Iterator
from types import FrameType

log = logging.getLogger(__name__)

# Two stop signals closer than this are one request: `timeout -s INT` signals its child and then
# its whole process group, so the same process gets SIGINT twice within a few microseconds, and a
# second signal means "stop at once, discard queued frames".
SAME_SIGNAL_S = 0.5


class SignalClock:
    """When the last stop signal was taken, so that a repeat within SAME_SIGNAL_S is ignored."""

    def __init__(self) -> None:
        self._last: float | None = None

    def is_repeat(self) -> bool:
        """True when this signal repeats one taken less than SAME_SIGNAL_S ago; otherwise it is
        taken (remembered as the last one) and False is returned."""
        now = time.monotonic()
        if self._last is not None and now - self._last < SAME_SIGNAL_S:
            return True
        self._last = now
        return False


# One per process: signals are delivered to the process, and the start-up handlers and a run's
# handlers must agree on which signal was the first.
SIGNALS = SignalClock()


@contextlib.contextmanager
def interrupt_on_signals() -> Iterator[None]:
    """While the block runs, SIGINT and SIGTERM raise KeyboardInterrupt (with the signal's name),
    so a command that is loading a model ends at once instead of being killed by SIGTERM's default
    action; SIGHUP is ignored with a warning (the config was just read: nothing to reload yet).
    `execute` installs its own handlers for the run and puts these back afterwards. Only the first
    signal raises: the process is already on its way out. Does nothing off the main thread, where
    Python cannot install signal handlers.

    Example:
        >>> with interrupt_on_signals():
        ...     exit_code = command(args)   # KeyboardInterrupt("SIGTERM") on `kill`
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    raised: list[str] = []

    def interrupt(signum: int, _frame: FrameType | None) -> None:
        if raised or SIGNALS.is_repeat():
            return
        raised.append(signal.Signals(signum).name)
        raise KeyboardInterrupt(raised[0])

    def hang_up(_signum: int, _frame: FrameType | None) -> None:
        log.warning("SIGHUP before the run started: nothing to reload yet; ignored")

    handlers = {signal.SIGINT: interrupt, signal.SIGTERM: interrupt}
    if hasattr(signal, "SIGHUP"):  # not on Windows
        handlers[signal.SIGHUP] = hang_up
    previous = {sig: signal.signal(sig, handler) for sig, handler in handlers.items()}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# The signals that stop or reload a run. Python runs their handlers on the main thread only.
STOP_SIGNALS = frozenset(s for s in (getattr(signal, n, None) for n in ("SIGINT", "SIGTERM", "SIGHUP")) if s is not None)


def block_stop_signals() -> None:
    """Blocks the stop signals in the calling thread (a stage thread), and so in every native thread
    it starts (ONNX Runtime, OpenVINO and FFmpeg workers inherit the mask): the kernel then hands a
    process-wide SIGINT to the main thread, whose Python handler acts on it, rather than to some
    native worker, where a signal handler has crashed the process."""
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)


@contextlib.contextmanager
def stop_signals_blocked() -> Iterator[None]:
    """Blocks the stop signals in the calling thread for the block (e.g. while a backend creates
    its thread pools), then restores the mask; a signal that came meanwhile is delivered then.

    Example:
        >>> with stop_signals_blocked():
        ...     backend = OnnxRuntimeBackend(path)   # its worker threads never take SIGINT
    """
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
