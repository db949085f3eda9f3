"""Waking the main thread: a self-pipe, and the bookkeeping of stop requests.

The main thread of ``runworkers`` sleeps on :class:`Wakeup`. Signal handlers, the pool's listener,
the file watcher (``--reload``) and the thread that calls ``pool.stop()`` only record what happened
and write a byte to the pipe; the main thread wakes up and decides.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

__all__ = ["COPY_WINDOW", "STOP_SIGNALS", "Wakeup"]

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

#: A signal with the number of the first stop request that arrives this many seconds after it at
#: most is a copy of that request, not a second one: ``timeout`` and some process managers signal
#: the process and then its process group, and the copy can land after the graceful stop began.
COPY_WINDOW = 0.2


class Wakeup:
    """A self-pipe on which the main thread sleeps; anything that needs it writes a byte.

    Signal handlers only append the signal number and write; the main thread does the work.
    Stop requests come from signals received directly, signals relayed by the ``--reload``
    parent process, or that parent's exit. A Ctrl-C in a terminal reaches both the parent and the
    worker process (one process group), so a signal and its relayed copy count once: the number
    of stop requests is the larger of the two counts.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._read, write = os.pipe()
        self._write: int | None = write
        os.set_blocking(self._read, False)
        os.set_blocking(write, False)
        # Reentrant: a signal handler runs in the main thread, possibly while it holds the lock.
        self._lock = threading.RLock()
        self._previous: dict[int, Any] = {}
        self._previous_wakeup_fd = -1
        #: Signals received by this process, in order (appended by the handler), each with when.
        self.signals: list[tuple[int, float]] = []
        #: Signals received by the ``--reload`` parent and relayed here, each with when.
        self.relayed: list[tuple[int, float]] = []
        #: The ``--reload`` parent process exited (its end of the relay pipe closed).
        self.parent_gone = False
        #: A watched file changed (``--reload``).
        self.reload = False
        #: How many signals (received, relayed) the main thread took as the first stop request.
        self._acknowledged = (1, 1)

    def notify(self) -> None:
        """Wake the main thread (from any thread, or a signal handler)."""
        with self._lock:
            if self._write is not None:
                # Full pipe: a wake-up is pending already, nothing is lost.
                with contextlib.suppress(OSError):
                    os.write(self._write, b"\0")

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        """The handler of SIGINT and SIGTERM: record the signal, wake the main thread."""
        self.signals.append((signum, self._clock()))
        self.notify()

    def relay(self, signums: bytes) -> None:
        """Count signals relayed by the ``--reload`` parent (called by the thread that reads them)."""
        now = self._clock()
        self.relayed.extend([(signum, now) for signum in signums])
        self.notify()

    def install(self) -> bool:
        """Handle SIGINT and SIGTERM; False when not in the main thread (signals are then left alone).

        The kernel may deliver a signal to any thread; Python then only flags the main thread,
        whose ``select()`` would sleep on. The wakeup fd makes the C-level handler write to the
        pipe whichever thread took the signal, so the main thread wakes and runs the handler.
        """
        if threading.current_thread() is not threading.main_thread():
            return False
        for signum in STOP_SIGNALS:
            self._previous[signum] = signal.signal(signum, self.on_signal)
        assert self._write is not None
        self._previous_wakeup_fd = signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)
        return True

    def wait(self, timeout: float | None = None) -> None:
        """Sleep until something calls :meth:`notify` (or ``timeout`` seconds)."""
        select.select([self._read], [], [], timeout)
        with contextlib.suppress(BlockingIOError):
            while os.read(self._read, 4096):
                pass

    @property
    def stop_requests(self) -> int:
        """How many distinct stop requests arrived (see the class docstring)."""
        return max(len(self.signals), len(self.relayed), 1 if self.parent_gone else 0)

    def first_request(self) -> str:
        """What asked for the first stop, for the log."""
        for received in (self.signals, self.relayed):
            if received:
                return f"received {signal.Signals(received[0][0]).name}"
        return "the reloader process exited" if self.parent_gone else "a file changed"

    def second_request(self, signum: int) -> str:
        """What made the second stop request, for the log.

        ``received SIGINT again``, or ``received SIGTERM after SIGINT`` when the first request was
        another signal (the first request is the one :meth:`first_request` names).
        """
        name = signal.Signals(signum).name
        for received in (self.signals, self.relayed):
            if received:
                first = signal.Signals(received[0][0]).name
                return f"received {name} again" if first == name else f"received {name} after {first}"
        return f"received {name}"

    def acknowledge(self) -> None:
        """The main thread acts on the stop request: the signals so far count as that one request.

        One request can arrive as several signals: ``timeout`` or a process manager that signals
        the process and then its process group, a Ctrl-C that reaches the ``--reload`` parent
        too. A later signal forces the exit, unless it is a copy of the first one: the same
        signal, at most :data:`COPY_WINDOW` seconds after it.
        """
        self._acknowledged = (max(1, len(self.signals)), max(1, len(self.relayed)))

    def forcing_signal(self) -> int | None:
        """The signal that made a second stop request, if any."""
        for received, acknowledged in zip((self.signals, self.relayed), self._acknowledged, strict=True):
            first, first_at = received[0] if received else (None, 0.0)
            for signum, at in received[acknowledged:]:
                if signum == first and at - first_at <= COPY_WINDOW:
                    continue  # a copy of the first request
                return signum
        return None

    def copy_window_left(self) -> float:
        """Seconds until a repeat of the first stop signal forces the exit (0 once it does)."""
        firsts = [received[0][1] for received in (self.signals, self.relayed) if received]
        return max(0.0, min(firsts) + COPY_WINDOW - self._clock()) if firsts else 0.0

    def close(self) -> None:
        """Restore the previous signal handlers and close the pipe (later notifications are no-ops)."""
        if self._previous:
            signal.set_wakeup_fd(self._previous_wakeup_fd)
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()
        with self._lock:
            write, self._write = self._write, None
            if write is not None:
                os.close(write)
                os.close(self._read)
