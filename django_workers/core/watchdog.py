"""Silence detection: the thread that finds running attempts that stopped calling ``ctx.heartbeat()``."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from .supervisor import Supervisor

__all__ = ["Watchdog"]

#: The watchdog looks at least this often, even when nothing is due.
_MAX_SLEEP = 60.0


class Watchdog:
    """Reports (and, with ``restart_on_silence``, cancels) attempts silent for too long.

    It sleeps until the earliest moment a watched attempt could become silent. Heartbeats do not
    wake it (it re-reads them when it wakes); :meth:`wake` does, when a worker is registered or
    the pool stops. ``watched`` returns the supervisors to look at, read at every round.
    """

    def __init__(self, watched: Callable[[], Sequence[Supervisor]], cancel: threading.Event) -> None:
        self._watched = watched
        self._cancel = cancel
        self._wakeup = threading.Event()
        self.thread = threading.Thread(target=self._run, name="worker-pool:watchdog", daemon=True)

    def start(self) -> None:
        """Start watching, in a thread of its own."""
        self.thread.start()

    def wake(self) -> None:
        """Look again now (a worker was registered, or the pool is stopping)."""
        self._wakeup.set()

    def join(self, timeout: float) -> None:
        """Wait for the thread to end (it ends soon after the pool's stop flag is set and it is woken)."""
        if self.thread is not threading.current_thread():
            self.thread.join(timeout)

    def _run(self) -> None:
        while not self._cancel.is_set():
            now = time.monotonic()
            wake_at = now + _MAX_SLEEP
            for supervisor in self._watched():
                max_silence = supervisor.policy.max_silence
                if max_silence is None:
                    continue
                due = supervisor.check_silence(now)
                # Not running yet, or already reported: look again within its max_silence.
                wake_at = min(wake_at, due if due is not None else now + max_silence)
            self._wakeup.wait(max(0.001, wake_at - time.monotonic()))
            self._wakeup.clear()
