"""Typed lifecycle events that the pool publishes to its listeners.

A listener is any callable taking one event. Listeners are called synchronously, in the thread
where the event happens: the caller of ``start()`` for a deferral, the worker's own thread for a
sync worker's attempts, the pool's event-loop thread for an async worker's, the caller of
``stop()`` for pool events and stop time-outs. A listener must be quick and must not block (hand
slow work to a queue); an exception it raises is logged and otherwise ignored.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .execution import Failure, WorkerExecutionEvent, WorkerStatus

__all__ = [
    "AttemptFailed",
    "AttemptStarted",
    "AttemptSucceeded",
    "AttemptsExhausted",
    "LifecycleEvent",
    "Listener",
    "PoolEvent",
    "PoolStarted",
    "PoolStopped",
    "PoolStopping",
    "ReportedEvent",
    "WorkerDeferred",
    "WorkerEvent",
    "WorkerFinished",
    "WorkerRestarting",
    "WorkerStopTimedOut",
]


class LifecycleEvent:
    """Base class of everything the pool publishes."""

    __slots__ = ()


Listener = Callable[[LifecycleEvent], None]


@dataclass(frozen=True, slots=True)
class PoolEvent(LifecycleEvent):
    """An event about the pool as a whole."""

    workers: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PoolStarted(PoolEvent):
    """``start()`` launched the registered workers (names in registration order)."""


@dataclass(frozen=True, slots=True)
class PoolStopping(PoolEvent):
    """``stop()`` was called: workers are being cancelled."""

    timeout: float


@dataclass(frozen=True, slots=True)
class PoolStopped(PoolEvent):
    """``stop()`` returned; ``not_stopped`` names the workers still running."""

    not_stopped: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class WorkerEvent(LifecycleEvent):
    """An event about one worker. ``max_attempts`` is 0 when attempts are unlimited."""

    worker: str
    execution_id: str
    attempt: int
    max_attempts: int


@dataclass(frozen=True, slots=True)
class ReportedEvent(WorkerEvent):
    """A worker event that also went into the execution report as ``record``."""

    record: WorkerExecutionEvent
    status: WorkerStatus

    @property
    def message(self) -> str:
        """The report message (exact SPEC wording)."""
        return self.record.message


@dataclass(frozen=True, slots=True)
class WorkerDeferred(ReportedEvent):
    """The first attempt waits ``delay`` seconds before starting."""

    delay: float


@dataclass(frozen=True, slots=True)
class AttemptStarted(ReportedEvent):
    """An attempt started (in the thread or task that runs it)."""


@dataclass(frozen=True, slots=True)
class AttemptSucceeded(ReportedEvent):
    """An attempt returned (or was cancelled by ``stop()``); ``duration`` in seconds."""

    duration: float


@dataclass(frozen=True, slots=True)
class AttemptFailed(ReportedEvent):
    """An attempt raised. ``failure.panic`` is True for a non-``Exception`` (recovered panic)."""

    duration: float
    failure: Failure


@dataclass(frozen=True, slots=True)
class WorkerRestarting(ReportedEvent):
    """A restart was decided; it follows after ``delay`` seconds unless the pool stops."""

    delay: float
    restart: int
    after_panic: bool


@dataclass(frozen=True, slots=True)
class AttemptsExhausted(ReportedEvent):
    """The last allowed attempt failed: the worker will not run again."""


@dataclass(frozen=True, slots=True)
class WorkerStopTimedOut(ReportedEvent):
    """The worker did not return within ``stop()``'s deadline; ``stack`` is where it was."""

    timeout: float
    stack: str


@dataclass(frozen=True, slots=True)
class WorkerFinished(WorkerEvent):
    """The worker's supervision ended (published last, in the thread or task that ran it)."""

    status: WorkerStatus
