"""The writer thread: drains the buffer into the database, one transaction per batch.

Between batches it keeps the node row alive and prunes (its collaborators :class:`NodeRow` and
:class:`Pruner` do the work); after each heartbeat it corrects the workers' states that events
alone cannot keep true (:meth:`~django_workers.history.states.StateLog.reassert`). It lingers
briefly after the first event of a burst so that an attempt's events share a transaction; it
paces itself when the workers keep the CPU busy; it retries with backoff when the database
fails, and drops a batch the database rejects twice for what it contains; once a stop is
requested it gives up at the stop deadline.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from django.db import DataError, IntegrityError, connections, transaction

from ..core.backoff import Backoff
from ..core.context import LOGGER_NAME
from ..core.events import LifecycleEvent
from ..models import ExecutionStatus, WorkerState
from .attempts import AttemptLog
from .buffer import EventBuffer, Marker, finish_markers
from .nodes import NodeRow
from .retention import Pruner
from .sql import EventRow, insert_events, upsert_executions
from .states import StateLog, upsert_states
from .tallies import add_tallies, tally_events

if TYPE_CHECKING:
    from ..core.execution import WorkerExecution
    from ..observability.metrics import WorkerMetrics

__all__ = ["RETRY_BACKOFF", "Writer"]

logger = logging.getLogger(LOGGER_NAME)

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


class _PoisonBatchError(Exception):
    """A batch the database rejects for what it contains, not because it is unreachable."""


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _rate(per_second: float) -> str:
    return f"{per_second:.0f}" if per_second >= 10 else f"{per_second:.1f}"


class _Run:
    """One run of overflow drops (from the first noticed to the marker that stores their count)."""

    __slots__ = ("began", "contended", "failure", "first_at", "last", "overflowed")

    def __init__(self, began: tuple[float, int, int]) -> None:
        #: When the run began, as wall-clock time (the marker's timestamp).
        self.first_at = datetime.now(UTC)
        #: (monotonic time, arrivals, events stored) at the check before the first drop, and at the
        #: last check that noticed new drops: the window of the rates the marker gives.
        self.began = began
        self.last = began
        self.overflowed = 0
        #: A failed write seen during the run (its description), if any.
        self.failure = ""
        #: Whether the writer was giving way to busy workers during the run.
        self.contended = False


class _Drops:
    """Drops the writer has noticed (the buffer's count) and not yet stored in the database.

    Noticed: added to the metric, and logged once per run of drops. Stored with the next batch:
    a node-level WARNING event saying how many and why, and the node's ``dropped_events``. Why
    is measured, never assumed: the rate at which events arrived while the buffer overflowed, and
    what held the writer back (failed writes, giving way to busy workers, or only its own pace).
    """

    def __init__(self, buffer: EventBuffer, database: str, metrics: WorkerMetrics | None) -> None:
        self._buffer = buffer
        self._database = database
        self._metrics = metrics
        self._seen = 0
        #: Events the writer committed (for the rate it stored at).
        self.stored_events = 0
        self._sample = (time.monotonic(), buffer.arrived, 0)
        self._run: _Run | None = None
        self._rejected = 0  # in batches the database rejected, not stored yet
        self._rejected_unchecked = 0  # of those, not yet told apart by check()
        self._rejection = ""
        #: Noticed, not stored yet.
        self.unreported = 0

    def rejected(self, count: int, exc: BaseException) -> None:
        """``count`` events were discarded with a batch the database rejected for its content."""
        self._rejected += count
        self._rejected_unchecked += count
        self._rejection = _describe(exc)

    def check(self, *, failure: str, contended: bool) -> None:
        """Notice the drops since the last check; ``failure`` describes a write failing now, if one is."""
        total = self._buffer.dropped
        sample = (time.monotonic(), self._buffer.arrived, self.stored_events)
        new = total - self._seen
        if new > 0:
            self._seen = total
            if self._metrics is not None:
                self._metrics.record_dropped(new)
            overflowed, self._rejected_unchecked = new - self._rejected_unchecked, 0
            if overflowed > 0:
                run = self._run
                if run is None:
                    run = self._run = _Run(self._sample)
                    logger.warning(
                        "history recorder: the buffer of %d events is full; dropping the oldest events until "
                        "the writer catches up (%s)",
                        self._buffer.size,
                        _holdback(self._database, failure, contended),
                    )
                run.overflowed += overflowed
                run.last = sample
            self.unreported += new
        run = self._run
        if run is not None:
            run.failure = run.failure or failure
            run.contended = run.contended or contended
        self._sample = sample

    def event_row(self, node: NodeRow) -> EventRow:
        """The node-level event saying how many were dropped and why (written with the next batch)."""
        run = self._run
        return (
            node.node_id,
            None,
            run.first_at if run is not None else datetime.now(UTC),
            "WARNING",
            self._message(),
        )

    def _message(self) -> str:
        run = self._run
        overflowed = run.overflowed if run is not None else 0
        parts = []
        if run is not None and overflowed:
            (began, arrived, stored), (ended, arrived_last, stored_last) = run.began, run.last
            elapsed = max(ended - began, 1e-3)
            overflow = (
                f"the history buffer of {self._buffer.size} events was full at "
                f"{_rate((arrived_last - arrived) / elapsed)} events/s"
            )
            if run.failure:
                overflow += f" while writes to database {self._database!r} failed ({run.failure})"
            elif run.contended:
                overflow += (
                    f"; the writer stored {_rate((stored_last - stored) / elapsed)} events/s, giving way to "
                    "workers that kept the CPU busy"
                )
            else:
                overflow += (
                    f"; the writer stored {_rate((stored_last - stored) / elapsed)} events/s into database "
                    f"{self._database!r}"
                )
            parts.append(overflow)
        if self._rejected:
            parts.append(f"database {self._database!r} rejected a batch ({self._rejection})")
        head = f"dropped {self.unreported} event(s)"
        if len(parts) == 2:
            return f"{head}: {overflowed}, the oldest: {parts[0]}; {self._rejected}: {parts[1]}"
        return f"{head}, the oldest: {parts[0]}" if overflowed else f"{head}: {parts[0]}"

    def stored(self) -> None:
        """The batch with the event row committed."""
        logger.warning(
            "history recorder: %d event(s) were dropped (buffer of %d); the database has them counted",
            self.unreported,
            self._buffer.size,
        )
        self.unreported = 0
        self._rejected = 0
        self._run = None


def _holdback(database: str, failure: str, contended: bool) -> str:
    """What holds the writer back, in a log line."""
    if failure:
        return f"writes to database {database!r} fail: {failure}"
    if contended:
        return "it gives way to workers that keep the CPU busy"
    return f"database {database!r} stores them more slowly than they arrive"


class Writer:
    """The writer thread of a recorder: :meth:`start` it once, :meth:`request_stop`, then :meth:`join`."""

    def __init__(
        self,
        buffer: EventBuffer,
        node: NodeRow,
        pruner: Pruner | None,
        *,
        batch_size: int,
        retry_backoff: Backoff = RETRY_BACKOFF,
        metrics: WorkerMetrics | None = None,
        names: Callable[[], Sequence[str]] | None = None,
        executions: Callable[[], Mapping[str, WorkerExecution]] | None = None,
    ) -> None:
        self.database = node.database
        self.batch_size = batch_size
        self.retry_backoff = retry_backoff
        self._buffer = buffer
        self._node = node
        self._pruner = pruner
        self._attempts = AttemptLog(node.node_id)
        self._states = StateLog(names, executions)
        self._executions = executions
        self._drops = _Drops(buffer, node.database, metrics)
        self._thread: threading.Thread | None = None
        # -- set by request_stop() ------------------------------------------------------------
        self._stop_requested = threading.Event()
        self._never = threading.Event()
        self._deadline = float("inf")
        self._stop_marker: Marker | None = None
        # -- the thread's own state -----------------------------------------------------------
        self._failures = 0
        self._failure = ""  # the last failed write, described, while writes fail
        self._outage_began: float | None = None
        self._poison_strikes = 0
        self._contended = False
        self._idle = True  # the writer waited for events: the next one starts a burst
        self._contended_batch = min(50, batch_size)
        self._reassert_due = False  # a heartbeat was sent: the states are checked after it

    # -- the thread's lifetime -----------------------------------------------------------------------

    def start(self) -> None:
        """Start the thread (it registers the node, then writes what the buffer receives)."""
        if self._thread is not None:
            raise RuntimeError("the history writer is already started")
        self._thread = threading.Thread(target=self._run, name="django_workers:history", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        """Whether the thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def request_stop(self, deadline: float) -> None:
        """Write what precedes the stop request, finalize the node, and end; give up at ``deadline``.

        ``deadline`` is a ``time.monotonic()`` time. Asking again only moves the deadline.
        """
        self._deadline = deadline
        if self._stop_marker is None:
            self._stop_marker = Marker(stop=True)
            self._buffer.put(self._stop_marker)
        self._stop_requested.set()
        self._buffer.wakeup.set()

    def join(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the thread to end; True when it has."""
        if self._thread is not None:
            self._thread.join(timeout)
        return not self.alive

    def _run(self) -> None:
        try:
            if self._pruner is not None:
                self._pruner.schedule(time.monotonic() + self._node.heartbeat_interval)
            self._loop()
        except BaseException:  # pragma: no cover - a bug in the recorder itself
            logger.exception("history recorder: the writer thread crashed; history is no longer stored")
        finally:
            finish_markers(self._buffer.markers(), ok=False)
            connections.close_all()  # this thread's connections only

    def _loop(self) -> None:
        buffer, node, pruner = self._buffer, self._node, self._pruner
        while True:
            if self._stop_requested.is_set() and time.monotonic() >= self._deadline:
                pending = buffer.pending
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
            self._drops.check(failure=self._failure, contended=self._contended)
            try:
                if not node.registered:
                    node.register()
                    self._states.forget()
                if not self._states.seeded:
                    self._seed_states()
                now = time.monotonic()
                self._reassert_due = self._reassert_due or now >= node.next_heartbeat
                node.beat(now)
                if self._reassert_due:
                    self._reassert_states()
                    self._reassert_due = False
                if pruner is not None:
                    pruner.step(now)
                stopped = self._write_next_batch()
            except Exception as exc:
                self._failed(exc)
                continue
            self._succeeded()
            if stopped:
                return
            if len(buffer):
                continue
            now = time.monotonic()
            due = node.next_heartbeat if pruner is None else min(node.next_heartbeat, pruner.due(now))
            self._idle = True
            buffer.wakeup.wait(max(0.0, min(due - now, IDLE_WAKEUP)))

    # -- batches -------------------------------------------------------------------------------------

    def _take(self) -> tuple[list[Any], int]:
        buffer = self._buffer
        stopping = self._stop_requested.is_set()
        lingering, self._idle = self._idle, False
        if lingering and 0 < len(buffer) < self.batch_size and not stopping:
            # The first event of a burst woke us: let the burst arrive (a flush or a stop request
            # ends the wait early), and see meanwhile whether the workers keep the CPU busy (then
            # this batch is a small one).
            wall, process, own = time.monotonic(), time.process_time(), time.thread_time()
            buffer.wakeup.clear()
            buffer.wakeup.wait(LINGER)
            others = (time.process_time() - process) - (time.thread_time() - own)
            self._contended = others >= CONTENTION * (time.monotonic() - wall)
        buffer.wakeup.clear()
        return buffer.take(self._contended_batch if self._contended and not stopping else self.batch_size)

    def _write_next_batch(self) -> bool:
        """Write one batch (one transaction). True when the stop request was reached and handled."""
        batch, drops = self._take()
        if not batch and not self._drops.unreported:
            return False
        stop_at = next((i for i, item in enumerate(batch) if type(item) is Marker and item.stop), None)
        if stop_at is not None:  # what follows a stop request is not written
            self._buffer.requeue(batch[stop_at + 1 :])
            batch = batch[: stop_at + 1]
            # The last batch: it stores every drop so far, those since the loop's last check too.
            self._drops.check(failure=self._failure, contended=self._contended)
        events = [item for item in batch if type(item) is not Marker]
        cpu, process, began = time.thread_time(), time.process_time(), time.monotonic()
        try:
            try:
                self._write(events, drops)
            except (DataError, IntegrityError) as exc:
                self._poison_strikes += 1
                if self._poison_strikes < 2:
                    self._node.register_again()  # a missing node row, say: register again, retry once
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
            self._drops.rejected(self._buffer.discard(batch), exc.__cause__ or exc)
            self._drops.check(failure="", contended=self._contended)
            finish_markers(batch, ok=False)
            if stop_at is not None:
                self._stop_with(batch[stop_at], self._buffer.dropped)
            return stop_at is not None
        except BaseException:
            self._buffer.requeue(batch)  # retried; the oldest go first if it overflows
            raise
        self._poison_strikes = 0
        finish_markers(batch[:stop_at], ok=True)
        if stop_at is not None:
            self._stop_with(batch[stop_at], drops)
            return True
        if events:
            self._pace(time.thread_time() - cpu, time.process_time() - process, time.monotonic() - began, len(events))
        return False

    def _stop_with(self, marker: Marker, drops: int) -> None:
        """The stop request was reached: finalize the node (or retry that alone).

        ``drops`` is the drop count when the batch ending with the request was taken: an attempt
        still open with events dropped after its latest one is closed as ``unknown``.
        """
        attempts = self._attempts
        try:
            self._node.finalize(lambda execution_id: attempts.end_unknown(execution_id, drops))
        except BaseException:
            self._buffer.requeue([marker])
            raise
        marker.finish(True)

    def _seed_states(self) -> None:
        """Write every registered worker's state (a new node: ``unknown`` until they start)."""
        upsert_states(self.database, self._node.node_id, self._states.seed())
        self._states.seeded = True

    def _reassert_states(self) -> None:
        """After a heartbeat: write again the states swept as ``lost`` and those whose ``silent`` changed.

        One query for the node's rows marked ``lost`` (by another node that took this one for
        lost), and an upsert only when some state is to be written.
        """
        database, node_id = self.database, self._node.node_id
        lost = WorkerState.objects.using(database).filter(node_id=node_id, status=ExecutionStatus.LOST)
        executions = self._executions() if self._executions is not None else {}
        states = self._states.reassert(lost.values_list("worker", flat=True), executions)
        if states:
            upsert_states(database, node_id, states.values())
            self._states.commit(states)

    def _write(self, events: Sequence[LifecycleEvent], drops: int) -> None:
        """One transaction: the attempts' rows (upsert), their events, and the drop report if due.

        Also the workers' states that changed (upsert) and the batch's tallies (one upsert adding
        them). ``drops`` is the buffer's drop count when the events were taken.
        """
        attempts, rows = self._attempts.apply(events, drops)
        states = self._states.apply(events)
        tallies = tally_events(events)
        node = self._node
        unreported = self._drops.unreported
        if unreported:
            rows.append(self._drops.event_row(node))
        database = self.database
        with transaction.atomic(using=database):
            if attempts:
                upsert_executions(database, [attempt.as_row(node.node_id) for attempt in attempts.values()])
            if rows:
                insert_events(database, rows)
            if states:
                upsert_states(database, node.node_id, states.values())
            if tallies:
                add_tallies(database, node.node_id, tallies)
            if unreported:
                node.store_dropped(node.dropped_events + unreported)
        # Committed: only now does the state follow.
        self._attempts.commit(attempts)
        self._states.commit(states)
        self._drops.stored_events += len(events)
        if unreported:
            node.dropped_events += unreported
            self._drops.stored()

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

    # -- failures ------------------------------------------------------------------------------------

    def _failed(self, exc: Exception) -> None:
        """Log, close the broken connection, and wait before the next try (interruptibly)."""
        self._failures += 1
        self._failure = _describe(exc)
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
                self._buffer.size,
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
        self._failure = ""
        self._outage_began = None

    def _sleep(self, seconds: float) -> None:
        """Wait ``seconds``; the first stop request cuts it short, later waits end at the stop deadline."""
        if not self._stop_requested.is_set():
            self._stop_requested.wait(seconds)
        else:
            self._never.wait(max(0.0, min(seconds, self._deadline - time.monotonic())))
