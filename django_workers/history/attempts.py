"""From lifecycle events to rows: what the writer knows of each attempt's row, and the event rows.

An attempt's row is written whole on every change (an upsert), so the writer keeps the latest
state of the latest attempt of each worker. A batch is applied to copies; the copies replace
the known state only once the batch is committed.

Events the buffer dropped leave attempts whose end was never seen. Their outcome is not guessed:
an attempt still open when the next attempt of its worker shows up, or at the stop when events
were dropped after its latest one, is stored as ``unknown`` with the event :data:`END_UNKNOWN`.
"""

from __future__ import annotations

import logging
import typing
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Final, cast

from ..core.events import (
    AttemptFailed,
    AttemptStarted,
    AttemptSucceeded,
    LifecycleEvent,
    ReportedEvent,
    WorkerFinished,
)
from ..core.execution import Failure, WorkerStatus
from ..core.logs import EVENT_LEVELS
from ..models import ExecutionStatus
from .sql import EventRow, escape_nul

__all__ = ["END_UNKNOWN", "OPEN", "Attempt", "AttemptLog", "TracebackCache"]

#: The statuses of an attempt that may still change (with no finish time: open).
OPEN: Final = (ExecutionStatus.RUNNING.value, ExecutionStatus.DEFERRED.value)
#: The event of an attempt stored as ``unknown``: its end may have been among the dropped events.
END_UNKNOWN: Final = "the end of this attempt is unknown: the history dropped its last events"

#: A reported event's level as stored: the level the logging listener logs it at (INFO, WARNING, ERROR).
STORED_LEVELS: Final = {
    kind: logging.getLevelName(EVENT_LEVELS.get(kind, logging.INFO)) for kind in typing.get_args(ReportedEvent)
}


@dataclass(slots=True)
class Attempt:
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
    #: Not stored: the buffer's drop count when the writer took this attempt's latest event. A
    #: larger count later means events were dropped since, maybe its end.
    drops_seen: int = 0

    @property
    def open(self) -> bool:
        """Whether the row says the attempt may still change (running or deferred, not finished)."""
        return self.status in OPEN and self.finished_at is None

    def as_row(self, node_id: uuid.UUID) -> tuple[Any, ...]:
        """The row's values, in :data:`~django_workers.history.sql.EXECUTION_COLUMNS` order."""
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


class AttemptLog:
    """The attempts' rows as last committed by the writer, and what a batch of events makes of them."""

    def __init__(self, node_id: uuid.UUID) -> None:
        self.node_id = node_id
        self._attempts: dict[str, Attempt] = {}  # the latest attempt of each worker, by id
        self._latest: dict[str, str] = {}  # worker name -> id of its latest attempt
        self._tracebacks = TracebackCache()

    def apply(self, events: Iterable[LifecycleEvent], drops: int = 0) -> tuple[dict[str, Attempt], list[EventRow]]:
        """The new state of the attempts these events touch (copies: nothing changes until committed).

        Also the events' rows. Pool events are not stored: the node row says what the process runs.
        ``drops`` is the buffer's drop count when the batch was taken. An attempt still open when
        a newer attempt of its worker appears lost its end to a drop (a worker's attempts follow
        one another, end before start): it becomes ``unknown``, never a guessed outcome.
        """
        known = self._attempts
        touched: dict[str, Attempt] = {}
        rows: list[EventRow] = []
        node_id = self.node_id
        levels = STORED_LEVELS
        newest: dict[str, str] = {}  # worker -> its latest attempt so far in this batch
        for event in events:
            kind = type(event)
            level = levels.get(kind)
            if level is None:
                if kind is WorkerFinished:
                    _finished(cast(WorkerFinished, event), known, touched)
                continue
            reported = cast(ReportedEvent, event)
            record = reported.record
            execution_id = reported.execution_id
            attempt = touched.get(execution_id)
            if attempt is None:
                previous = known.get(execution_id)
                if previous is not None:
                    attempt = replace(previous)
                else:
                    worker = reported.worker[:255]
                    prior = newest.get(worker) or self._latest.get(worker)
                    if prior is not None and prior != execution_id:
                        self._end_unknown(prior, record.timestamp, known, touched, rows)
                    attempt = Attempt(
                        id=uuid.UUID(execution_id),
                        worker=worker,
                        attempt=max(1, reported.attempt),  # a deferral is the first attempt's (attempt 0)
                        max_attempts=reported.max_attempts,
                        status=reported.status.value,
                        created_at=record.timestamp,
                    )
                    newest[worker] = execution_id
                touched[execution_id] = attempt
            attempt.drops_seen = drops
            attempt.status = reported.status.value
            if reported.attempt > 1:
                attempt.attempt = reported.attempt
            if kind is AttemptStarted:
                attempt.started_at = record.timestamp
            elif kind is AttemptFailed:
                failed = cast(AttemptFailed, event)
                attempt.finished_at = record.timestamp
                attempt.duration = failed.duration
                attempt.error = escape_nul(failed.failure.message)
                attempt.traceback = self._tracebacks.format(failed.failure)  # here, not in the worker's thread
            elif kind is AttemptSucceeded:
                attempt.finished_at = record.timestamp
                attempt.duration = cast(AttemptSucceeded, event).duration
            rows.append((node_id, attempt.id, record.timestamp, level, escape_nul(record.message)))
        return touched, rows

    def _end_unknown(
        self,
        execution_id: str,
        when: datetime,
        known: dict[str, Attempt],
        touched: dict[str, Attempt],
        rows: list[EventRow],
    ) -> None:
        """A newer attempt of the same worker showed up at ``when``: this one, if open, lost its end."""
        attempt = touched.get(execution_id)
        if attempt is None:
            previous = known.get(execution_id)
            if previous is None or not previous.open:
                return
            attempt = touched[execution_id] = replace(previous)
        elif not attempt.open:
            return
        attempt.status = ExecutionStatus.UNKNOWN.value
        rows.append((self.node_id, attempt.id, when, "WARNING", END_UNKNOWN))

    def end_unknown(self, execution_id: uuid.UUID, drops: int) -> bool:
        """Whether the end of an attempt still open may be among events dropped before the count ``drops``.

        For an attempt the log does not know, whether anything was dropped at all.
        """
        attempt = self._attempts.get(str(execution_id))
        if attempt is None:
            return drops > 0
        return attempt.drops_seen < drops

    def commit(self, touched: dict[str, Attempt]) -> None:
        """The batch that changed ``touched`` is committed: keep it, forget attempts no longer the latest."""
        self._attempts.update(touched)
        for execution_id, attempt in touched.items():
            previous = self._latest.get(attempt.worker)
            if previous != execution_id:
                self._latest[attempt.worker] = execution_id
                if previous is not None:
                    self._attempts.pop(previous, None)


def _finished(event: WorkerFinished, known: dict[str, Attempt], touched: dict[str, Attempt]) -> None:
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
        attempt.finished_at = datetime.now(UTC)


# -- tracebacks ----------------------------------------------------------------------------------------


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


class TracebackCache:
    """Formatted tracebacks by shape: a worker failing in a loop has its traceback formatted once.

    Formatting a traceback (source lines, carets) costs tens of microseconds, more than writing the
    rows; the tracebacks of a crash loop are all alike.
    """

    def __init__(self, size: int = 128) -> None:
        self.size = size
        self._texts: dict[tuple[Any, ...], str] = {}

    def format(self, failure: Failure) -> str:
        """The failure's traceback as stored (NUL characters escaped), formatted once per shape."""
        try:
            key = _shape(failure.exception)
            text = None if key is None else self._texts.get(key)
        except TypeError:  # an unhashable part (an exotic exception type): no caching
            key = text = None
        if text is None:
            text = escape_nul(failure.traceback)
            if key is not None:
                if len(self._texts) >= self.size:
                    del self._texts[next(iter(self._texts))]  # the oldest
                self._texts[key] = text
        return text
