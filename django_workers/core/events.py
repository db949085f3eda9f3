"""Typed lifecycle events that the pool publishes to its listeners.

A listener is any callable taking one event. Listeners are called synchronously, in the thread
where the event happens: the caller of ``start()`` (or of ``register()`` after it) for a deferral,
for the start of a sync worker's first attempt (begun before its thread exists) and for the end
of a worker that a stop came before (it never starts), the worker's own thread for the rest of a
sync worker's attempts, the pool's event-loop thread for an async worker's, the caller of
``stop()`` for pool events and stop time-outs. A listener must be quick and must not block (hand
slow work to a queue); an exception it raises is logged and otherwise ignored. A listener may
call ``stop()``, except on the event loop (see :meth:`WorkerPool.stop`).

A listener that handles some events only can say which in an ``event_types`` attribute (a
collection of the event classes below, or of their unions): the pool then calls it for those only,
and does not even build an event that no listener handles. Without it, a listener gets them all.

Events are immutable named tuples. Dispatch on their type (``match event: case AttemptFailed(): ...``); the unions
``WorkerEvent``, ``ReportedEvent``, ``PoolEvent`` and ``LifecycleEvent`` work with ``isinstance``.
Every worker event has ``worker``, ``execution_id``, ``attempt`` and ``max_attempts`` (0 when
unlimited); a reported event also has ``record`` (the line it added to the execution report) and
``status`` (the worker's status after it).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from types import UnionType
from typing import Any, NamedTuple, get_args

from .execution import Failure, WorkerExecutionEvent, WorkerStatus

__all__ = [
    "EVENT_TYPES",
    "AttemptFailed",
    "AttemptStarted",
    "AttemptSucceeded",
    "AttemptsExhausted",
    "EventRouter",
    "LifecycleEvent",
    "Listener",
    "PoolEvent",
    "PoolStarted",
    "PoolStopped",
    "PoolStopping",
    "ReportedEvent",
    "WorkerControlled",
    "WorkerDeferred",
    "WorkerEvent",
    "WorkerFinished",
    "WorkerLeaseChanged",
    "WorkerPaused",
    "WorkerRestarting",
    "WorkerSilent",
    "WorkerStandby",
    "WorkerStopTimedOut",
    "WorkerStuck",
    "listener_event_types",
]


class PoolStarted(NamedTuple):
    """``start()`` launched the registered workers (names in registration order)."""

    workers: tuple[str, ...]


class PoolStopping(NamedTuple):
    """``stop()`` was called: its flag is set (nothing starts or restarts any more), workers are cancelled."""

    workers: tuple[str, ...]
    timeout: float


class PoolStopped(NamedTuple):
    """``stop()`` returned; ``not_stopped`` names the workers still running."""

    workers: tuple[str, ...]
    not_stopped: tuple[str, ...]


class WorkerDeferred(NamedTuple):
    """The first attempt waits ``delay`` seconds before starting."""

    worker: str
    execution_id: str
    attempt: int
    max_attempts: int
    record: WorkerExecutionEvent
    status: WorkerStatus
    delay: float


class AttemptStarted(NamedTuple):
    """An attempt started (published in the thread or task that runs it)."""

    worker: str
    execution_id: str
    attempt: int
    max_attempts: int
    record: WorkerExecutionEvent
    status: WorkerStatus


class AttemptSucceeded(NamedTuple):
    """An attempt returned (or was cancelled by ``stop()``); ``duration`` in seconds."""

    worker: str
    execution_id: str
    attempt: int
    max_attempts: int
    record: WorkerExecutionEvent
    status: WorkerStatus
    duration: float


class AttemptFailed(NamedTuple):
    """An attempt raised. ``failure.panic`` is True for a non-``Exception`` (recovered panic)."""

    worker: str
    execution_id: str
    attempt: int
    max_attempts: int
    record: WorkerExecutionEvent
    status: WorkerStatus
    duration: float
    failure: Failure


class WorkerRestarting(NamedTuple):
    """Restart number ``restart`` was decided; it follows after ``delay`` seconds unless stopped."""

    worker: str
    execution_id: str
    attempt: int
    max_attempts: int
    record: WorkerExecutionEvent
    status: WorkerStatus
    delay: float
    restart: int
    after_panic: bool


class AttemptsExhausted(NamedTuple):
    """The last allowed attempt failed: the worker will not run again."""

    worker: str
    execution_id: str
    attempt: int
    max_attempts: int
    record: WorkerExecutionEvent
    status: WorkerStatus


class WorkerSilent(NamedTuple):
    """A running attempt did not call ``ctx.heartbeat()`` for ``silence`` seconds (hung?)."""

    worker: str
    execution_id: str
    attempt: int
    max_attempts: int
    record: WorkerExecutionEvent
    status: WorkerStatus
    silence: float
    restarting: bool


class WorkerStopTimedOut(NamedTuple):
    """The worker did not return within ``stop()``'s deadline; ``stack`` is where it was."""

    worker: str
    execution_id: str
    attempt: int
    max_attempts: int
    record: WorkerExecutionEvent
    status: WorkerStatus
    timeout: float
    stack: str


class WorkerControlled(NamedTuple):
    """An operator asked to restart, pause or resume the worker (``action``; ``by``: who, or "").

    The record says it: ``restart requested by <by>``, ``paused by <by>``, ``resumed by <by>``
    (without " by …" when ``by`` is empty). ``status`` is unchanged by the request itself: a
    restart or pause of a running attempt cancels it, and the attempt ends as it ends at a stop;
    then a restart begins a fresh run (attempt 1 of a new budget), a pause publishes
    :class:`WorkerPaused`, and a resume begins a fresh run.
    """

    worker: str
    execution_id: str
    attempt: int
    max_attempts: int
    record: WorkerExecutionEvent
    status: WorkerStatus
    action: str
    by: str


class WorkerPaused(NamedTuple):
    """A pause took effect: no attempt runs until a resume (or a restart); status ``paused``."""

    worker: str
    execution_id: str
    attempt: int
    max_attempts: int
    record: WorkerExecutionEvent
    status: WorkerStatus


class WorkerLeaseChanged(NamedTuple):
    """The pool was given (``fence``: its token) or lost (``fence`` None) a singleton worker's lease.

    The record says ``lease acquired with fence <fence>`` or ``lease lost: <reason>``. With the
    lease, a fresh run begins (unless an operator paused the worker); without it, a running
    attempt is cancelled, ends as it ends at a stop, and :class:`WorkerStandby` follows.
    """

    worker: str
    execution_id: str
    attempt: int
    max_attempts: int
    record: WorkerExecutionEvent
    status: WorkerStatus
    fence: int | None
    reason: str


class WorkerStandby(NamedTuple):
    """A singleton worker waits for its lease: no attempt runs on this node; status ``standby``."""

    worker: str
    execution_id: str
    attempt: int
    max_attempts: int
    record: WorkerExecutionEvent
    status: WorkerStatus


class WorkerStuck(NamedTuple):
    """A singleton worker did not return within ``timeout`` seconds of losing its lease (``stack``: where it was).

    Unhealthy while its attempt runs on: another node may hold the lease by now.
    """

    worker: str
    execution_id: str
    attempt: int
    max_attempts: int
    record: WorkerExecutionEvent
    status: WorkerStatus
    timeout: float
    stack: str


class WorkerFinished(NamedTuple):
    """The worker's supervision ended (published last, in the thread or task that ran it)."""

    worker: str
    execution_id: str
    attempt: int
    max_attempts: int
    status: WorkerStatus


PoolEvent = PoolStarted | PoolStopping | PoolStopped
ReportedEvent = (
    WorkerDeferred
    | AttemptStarted
    | AttemptSucceeded
    | AttemptFailed
    | WorkerRestarting
    | AttemptsExhausted
    | WorkerSilent
    | WorkerStopTimedOut
    | WorkerControlled
    | WorkerPaused
    | WorkerLeaseChanged
    | WorkerStandby
    | WorkerStuck
)
WorkerEvent = ReportedEvent | WorkerFinished
LifecycleEvent = PoolEvent | WorkerEvent
Listener = Callable[[LifecycleEvent], None]

#: Every event class, in the order of the unions above.
EVENT_TYPES: tuple[type[LifecycleEvent], ...] = (
    PoolStarted,
    PoolStopping,
    PoolStopped,
    WorkerDeferred,
    AttemptStarted,
    AttemptSucceeded,
    AttemptFailed,
    WorkerRestarting,
    AttemptsExhausted,
    WorkerSilent,
    WorkerStopTimedOut,
    WorkerControlled,
    WorkerPaused,
    WorkerLeaseChanged,
    WorkerStandby,
    WorkerStuck,
    WorkerFinished,
)


def listener_event_types(listener: Listener) -> frozenset[type[LifecycleEvent]]:
    """The event classes ``listener`` handles: its ``event_types`` attribute, unions expanded.

    All of them when it has none; ``TypeError`` when it names anything but event classes.
    """
    declared = getattr(listener, "event_types", None)
    if declared is None:
        return frozenset(EVENT_TYPES)
    if isinstance(declared, str | bytes | type) or not isinstance(declared, Iterable):
        raise TypeError(
            f"{listener!r}: event_types must be a collection of event classes (e.g. {{AttemptFailed}}), "
            f"got {declared!r}"
        )
    types: set[type[LifecycleEvent]] = set()
    for item in declared:
        expanded = get_args(item) if isinstance(item, UnionType) else (item,)
        for event_type in expanded:
            if event_type not in EVENT_TYPES:
                raise TypeError(
                    f"{listener!r}: event_types names {event_type!r}, which is not a lifecycle event class; "
                    f"the classes are {', '.join(t.__name__ for t in EVENT_TYPES)} (django_workers.core.events)"
                )
            types.add(event_type)
    return frozenset(types)


class EventRouter:
    """The listeners of one pool, and the delivery of its events to them.

    Each event class has its tuple of listeners (those whose ``event_types`` name it, or all of
    them for a listener without ``event_types``). :meth:`emit` builds an event only when somebody
    listens to its class. A listener that raises is logged on ``logger`` and otherwise ignored.
    """

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger
        self._lock = threading.Lock()
        self._listeners: tuple[Listener, ...] = ()
        #: Replaced, never mutated: a publishing thread iterates the tuple it read, undisturbed.
        self._routes: dict[type[LifecycleEvent], tuple[Listener, ...]] = dict.fromkeys(EVENT_TYPES, ())

    @property
    def listeners(self) -> tuple[Listener, ...]:
        """The subscribed listeners, in subscription order."""
        return self._listeners

    def add(self, listener: Listener) -> None:
        """Subscribe ``listener`` to the event classes it declares (all of them by default)."""
        if not callable(listener):
            raise TypeError(f"a listener must be a callable taking one event, got {listener!r}")
        event_types = listener_event_types(listener)
        with self._lock:
            self._listeners += (listener,)
            for event_type in event_types:
                self._routes[event_type] += (listener,)

    def emit(self, event_type: type[LifecycleEvent], *fields: Any) -> None:
        """Build ``event_type(*fields)`` and deliver it, unless nobody listens to that class."""
        listeners = self._routes[event_type]
        if not listeners:
            return
        # The named tuple built in C: its generated __new__ is a Python call, and benchmark 1 of
        # bench_core.py (the cost of a failed attempt) misses its target with it.
        event = tuple.__new__(event_type, fields)
        for listener in listeners:
            try:
                listener(event)
            except Exception:
                self._failed(listener, event)

    def publish(self, event: LifecycleEvent) -> None:
        """Deliver an event already built."""
        for listener in self._routes[type(event)]:
            try:
                listener(event)
            except Exception:
                self._failed(listener, event)

    def _failed(self, listener: Listener, event: LifecycleEvent) -> None:
        self._logger.exception("worker pool listener %r failed on %s", listener, type(event).__name__)
