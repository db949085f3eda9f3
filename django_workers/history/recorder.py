"""The history recorder: the process service that wires a pool to the history tables.

It owns the pieces and connects them; the package docstring (:mod:`django_workers.history`)
explains the design.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

from ..core import limits
from ..core.backoff import Backoff
from ..core.context import LOGGER_NAME
from ..core.events import LifecycleEvent, Listener
from ..core.pool import WorkerPool
from ..settings.types import HistorySettings
from .buffer import EventBuffer, Marker
from .nodes import NodeRow
from .retention import DEFAULT_PRUNE_BATCH_SIZE, DEFAULT_PRUNE_INTERVAL, Pruner
from .writer import RETRY_BACKOFF, Writer

if TYPE_CHECKING:
    from ..observability.metrics import WorkerMetrics

__all__ = ["STOP_RESERVE_MAX", "STOP_RESERVE_MIN", "STOP_RESERVE_SHARE", "HistoryRecorder"]

logger = logging.getLogger(LOGGER_NAME)

#: The defaults of the HISTORY settings are the recorder's.
_DEFAULTS = HistorySettings()

#: The part of a process's stop timeout kept for the recorder's last flush (:meth:`HistoryRecorder.stop_reserve`):
#: this share of it, at least ``STOP_RESERVE_MIN`` and at most ``STOP_RESERVE_MAX`` seconds, never
#: more than half of it.
STOP_RESERVE_SHARE: Final = 0.1
STOP_RESERVE_MIN: Final = 0.5
STOP_RESERVE_MAX: Final = 5.0


class HistoryRecorder:
    """Stores a pool's execution attempts and events in the database (see :mod:`django_workers.history`).

    A :class:`~django_workers.runtime.ProcessService`: :meth:`start` subscribes it to the pool
    and starts the writer thread (it touches no database itself), :meth:`stop` writes what is
    buffered within its timeout and marks the node stopped. :meth:`flush` waits until everything
    received so far is written.
    """

    def __init__(
        self,
        database: str = "default",
        *,
        buffer_size: int = _DEFAULTS.buffer_size,
        batch_size: int = _DEFAULTS.batch_size,
        heartbeat_interval: float = _DEFAULTS.heartbeat_interval,
        orphan_grace: float | None = None,
        retention_days: float | None = _DEFAULTS.retention_days,
        prune_interval: float = DEFAULT_PRUNE_INTERVAL,
        prune_batch_size: int = DEFAULT_PRUNE_BATCH_SIZE,
        metrics: WorkerMetrics | None = None,
        retry_backoff: Backoff = RETRY_BACKOFF,
    ) -> None:
        for label, count in (("buffer_size", buffer_size), ("batch_size", batch_size), ("prune", prune_batch_size)):
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                raise ValueError(f"{label} must be an int >= 1, got {count!r}")
        # Bounded like every wait of the engine (a day at most): Event.wait() overflows far beyond it.
        heartbeat_interval = limits.seconds("heartbeat_interval", heartbeat_interval, low_open=True)
        grace = HistorySettings(heartbeat_interval=heartbeat_interval, orphan_grace=orphan_grace).grace
        if not grace > heartbeat_interval:
            raise ValueError(
                f"orphan_grace ({grace!r} s) must be longer than heartbeat_interval ({heartbeat_interval!r} s)"
            )
        self.database = database
        self.buffer_size = buffer_size
        self.batch_size = batch_size
        self.heartbeat_interval = float(heartbeat_interval)
        self.orphan_grace = float(grace)
        self.retention_days = retention_days
        self.prune_interval = float(prune_interval)
        self.prune_batch_size = prune_batch_size
        self.metrics = metrics
        self.retry_backoff = retry_backoff
        self.name = f"history recorder (database {database!r})"
        #: The node's primary key (one per process, or per start of a recorder).
        self.node_id = uuid.uuid4()
        self.hostname = socket.gethostname()[:255]
        self.pid = os.getpid()
        #: When :meth:`start` was called (the node's ``started_at``).
        self.started_at: datetime | None = None

        self._buffer = EventBuffer(buffer_size)
        #: What :meth:`start` subscribes to the pool (``recorder(event)`` calls it too).
        self.listener: Listener = self._buffer.make_listener()
        self._node = NodeRow(
            database,
            self.node_id,
            self.hostname,
            self.pid,
            heartbeat_interval=self.heartbeat_interval,
            orphan_grace=self.orphan_grace,
            metrics=metrics,
        )
        self._writer: Writer | None = None  # from start() until a stop that saw it end

    def __repr__(self) -> str:
        return f"<HistoryRecorder database={self.database!r} node={self.node_id}>"

    def __call__(self, event: LifecycleEvent) -> None:
        """Queue one lifecycle event: a deque append, and an ``Event.set()`` on the first of a burst."""
        self.listener(event)

    @property
    def dropped(self) -> int:
        """How many reported events were dropped since the start (buffer overflow or rejected batches)."""
        return self._buffer.dropped

    @property
    def pending(self) -> int:
        """How many reported events wait in memory (a snapshot: workers may be adding more)."""
        return self._buffer.pending

    # -- the service -------------------------------------------------------------------------------

    def start(self, pool: WorkerPool) -> None:
        """Subscribe to ``pool`` and start the writer thread (which registers the node)."""
        if self._writer is not None:
            raise RuntimeError("the history recorder is already started")
        self.started_at = datetime.now(UTC)
        self._node.attach(pool.names, self.started_at)
        pruner = None
        if self.retention_days:
            pruner = Pruner(
                self.database,
                self.retention_days,
                keep_node=self.node_id,
                batch_size=self.prune_batch_size,
                interval=self.prune_interval,
            )
        self._writer = Writer(
            self._buffer,
            self._node,
            pruner,
            batch_size=self.batch_size,
            retry_backoff=self.retry_backoff,
            metrics=self.metrics,
            names=pool.names,
            executions=pool.executions,
        )
        pool.add_listener(self.listener)
        self._writer.start()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything received so far is written; False after ``timeout`` seconds."""
        if self._writer is None or not self._writer.alive:
            return False
        marker = Marker()
        self._buffer.put(marker)
        return marker.done.wait(timeout) and marker.ok

    def stop_reserve(self, stop_timeout: float) -> float:
        """How much of a process's ``stop_timeout`` to keep for :meth:`stop` (the pool gets the rest).

        Even when workers use all their time and the process exits with status 3, the recorder
        then writes the ``did not stop within`` events, closes the attempts still running and marks
        the node stopped: ``STOP_RESERVE_SHARE`` of the timeout, within ``STOP_RESERVE_MIN`` and
        ``STOP_RESERVE_MAX`` seconds, at most half of it.
        """
        stop_timeout = max(0.0, stop_timeout)
        return min(STOP_RESERVE_MAX, max(STOP_RESERVE_MIN, STOP_RESERVE_SHARE * stop_timeout), stop_timeout / 2)

    def stop(self, timeout: float = 10.0) -> None:
        """Write what is buffered and mark the node stopped, within ``timeout`` seconds."""
        writer = self._writer
        if writer is None:
            return
        timeout = max(0.0, timeout)
        deadline = time.monotonic() + timeout
        # The writer gives up a little before the deadline, so that it has ended when join() returns.
        writer.request_stop(deadline - min(0.1, 0.1 * timeout))
        if not writer.join(max(0.0, deadline - time.monotonic())):
            logger.warning(
                "history recorder: the writer did not finish within %g seconds; %d event(s) are not stored",
                timeout,
                self.pending,
            )
            return
        self._writer = None
