"""Execution reports: what the pool knows about each worker, as immutable snapshots."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

from .text import format_exception, safe_repr, safe_str

__all__ = ["Failure", "WorkerExecution", "WorkerExecutionEvent", "WorkerSilenceError", "WorkerStatus"]


class WorkerStatus(enum.StrEnum):
    """The status of a worker's current (or last) execution attempt."""

    UNKNOWN = "unknown"
    DEFERRED = "deferred"
    RUNNING = "running"
    SUCCESS = "success"
    ERROR = "error"
    #: An operator paused the worker: no attempt runs until it is resumed (healthy).
    PAUSED = "paused"
    #: A singleton worker on a node that does not hold its lease: no attempt runs here (healthy).
    STANDBY = "standby"


class WorkerExecutionEvent(NamedTuple):
    """One timestamped line of a worker's execution report (an immutable named tuple).

    ``str(event)`` is Yokai's ``[<execution id> - <YYYY-MM-DD HH:MM:SS>] <message>`` (UTC).
    """

    execution_id: str
    message: str
    timestamp: datetime  # timezone-aware, UTC

    def __str__(self) -> str:
        return f"[{self.execution_id} - {self.timestamp:%Y-%m-%d %H:%M:%S}] {self.message}"


class WorkerSilenceError(Exception):
    """The error of an attempt cancelled because it stopped calling ``ctx.heartbeat()``."""


class Failure:
    """The exception that ended an attempt, with its traceback formatted on first use.

    Formatting a traceback costs far more than a failed attempt itself, so it is done only when
    somebody reads it (a log handler, the recorder, ``WorkerExecution.last_traceback``). Both
    texts are taken safely and capped (:mod:`django_workers.core.text`): an exception whose
    ``__str__`` raises, or whose message is megabytes long, still makes a readable report.
    """

    __slots__ = ("_text", "exception", "message", "panic")

    def __init__(self, exception: BaseException, panic: bool) -> None:
        self.exception = exception
        self.panic = panic
        #: ``str(exc)`` for an error, ``repr(exc)`` for a recovered panic (as in the events).
        self.message = safe_repr(exception) if panic else safe_str(exception)
        self._text: str | None = None

    @property
    def traceback(self) -> str:
        """The formatted traceback (as ``traceback.format_exception``, capped), computed once."""
        text = self._text
        if text is None:  # two threads may both format it: same text, no harm
            text = self._text = format_exception(self.exception)
        return text

    def __repr__(self) -> str:
        return f"<Failure {self.message!r}>"


@dataclass(frozen=True, slots=True)
class WorkerExecution:
    """An immutable snapshot of one worker's execution report.

    ``id`` is the current attempt's execution id (a new uuid4 string per attempt); ``events``
    holds the newest events (bounded), oldest first. What readers need to decide on (attempts
    exhausted, silent, did not stop in time) are fields, never text to find in the events.
    """

    id: str
    name: str
    status: WorkerStatus
    current_execution_attempt: int
    max_executions_attempts: int
    deferred_start_threshold: float
    events: tuple[WorkerExecutionEvent, ...]
    last_error: str | None = None
    failure: Failure | None = field(default=None, repr=False, compare=False)
    #: Seconds of silence (no ``ctx.heartbeat()``) after which the worker counts as hung, or None.
    max_silence: float | None = None
    #: When the running attempt last showed a sign of life (its start or a heartbeat), or None.
    last_heartbeat: datetime | None = None
    #: True when the running attempt has been silent for longer than ``max_silence``.
    silent: bool = False
    #: True once the last allowed attempt failed: the worker will not run again.
    exhausted: bool = False
    #: True when the worker did not return within ``stop()``'s deadline.
    timed_out: bool = False
    #: True while an operator holds the worker paused (its status is ``paused`` once no attempt runs).
    paused: bool = False
    #: True for a singleton worker (it runs only while this node holds its lease).
    singleton: bool = False
    #: The fencing token of the lease this node holds for a singleton worker; None when it holds none.
    fence: int | None = None
    #: True when a singleton worker did not return within the stop timeout after losing its lease
    #: (it may still be running beside the new holder; unhealthy until it returns).
    stuck: bool = False

    @property
    def last_traceback(self) -> str | None:
        """The formatted traceback of the last failed attempt, or ``None``."""
        return None if self.failure is None else self.failure.traceback

    def has_event(self, message: str) -> bool:
        """True when an event with exactly this message is in the (bounded) history."""
        return any(event.message == message for event in self.events)
