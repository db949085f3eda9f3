"""The history recorder: a pool listener that stores every execution attempt and its events.

:class:`HistoryRecorder` is a process service (:mod:`django_workers.services`): ``runworkers``
starts it before the pool when ``WORKERS["HISTORY"]["ENABLED"]`` is true and stops it after the
pool, within what is left of the stop timeout. What it stores is described in ``docs/history.md``.

Two halves, one queue between them:

- The listener (:meth:`HistoryRecorder.__call__`) runs in the worker's thread. It appends the
  event to a deque and, on the first event of a burst, sets an ``Event``: no lock, no I/O, no
  formatting. A worker never waits on the database and never fails because of it.
- One writer thread does everything else: it registers the node (one row per process), writes
  the events in batches (one transaction per batch: an upsert of the attempts' rows, then the
  events: ``COPY`` on PostgreSQL, ``executemany`` elsewhere), heartbeats the node every
  ``heartbeat_interval`` seconds with
  the database clock, closes the open attempts of nodes that stopped heartbeating
  (``kill -9``, a lost host) and prunes rows older than the retention, a small batch at a time.

When the database is down or slow the writer retries with backoff and the deque keeps the newest
``buffer_size`` events; when it overflows the oldest are dropped, counted (``Node.dropped_events``,
the ``worker_recorder_dropped_events_total`` metric), logged, and a node-level marker event says
how many once the database is back. When the workers keep the CPU busy the writer paces itself
(it sleeps several times the CPU time a batch took), so that history never slows them much.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import typing
import uuid
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import TYPE_CHECKING, Any, Final, cast

from django.db import DataError, IntegrityError, connections, transaction
from django.db.models import Exists, Field, Model, OuterRef, Q, QuerySet
from django.db.models.functions import Now

from .core.backoff import Backoff
from .core.context import LOGGER_NAME
from .core.events import (
    AttemptFailed,
    AttemptStarted,
    AttemptSucceeded,
    LifecycleEvent,
    Listener,
    ReportedEvent,
    WorkerFinished,
)
from .core.execution import Failure, WorkerStatus
from .core.pool import WorkerPool
from .logging import EVENT_LEVELS as _LOG_LEVELS
from .models import Execution, ExecutionEvent, ExecutionStatus, Node

if TYPE_CHECKING:
    from .metrics import WorkerMetrics

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_BUFFER_SIZE",
    "DEFAULT_HEARTBEAT_INTERVAL",
    "HistoryRecorder",
    "PruneCounts",
    "close_orphans",
    "count_prunable",
    "prune_history",
    "prune_step",
]

logger = logging.getLogger(LOGGER_NAME)


DEFAULT_BUFFER_SIZE: Final = 1_000
DEFAULT_BATCH_SIZE: Final = 1_000
DEFAULT_HEARTBEAT_INTERVAL: Final = 10.0
#: The grace period is this many heartbeat intervals unless given.
ORPHAN_GRACE_INTERVALS: Final = 3
DEFAULT_PRUNE_INTERVAL: Final = 600.0
DEFAULT_PRUNE_BATCH_SIZE: Final = 1_000

#: Retrying after a failed write: at once the first time (a connection the server closed while it
#: was idle), then 0.25 s, 0.5 s, ... up to 5 s.
RETRY_BACKOFF: Final = Backoff(initial=0.25, maximum=5.0, multiplier=2.0, jitter=0.1)
#: How long the writer waits for more events after the first of a burst (one transaction for an
#: attempt's three events rather than three).
LINGER: Final = 0.05
#: Under CPU contention the writer sleeps this many times the CPU time its batch took: it then
#: uses at most about 1/(1 + PACING) of the time the workers could use.
PACING: Final = 39.0
#: Other threads of the process used at least this share of a core during a batch: contention.
CONTENTION: Final = 0.25
#: Under contention a batch is sized to take about this much CPU time (seconds).
CONTENDED_SLICE: Final = 0.002
#: The writer wakes at least this often, even when idle (a cheap check that nothing is pending).
IDLE_WAKEUP: Final = 1.0

#: The event types that add a line to an execution's report (and a row here).
_REPORTED: Final = frozenset(typing.get_args(ReportedEvent))
#: Their level as stored: the level the logging listener logs them at (INFO, WARNING, ERROR).
_EVENT_LEVELS: Final = {kind: logging.getLevelName(_LOG_LEVELS.get(kind, logging.INFO)) for kind in _REPORTED}
_OPEN: Final = (ExecutionStatus.RUNNING.value, ExecutionStatus.DEFERRED.value)


#: An event row: node id, execution id (None for node-level events), timestamp, level, message.
_EventRow = tuple[uuid.UUID, uuid.UUID | None, datetime, str, str]
#: Rows per multi-row INSERT on PostgreSQL (x 12 columns: well under its 65,535 parameters).
_ROWS_PER_STATEMENT: Final = 500
_EVENT_COLUMNS: Final = ("node", "execution", "timestamp", "level", "message")
_EXECUTION_COLUMNS: Final = (
    "id",
    "node",
    "worker",
    "attempt",
    "max_attempts",
    "status",
    "started_at",
    "finished_at",
    "duration",
    "error",
    "traceback",
    "created_at",
)
#: What an upsert of an attempt's row updates: everything but its identity and creation.
_EXECUTION_UPDATE_FIELDS: Final = tuple(
    name for name in _EXECUTION_COLUMNS if name not in ("id", "node", "worker", "created_at")
)


def _execute_many(
    database: str, model: type[Model], names: Sequence[str], rows: Sequence[Sequence[Any]], tail: str
) -> None:
    """``INSERT INTO <model> (<names>) VALUES (...) <tail>`` for every row.

    The rows of a batch are plain values: building and saving a model instance per row (what
    ``bulk_create`` does) costs several times more. On PostgreSQL the values are what the ORM
    gives psycopg already (UUIDs, aware datetimes) and go in multi-row statements of
    ``_ROWS_PER_STATEMENT`` rows; elsewhere they go through each field's ``get_db_prep_save``
    (strings on SQLite) and one ``executemany``.
    """
    connection = connections[database]
    fields = [cast("Field[Any, Any]", model._meta.get_field(name)) for name in names]
    quote = connection.ops.quote_name
    sql = "INSERT INTO {} ({}) VALUES ({}){}".format(
        quote(model._meta.db_table),
        ", ".join(quote(str(field.column)) for field in fields),
        ", ".join(["%s"] * len(fields)),
        tail,
    )
    if connection.vendor == "postgresql":
        # One statement per chunk of rows: the server plans and runs one INSERT, not one per row.
        one = "({})".format(", ".join(["%s"] * len(fields)))
        head, _, _ = sql.partition(" VALUES ")
        with connection.cursor() as cursor:
            for start in range(0, len(rows), _ROWS_PER_STATEMENT):
                chunk = rows[start : start + _ROWS_PER_STATEMENT]
                cursor.execute(
                    f"{head} VALUES {', '.join([one] * len(chunk))}{tail}",
                    [value for row in chunk for value in row],
                )
        return
    preps = [field.get_db_prep_save for field in fields]
    params = [[prep(value, connection) for prep, value in zip(preps, row, strict=True)] for row in rows]
    with connection.cursor() as cursor:
        cursor.executemany(sql, params)


def _upsert_executions(database: str, rows: Sequence[tuple[Any, ...]]) -> None:
    """Insert or update attempts' rows (PostgreSQL and SQLite both speak ``ON CONFLICT``)."""
    quote = connections[database].ops.quote_name
    updates = ", ".join(f"{quote(name)} = EXCLUDED.{quote(name)}" for name in _EXECUTION_UPDATE_FIELDS)
    _execute_many(
        database, Execution, _EXECUTION_COLUMNS, rows, f" ON CONFLICT ({quote('id')}) DO UPDATE SET {updates}"
    )


def _insert_events(database: str, rows: Sequence[_EventRow]) -> None:
    """Insert event rows: ``COPY`` on PostgreSQL (its fastest way in), else :func:`_execute_many`."""
    connection = connections[database]
    if connection.vendor != "postgresql":
        _execute_many(database, ExecutionEvent, _EVENT_COLUMNS, rows, "")
        return
    meta = ExecutionEvent._meta
    quote = connection.ops.quote_name
    columns = ", ".join(quote(str(cast("Field[Any, Any]", meta.get_field(name)).column)) for name in _EVENT_COLUMNS)
    with (
        connection.cursor() as cursor,
        cursor.cursor.copy(  # the psycopg cursor under Django's wrapper
            f"COPY {quote(meta.db_table)} ({columns}) FROM STDIN"
        ) as copy,
    ):
        for row in rows:
            copy.write_row(row)


def _text(value: str) -> str:
    """PostgreSQL rejects NUL characters in text: show them escaped instead of losing the batch."""
    return value.replace("\x00", "\\x00") if "\x00" in value else value


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _now() -> datetime:
    return datetime.now(UTC)


class _Marker:
    """Put in the queue by :meth:`HistoryRecorder.flush` and ``stop``: done once what precedes it is written."""

    __slots__ = ("done", "ok", "stop")

    def __init__(self, stop: bool = False) -> None:
        self.done = threading.Event()
        self.ok = False
        self.stop = stop

    def finish(self, ok: bool) -> None:
        self.ok = ok
        self.done.set()


@dataclass(slots=True)
class _Attempt:
    """What the writer knows of one attempt's row (written whole on every change: an upsert)."""

    id: uuid.UUID
    worker: str
    attempt: int
    max_attempts: int
    status: str
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration: float | None = None
    error: str = ""
    traceback: str = ""

    def as_row(self, node_id: uuid.UUID) -> tuple[Any, ...]:
        """The row's values, in ``_EXECUTION_COLUMNS`` order."""
        return (
            self.id,
            node_id,
            self.worker,
            self.attempt,
            self.max_attempts,
            self.status,
            self.started_at,
            self.finished_at,
            self.duration,
            self.error,
            self.traceback,
            self.created_at,
        )


def _shape(exc: BaseException) -> tuple[Any, ...] | None:
    """What the formatted traceback of ``exc`` depends on, or None when it is not worth caching.

    Per exception of the chain: its type, its message, how it is chained, and the code and
    instruction of every frame (hence the lines and the carets). ``None`` for exception groups
    and exceptions with notes, and for a message that cannot be computed.
    """
    parts: list[Any] = []
    seen: set[int] = set()
    link = "head"
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(parts) < 16:
        seen.add(id(current))
        if isinstance(current, BaseExceptionGroup) or getattr(current, "__notes__", None):
            return None
        frames = []
        tb = current.__traceback__
        while tb is not None:
            frames.append((tb.tb_frame.f_code, tb.tb_lasti, tb.tb_lineno))
            tb = tb.tb_next
        try:
            message = str(current)
        except Exception:
            return None
        parts.append((link, type(current), message, tuple(frames)))
        if current.__cause__ is not None:
            current, link = current.__cause__, "cause"
        elif current.__context__ is not None and not current.__suppress_context__:
            current, link = current.__context__, "context"
        else:
            current = None
    return tuple(parts)


class _TracebackCache:
    """Formatted tracebacks by shape: a worker failing in a loop has its traceback formatted once.

    Formatting a traceback (source lines, carets) costs tens of microseconds, more than writing the
    rows; the tracebacks of a crash loop are all alike.
    """

    def __init__(self, size: int = 128) -> None:
        self.size = size
        self._texts: dict[tuple[Any, ...], str] = {}

    def format(self, failure: Failure) -> str:
        try:
            key = _shape(failure.exception)
            text = None if key is None else self._texts.get(key)
        except TypeError:  # an unhashable part (an exotic exception type): no caching
            key = text = None
        if text is None:
            text = _text(failure.traceback)
            if key is not None:
                if len(self._texts) >= self.size:
                    del self._texts[next(iter(self._texts))]  # the oldest
                self._texts[key] = text
        return text


class _PoisonBatchError(Exception):
    """A batch the database rejects for what it contains, not because it is unreachable."""


class HistoryRecorder:
    """Stores a pool's execution attempts and events in the database (see the module doc).

    A :class:`~django_workers.services.ProcessService`: :meth:`start` subscribes it to the pool
    and starts the writer thread (it touches no database itself), :meth:`stop` writes what is
    buffered within its timeout and marks the node stopped. :meth:`flush` waits until everything
    received so far is written.
    """

    def __init__(
        self,
        database: str = "default",
        *,
        buffer_size: int = DEFAULT_BUFFER_SIZE,
        batch_size: int = DEFAULT_BATCH_SIZE,
        heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL,
        orphan_grace: float | None = None,
        retention_days: float | None = 7,
        prune_interval: float = DEFAULT_PRUNE_INTERVAL,
        prune_batch_size: int = DEFAULT_PRUNE_BATCH_SIZE,
        metrics: WorkerMetrics | None = None,
        retry_backoff: Backoff = RETRY_BACKOFF,
    ) -> None:
        for label, count in (("buffer_size", buffer_size), ("batch_size", batch_size), ("prune", prune_batch_size)):
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                raise ValueError(f"{label} must be an int >= 1, got {count!r}")
        if not heartbeat_interval > 0:
            raise ValueError(f"heartbeat_interval must be > 0 seconds, got {heartbeat_interval!r}")
        grace = ORPHAN_GRACE_INTERVALS * heartbeat_interval if orphan_grace is None else orphan_grace
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

        # -- shared by the listener and the writer -------------------------------------------
        self._queue: deque[Any] = deque()
        self._wake = threading.Event()
        # Overflow: drop this many of the oldest at once, so that a full buffer costs the
        # listener one trim per chunk rather than one per event.
        self._drop_chunk = max(1, min(buffer_size // 10, 100))
        self._trim_lock = threading.Lock()
        self._dropped = 0  # total dropped, only changed under _trim_lock
        #: What :meth:`start` subscribes to the pool (``recorder(event)`` calls it too).
        self.listener: Listener = self._make_listener()
        # -- set by stop() ------------------------------------------------------------------------
        self._stop_requested = threading.Event()
        self._never = threading.Event()
        self._deadline = float("inf")
        self._stop_marker: _Marker | None = None
        # -- the writer's own state ---------------------------------------------------------
        self._pool: WorkerPool | None = None
        self._thread: threading.Thread | None = None
        self.started_at: datetime | None = None
        self._workers: list[str] = []
        self._registered = False
        self._attempts: dict[str, _Attempt] = {}  # the latest attempt of each worker, by id
        self._latest: dict[str, str] = {}  # worker name -> id of its latest attempt
        self._failures = 0
        self._outage_began: float | None = None
        self._poison_strikes = 0
        self._dropped_seen = 0
        self._dropped_written = 0
        self._unreported_drops = 0
        self._first_drop_at: datetime | None = None
        self._next_heartbeat = 0.0
        self._next_prune = 0.0
        self._pruning = False
        self._db_now: datetime | None = None
        self._contended = False
        self._idle = True  # the writer waited for events: the next one starts a burst
        self._contended_batch = min(50, batch_size)
        self._tracebacks = _TracebackCache()

    def __repr__(self) -> str:
        return f"<HistoryRecorder database={self.database!r} node={self.node_id}>"

    # -- the listener (worker threads) ------------------------------------------------------------

    def _make_listener(self) -> Listener:
        """The listener: a plain function over closure variables (the cheapest thing to call).

        An append, a ``len()`` and a chained comparison; only the first event after the writer
        emptied the queue sets the writer's Event, and only an overflow takes the trim path.
        """
        queue = self._queue
        append = queue.append
        notify = self._notify
        buffer_size = self.buffer_size

        def listener(event: LifecycleEvent) -> None:
            append(event)
            if not 1 < len(queue) <= buffer_size:
                notify()

        return listener

    def __call__(self, event: LifecycleEvent) -> None:
        """Queue one lifecycle event: a deque append, and an ``Event.set()`` on the first of a burst."""
        self.listener(event)

    def _notify(self) -> None:
        if len(self._queue) > self.buffer_size:
            self._trim()
            return  # the writer is behind, hence awake: no need to wake it
        self._wake.set()

    def _trim(self) -> None:
        """Drop the oldest events until the buffer has room again (a chunk at a time).

        Every pop from the queue happens under ``_trim_lock`` (here and in the writer's ``_take``);
        appends take no lock. The chunk is popped and counted in C (``islice`` over ``popleft``).
        """
        queue = self._queue
        with self._trim_lock:
            excess = len(queue) - (self.buffer_size + 1 - self._drop_chunk)
            if excess <= 0:
                return
            popped = list(islice(iter(queue.popleft, None), excess))
            kinds = list(map(type, popped))
            if _Marker in kinds:  # a flush or stop request is never dropped
                queue.extend(item for item in popped if type(item) is _Marker)
            # Counted: the events the history would have shown (not the pool's own events).
            self._dropped += sum(map(_REPORTED.__contains__, kinds))

    @property
    def dropped(self) -> int:
        """How many reported events were dropped since the start (buffer overflow or rejected batches)."""
        return self._dropped

    @property
    def pending(self) -> int:
        """How many reported events wait in memory (a snapshot: workers may be adding more)."""
        return sum(1 for item in list(self._queue) if type(item) in _REPORTED)

    # -- the service -------------------------------------------------------------------------------

    def start(self, pool: WorkerPool) -> None:
        """Subscribe to ``pool`` and start the writer thread (which registers the node)."""
        if self._thread is not None:
            raise RuntimeError("the history recorder is already started")
        self._pool = pool
        self._workers = pool.names()
        self.started_at = _now()
        pool.add_listener(self.listener)
        thread = threading.Thread(target=self._run, name="django_workers:history", daemon=True)
        self._thread = thread
        thread.start()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything received so far is written; False after ``timeout`` seconds."""
        if self._thread is None or not self._thread.is_alive():
            return False
        marker = _Marker()
        self._queue.append(marker)
        self._wake.set()
        return marker.done.wait(timeout) and marker.ok

    def stop(self, timeout: float = 10.0) -> None:
        """Write what is buffered and mark the node stopped, within ``timeout`` seconds."""
        thread = self._thread
        if thread is None:
            return
        timeout = max(0.0, timeout)
        deadline = time.monotonic() + timeout
        # The writer gives up a little before the deadline, so that it has ended when join() returns.
        self._deadline = deadline - min(0.1, 0.1 * timeout)
        if self._stop_marker is None:
            self._stop_marker = _Marker(stop=True)
            self._queue.append(self._stop_marker)
        self._stop_requested.set()
        self._wake.set()
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            logger.warning(
                "history recorder: the writer did not finish within %g seconds; %d event(s) are not stored",
                timeout,
                self.pending,
            )
            return
        self._thread = None

    # -- the writer thread ---------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._next_heartbeat = time.monotonic()
            self._next_prune = time.monotonic() + self.heartbeat_interval
            self._loop()
        except BaseException:  # pragma: no cover - a bug in the recorder itself
            logger.exception("history recorder: the writer thread crashed; history is no longer stored")
        finally:
            for marker in [item for item in list(self._queue) if type(item) is _Marker]:
                marker.finish(False)
            connections.close_all()  # this thread's connections only

    def _loop(self) -> None:
        while True:
            if self._stop_requested.is_set() and time.monotonic() >= self._deadline:
                pending = self.pending
                marker = self._stop_marker
                if pending or marker is None or not marker.done.is_set():
                    logger.error(
                        "history recorder: stopped with %d event(s) not stored and the node not marked stopped "
                        "(database %r: %s)",
                        pending,
                        self.database,
                        "unreachable" if self._failures else "too slow",
                    )
                return
            self._check_drops()
            try:
                if not self._registered:
                    self._register()
                self._periodic()
                stopped = self._write_next_batch()
            except Exception as exc:
                self._failed(exc)
                continue
            self._succeeded()
            if stopped:
                return
            if self._queue:
                continue
            now = time.monotonic()
            due = min(self._next_heartbeat, self._next_prune if not self._pruning else now)
            self._idle = True
            self._wake.wait(max(0.0, min(due - now, IDLE_WAKEUP)))

    # -- writing events ----------------------------------------------------------------------------

    def _take(self) -> list[Any]:
        queue = self._queue
        stopping = self._stop_requested.is_set()
        lingering, self._idle = self._idle, False
        if lingering and 0 < len(queue) < self.batch_size and not stopping:
            # The first event of a burst woke us: let the burst arrive (a flush or a stop request
            # ends the wait early), and see meanwhile whether the workers keep the CPU busy (then
            # this batch is a small one).
            wall, process, own = time.monotonic(), time.process_time(), time.thread_time()
            self._wake.clear()
            self._wake.wait(LINGER)
            others = (time.process_time() - process) - (time.thread_time() - own)
            self._contended = others >= CONTENTION * (time.monotonic() - wall)
        self._wake.clear()
        limit = self._contended_batch if self._contended and not stopping else self.batch_size
        with self._trim_lock:
            return list(islice(iter(queue.popleft, None), min(limit, len(queue))))

    def _requeue(self, items: Sequence[Any]) -> None:
        """Put items back at the front (oldest first), then drop the oldest if that overflows."""
        with self._trim_lock:
            self._queue.extendleft(reversed(items))
        if len(self._queue) > self.buffer_size:
            self._trim()

    def _write_next_batch(self) -> bool:
        """Write one batch (one transaction). True when the stop request was reached and handled."""
        batch = self._take()
        if not batch and not self._unreported_drops:
            return False
        stop_at = next((i for i, item in enumerate(batch) if type(item) is _Marker and item.stop), None)
        if stop_at is not None:  # what follows a stop request is not written
            self._requeue(batch[stop_at + 1 :])
            batch = batch[: stop_at + 1]
        events = [item for item in batch if type(item) is not _Marker]
        cpu, process, began = time.thread_time(), time.process_time(), time.monotonic()
        try:
            try:
                self._write(events)
            except (DataError, IntegrityError) as exc:
                self._poison_strikes += 1
                if self._poison_strikes < 2:
                    self._registered = False  # a missing node row, say: register again, retry once
                    raise
                raise _PoisonBatchError(exc) from exc
        except _PoisonBatchError as exc:
            logger.error(
                "history recorder: database %r rejected a batch of %d event(s), which is dropped: %s",
                self.database,
                len(batch),
                _describe(exc),
                exc_info=exc.__cause__,
            )
            self._poison_strikes = 0
            with self._trim_lock:
                self._dropped += sum(1 for item in batch if type(item) in _REPORTED)
            self._check_drops()
            self._finish_markers(batch, ok=False)
            if stop_at is not None:
                self._stop_with(batch[stop_at])
            return stop_at is not None
        except BaseException:
            self._requeue(batch)  # retried; the oldest go first if it overflows
            raise
        self._poison_strikes = 0
        self._finish_markers(batch[:stop_at], ok=True)
        if stop_at is not None:
            self._stop_with(batch[stop_at])
            return True
        if events:
            self._pace(time.thread_time() - cpu, time.process_time() - process, time.monotonic() - began, len(events))
        return False

    def _stop_with(self, marker: _Marker) -> None:
        """The stop request was reached: finalize the node (or retry that alone)."""
        try:
            self._finalize()
        except BaseException:
            self._requeue([marker])
            raise
        marker.finish(True)

    @staticmethod
    def _finish_markers(batch: Sequence[Any], ok: bool) -> None:
        for item in batch:
            if type(item) is _Marker:
                item.finish(ok)

    def _write(self, events: Sequence[LifecycleEvent]) -> None:
        """One transaction: the attempts' rows (upsert), their events, and the drop marker if due."""
        attempts, rows = self._apply(events)
        unreported = self._unreported_drops
        if unreported:
            rows.append(
                (
                    self.node_id,
                    None,
                    self._first_drop_at or _now(),
                    "WARNING",
                    f"dropped {unreported} event(s), the oldest: the history buffer of {self.buffer_size} "
                    f"events was full while database {self.database!r} was unreachable or too slow",
                )
            )
        database = self.database
        with transaction.atomic(using=database):
            if attempts:
                _upsert_executions(database, [attempt.as_row(self.node_id) for attempt in attempts.values()])
            if rows:
                _insert_events(database, rows)
            if unreported:
                Node.objects.using(database).filter(pk=self.node_id).update(
                    dropped_events=self._dropped_written + unreported
                )
        # Committed: remember the rows' state; forget attempts that are no longer the latest.
        self._attempts.update(attempts)
        for execution_id, attempt in attempts.items():
            previous = self._latest.get(attempt.worker)
            if previous != execution_id:
                self._latest[attempt.worker] = execution_id
                if previous is not None:
                    self._attempts.pop(previous, None)
        if unreported:
            self._dropped_written += unreported
            self._unreported_drops = 0
            self._first_drop_at = None
            logger.warning(
                "history recorder: %d event(s) were dropped (buffer of %d full); the database has them counted",
                unreported,
                self.buffer_size,
            )

    def _apply(self, events: Iterable[LifecycleEvent]) -> tuple[dict[str, _Attempt], list[_EventRow]]:
        """The new state of the attempts these events touch (copies: nothing changes until committed)."""
        known = self._attempts
        touched: dict[str, _Attempt] = {}
        rows: list[_EventRow] = []
        node_id = self.node_id
        levels = _EVENT_LEVELS
        for event in events:
            kind = type(event)
            level = levels.get(kind)
            if level is None:
                if kind is WorkerFinished:
                    self._finished(cast(WorkerFinished, event), known, touched)
                continue  # pool events are not stored: the node row says what the process runs
            reported = cast(ReportedEvent, event)
            record = reported.record
            execution_id = reported.execution_id
            attempt = touched.get(execution_id)
            if attempt is None:
                previous = known.get(execution_id)
                if previous is not None:
                    attempt = replace(previous)
                else:
                    attempt = _Attempt(
                        id=uuid.UUID(execution_id),
                        worker=reported.worker[:255],
                        attempt=max(1, reported.attempt),  # a deferral is the first attempt's (attempt 0)
                        max_attempts=reported.max_attempts,
                        status=reported.status.value,
                        created_at=record.timestamp,
                    )
                touched[execution_id] = attempt
            attempt.status = reported.status.value
            if reported.attempt > 1:
                attempt.attempt = reported.attempt
            if kind is AttemptStarted:
                attempt.started_at = record.timestamp
            elif kind is AttemptFailed:
                failed = cast(AttemptFailed, event)
                attempt.finished_at = record.timestamp
                attempt.duration = failed.duration
                attempt.error = _text(failed.failure.message)
                attempt.traceback = self._tracebacks.format(failed.failure)  # here, not in the worker's thread
            elif kind is AttemptSucceeded:
                attempt.finished_at = record.timestamp
                attempt.duration = cast(AttemptSucceeded, event).duration
            rows.append((node_id, attempt.id, record.timestamp, level, _text(record.message)))
        return touched, rows

    @staticmethod
    def _finished(event: WorkerFinished, known: dict[str, _Attempt], touched: dict[str, _Attempt]) -> None:
        """A worker stopped while deferred never starts: its row is closed (still ``deferred``)."""
        if event.status is not WorkerStatus.DEFERRED:
            return
        attempt = touched.get(event.execution_id)
        if attempt is None:
            previous = known.get(event.execution_id)
            if previous is None:
                return
            attempt = touched[event.execution_id] = replace(previous)
        if attempt.finished_at is None:
            attempt.finished_at = _now()

    # -- drops ------------------------------------------------------------------------------------

    def _check_drops(self) -> None:
        total = self._dropped
        new = total - self._dropped_seen
        if new <= 0:
            return
        self._dropped_seen = total
        if self.metrics is not None:
            self.metrics.record_dropped(new)
        if not self._unreported_drops:
            self._first_drop_at = _now()
            logger.warning(
                "history recorder: the buffer of %d events is full; dropping the oldest events until database "
                "%r catches up",
                self.buffer_size,
                self.database,
            )
        self._unreported_drops += new

    # -- pacing -------------------------------------------------------------------------------------

    def _pace(self, cpu: float, process: float, wall: float, count: int) -> None:
        """Give way to busy workers: under CPU contention, small batches and a sleep after each.

        The writer then uses about 1/(1 + PACING) of what the workers could use: a worker that
        keeps the CPU busy pays little for its history, which keeps the newest events (the buffer
        drops the oldest) until the load eases.
        """
        others = process - cpu
        self._contended = wall > 0 and others >= CONTENTION * wall
        if not self._contended or self._stop_requested.is_set():
            return
        per_event = cpu / max(1, count)
        self._contended_batch = max(10, min(self.batch_size, int(CONTENDED_SLICE / max(per_event, 1e-6))))
        self._stop_requested.wait(min(1.0, PACING * cpu))

    # -- failures -----------------------------------------------------------------------------------

    def _failed(self, exc: Exception) -> None:
        """Log, close the broken connection, and wait before the next try (interruptibly)."""
        self._failures += 1
        with contextlib.suppress(Exception):
            connections[self.database].close()
        if self._failures == 1:
            # Often a connection the server closed while idle: retry at once with a new one.
            self._outage_began = time.monotonic()
            logger.debug("history recorder: writing to database %r failed (%s); retrying", self.database, exc)
            return
        if self._failures == 2:
            logger.warning(
                "history recorder: cannot write to database %r (%s); retrying with backoff, keeping up to %d "
                "events in memory",
                self.database,
                _describe(exc),
                self.buffer_size,
            )
        else:
            logger.debug("history recorder: database %r still failing: %s", self.database, _describe(exc))
        self._sleep(self.retry_backoff.delay(self._failures - 1))

    def _succeeded(self) -> None:
        if self._failures >= 2 and self._outage_began is not None:
            logger.warning(
                "history recorder: database %r is reachable again after %.1f seconds",
                self.database,
                time.monotonic() - self._outage_began,
            )
        self._failures = 0
        self._outage_began = None

    def _sleep(self, seconds: float) -> None:
        """Wait ``seconds``; the first stop request cuts it short, later waits end at the stop deadline."""
        if not self._stop_requested.is_set():
            self._stop_requested.wait(seconds)
        else:
            self._never.wait(max(0.0, min(seconds, self._deadline - time.monotonic())))

    # -- the node ------------------------------------------------------------------------------------

    def _register(self) -> None:
        database = self.database
        assert self.started_at is not None
        with transaction.atomic(using=database):
            nodes = Node.objects.using(database)
            if not nodes.filter(pk=self.node_id).update(last_heartbeat=Now()):
                nodes.create(
                    id=self.node_id,
                    hostname=self.hostname,
                    pid=self.pid,
                    started_at=self.started_at,
                    last_heartbeat=Now(),
                    version=_version()[:50],
                    workers=list(self._workers),
                    dropped_events=self._dropped_written,
                )
        self._registered = True
        self._next_heartbeat = time.monotonic()  # heartbeat (and sweep) at once

    def _periodic(self) -> None:
        now = time.monotonic()
        if now >= self._next_heartbeat:
            self._heartbeat()
            self._close_orphans()
            self._next_heartbeat = now + self.heartbeat_interval
        if self.retention_days and (self._pruning or now >= self._next_prune):
            cutoff = _now() - timedelta(days=self.retention_days)
            counts = prune_step(self.database, cutoff, self.prune_batch_size, keep_node=self.node_id)
            self._pruning = counts.total >= self.prune_batch_size  # more left: another step next cycle
            if counts.total:
                logger.info(
                    "history recorder: pruned %d execution(s), %d event(s) and %d node(s) older than %g day(s)",
                    counts.executions,
                    counts.events,
                    counts.nodes,
                    self.retention_days,
                )
            if not self._pruning:
                self._next_prune = now + self.prune_interval

    def _heartbeat(self) -> None:
        database = self.database
        nodes = Node.objects.using(database).filter(pk=self.node_id)
        update: dict[str, Any] = {"last_heartbeat": Now()}
        pool = self._pool
        if pool is not None:
            names = pool.names()
            if names != self._workers:  # workers registered after the start
                self._workers = names
                update["workers"] = names
        if not nodes.update(**update):
            self._registered = False  # the row is gone (deleted by hand?): register again
            self._register()
        self._db_now = nodes.values_list("last_heartbeat", flat=True).get()
        if self.metrics is not None:
            self.metrics.set_heartbeat(self._db_now)

    def _close_orphans(self) -> None:
        """Close the open attempts of nodes whose heartbeat is older than the grace period."""
        if self._db_now is None:
            return
        closed = close_orphans(
            self.database, self._db_now - timedelta(seconds=self.orphan_grace), keep_node=self.node_id
        )
        if closed:
            logger.warning("history recorder: closed %d execution(s) of lost node(s) as error", closed)

    def _finalize(self) -> None:
        """The last transaction: the node is stopped; its attempts still open are closed."""
        database = self.database
        now = _now()
        with transaction.atomic(using=database):
            Node.objects.using(database).filter(pk=self.node_id).update(
                stopped_at=Now(), last_heartbeat=Now(), dropped_events=self._dropped_written
            )
            node = f"{self.hostname}:{self.pid}"
            for execution in Execution.objects.using(database).filter(
                node_id=self.node_id, status__in=_OPEN, finished_at__isnull=True
            ):
                if execution.status == ExecutionStatus.RUNNING:
                    message = f"node {node} stopped while the attempt was still running"
                    _close(database, execution, now, message, ExecutionStatus.ERROR.value)
                else:
                    message = f"node {node} stopped before the deferred attempt started"
                    _close(database, execution, now, message, ExecutionStatus.DEFERRED.value, level="WARNING")


def _version() -> str:
    from . import __version__

    return __version__


def _close(
    database: str, execution: Execution, finished_at: datetime, message: str, status: str, level: str = "ERROR"
) -> bool:
    """Close one open attempt (unless somebody else just did) with an event saying why."""
    duration = None
    if execution.started_at is not None:
        duration = max(0.0, (finished_at - execution.started_at).total_seconds())
    updated = (
        Execution.objects.using(database)
        .filter(pk=execution.pk, status__in=_OPEN, finished_at__isnull=True)
        .update(
            status=status,
            finished_at=finished_at,
            duration=duration,
            error=message if status == ExecutionStatus.ERROR else execution.error,
        )
    )
    if updated:
        ExecutionEvent.objects.using(database).create(
            node_id=execution.node_id, execution=execution, timestamp=_now(), level=level, message=message
        )
    return bool(updated)


def close_orphans(database: str, heartbeat_before: datetime, keep_node: uuid.UUID | None = None) -> int:
    """Close, as ``error``, the open attempts of nodes whose last heartbeat is before ``heartbeat_before``.

    An attempt is open when its status is ``running`` or ``deferred`` and it has no finish time.
    Each closed attempt gets an ERROR event naming the lost node (``host:pid``); its finish time
    is the node's last heartbeat. Returns how many were closed. Safe to run from several nodes at
    once: an attempt is closed once.
    """
    open_attempts = Execution.objects.using(database).filter(
        node=OuterRef("pk"), status__in=_OPEN, finished_at__isnull=True
    )
    lost = _excluding(
        Node.objects.using(database).filter(last_heartbeat__lt=heartbeat_before).filter(Exists(open_attempts)),
        keep_node,
    )
    closed = 0
    for node in lost[:100]:
        seen = node.last_heartbeat.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
        message = f"node {node.hostname}:{node.pid} was lost (no heartbeat since {seen} UTC)"
        with transaction.atomic(using=database):
            for execution in Execution.objects.using(database).filter(
                node=node, status__in=_OPEN, finished_at__isnull=True
            ):
                closed += _close(database, execution, node.last_heartbeat, message, ExecutionStatus.ERROR.value)
    return closed


# -- retention ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PruneCounts:
    """Rows deleted (or, for a dry run, that would be)."""

    executions: int = 0
    events: int = 0
    nodes: int = 0

    @property
    def total(self) -> int:
        """Rows of every kind."""
        return self.executions + self.events + self.nodes

    def __add__(self, other: PruneCounts) -> PruneCounts:
        return PruneCounts(self.executions + other.executions, self.events + other.events, self.nodes + other.nodes)


def _excluding(nodes: QuerySet[Node], keep_node: uuid.UUID | None) -> QuerySet[Node]:
    return nodes if keep_node is None else nodes.exclude(pk=keep_node)


def _prunable_nodes(
    database: str, cutoff: datetime, keep_node: uuid.UUID | None, *, recent_only: bool = False
) -> QuerySet[Node]:
    """Nodes whose last heartbeat is before the cutoff and that have no execution left.

    ``recent_only``: ignore the executions created before the cutoff (they are pruned first), to count.
    """
    executions = Execution.objects.using(database).filter(node=OuterRef("pk"))
    if recent_only:
        executions = executions.filter(created_at__gte=cutoff)
    nodes = Node.objects.using(database).filter(last_heartbeat__lt=cutoff).filter(~Exists(executions))
    return _excluding(nodes, keep_node)


def count_prunable(database: str, cutoff: datetime, keep_node: uuid.UUID | None = None) -> PruneCounts:
    """What :func:`prune_history` would delete for ``cutoff``, counted without deleting anything."""
    executions = Execution.objects.using(database).filter(created_at__lt=cutoff)
    events = ExecutionEvent.objects.using(database).filter(
        Q(execution__created_at__lt=cutoff) | Q(execution__isnull=True, timestamp__lt=cutoff)
    )
    nodes = _prunable_nodes(database, cutoff, keep_node, recent_only=True)
    return PruneCounts(executions.count(), events.count(), nodes.count())


def prune_step(
    database: str, cutoff: datetime, batch_size: int = DEFAULT_PRUNE_BATCH_SIZE, keep_node: uuid.UUID | None = None
) -> PruneCounts:
    """Delete one batch (one transaction) of history older than ``cutoff``.

    At most ``batch_size`` executions (created before the cutoff) with their events; once none
    is left, at most ``batch_size`` node-level events and then nodes (last heartbeat before the
    cutoff, no execution left). Call it until it returns fewer than ``batch_size`` rows in total.
    """
    with transaction.atomic(using=database):
        ids = list(
            Execution.objects.using(database)
            .filter(created_at__lt=cutoff)
            .order_by("created_at")
            .values_list("pk", flat=True)[:batch_size]
        )
        events = 0
        if ids:
            events = ExecutionEvent.objects.using(database).filter(execution_id__in=ids).delete()[0]
            Execution.objects.using(database).filter(pk__in=ids).only("pk").delete()
        if len(ids) >= batch_size:
            return PruneCounts(executions=len(ids), events=events)
        room = batch_size - len(ids)
        node_events = list(
            ExecutionEvent.objects.using(database)
            .filter(execution__isnull=True, timestamp__lt=cutoff)
            .values_list("pk", flat=True)[:room]
        )
        if node_events:
            events += ExecutionEvent.objects.using(database).filter(pk__in=node_events).delete()[0]
        room -= len(node_events)
        nodes = 0
        if room > 0:
            node_ids = list(_prunable_nodes(database, cutoff, keep_node).values_list("pk", flat=True)[:room])
            if node_ids:
                deleted = Node.objects.using(database).filter(pk__in=node_ids).delete()[1]
                nodes = deleted.get(Node._meta.label, 0)
                events += deleted.get(ExecutionEvent._meta.label, 0)
    return PruneCounts(executions=len(ids), events=events, nodes=nodes)


def prune_history(
    database: str, cutoff: datetime, batch_size: int = DEFAULT_PRUNE_BATCH_SIZE, keep_node: uuid.UUID | None = None
) -> PruneCounts:
    """Delete all history older than ``cutoff``, in transactions of at most ``batch_size`` rows."""
    total = PruneCounts()
    while True:
        counts = prune_step(database, cutoff, batch_size, keep_node)
        total += counts
        if counts.total < batch_size:
            return total
