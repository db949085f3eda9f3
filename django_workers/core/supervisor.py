"""Supervision of one worker: its execution report and its restart policy.

The policy (attempts, restarts, backoff, stop) is written once, in two methods:
:meth:`Supervisor.begin_attempt` starts an attempt unless the pool is stopping, and
:meth:`Supervisor.end_attempt` records how it ended and decides what follows (nothing, or a
restart after a backoff delay): restarts happen there. The drivers of
:mod:`django_workers.core.drivers` call them, from the worker's thread or from its task on the
pool's event loop.

A supervisor sees its pool only through a :class:`PoolRuntime`: the stop flag, the event router,
the state lock, the attempt hooks, the extensions and the event loop, nothing else.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import threading
from collections import deque
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from time import monotonic
from types import FrameType
from typing import Any, Protocol

from .backoff import Backoff
from .context import LOGGER_NAME, WorkerContext
from .events import (
    AttemptFailed,
    AttemptsExhausted,
    AttemptStarted,
    AttemptSucceeded,
    EventRouter,
    WorkerControlled,
    WorkerDeferred,
    WorkerFinished,
    WorkerLeaseChanged,
    WorkerPaused,
    WorkerRestarting,
    WorkerSilent,
    WorkerStandby,
    WorkerStopTimedOut,
    WorkerStuck,
)
from .execution import Failure, WorkerExecution, WorkerExecutionEvent, WorkerSilenceError, WorkerStatus
from .loop import EventLoopThread
from .worker import Worker, is_async_worker

__all__ = ["CONTROL_ACTIONS", "AttemptHook", "Driver", "PoolRuntime", "SupervisionPolicy", "Supervisor"]

logger = logging.getLogger(LOGGER_NAME)

#: Wraps every attempt, entered in the thread (or task) that runs it, just before ``run(ctx)``;
#: its ``__exit__`` sees the attempt's exception. Used for database hygiene and trace spans.
AttemptHook = Callable[[WorkerContext], AbstractContextManager[Any]]

DEFERRED, RUNNING = WorkerStatus.DEFERRED, WorkerStatus.RUNNING
SUCCESS, ERROR, PAUSED = WorkerStatus.SUCCESS, WorkerStatus.ERROR, WorkerStatus.PAUSED
STANDBY = WorkerStatus.STANDBY

#: What an operator can ask of a worker (:meth:`Supervisor.request`).
RESTART, PAUSE, RESUME = "restart", "pause", "resume"
CONTROL_ACTIONS = (RESTART, PAUSE, RESUME)
_CONTROL_MESSAGES = {RESTART: "restart requested", PAUSE: "paused", RESUME: "resumed"}
PAUSED_MESSAGE = "execution paused until resumed"
#: The control of a singleton worker whose node lost (or never had) its lease.
STAND_BY = "standby"
STANDBY_MESSAGE = "execution standing by until this node holds the lease"


#: Execution ids are made 256 at a time, from one os.urandom() call and with each digit position
#: filled for the whole batch by one slice assignment: one system call and one string per attempt
#: make benchmark 1 of bench_core.py miss its target. A forked child must not reuse its parent's.
_BATCH = 256
_spare_ids: list[str] = []
os.register_at_fork(after_in_child=_spare_ids.clear)

#: (source index in the 32 random hex digits, target index in the 37 bytes "8-4-4-4-12\n").
_DIGITS = [(i, i + (i >= 8) + (i >= 12) + (i >= 16) + (i >= 20)) for i in range(32) if i not in (12, 16)]
#: The variant digit (8, 9, a or b) of a random hex digit.
_VARIANT = bytes.maketrans(b"0123456789abcdef", b"89ab89ab89ab89ab")


def _uuid4_batch(count: int) -> list[str]:
    """``count`` random (version 4) UUID strings, as ``str(uuid.uuid4())`` gives them."""
    digits = os.urandom(16 * count).hex().encode("ascii")
    out = bytearray(37 * count)
    for source, target in _DIGITS:
        out[target::37] = digits[source::32]
    out[8::37] = out[13::37] = out[18::37] = out[23::37] = b"-" * count
    out[14::37] = b"4" * count
    out[19::37] = digits[16::32].translate(_VARIANT)
    out[36::37] = b"\n" * count
    return out.decode("ascii").split()


def _new_execution_id() -> str:
    """A random (version 4) UUID string, like ``str(uuid.uuid4())``."""
    try:
        return _spare_ids.pop()  # atomic: worker threads share the list without a lock
    except IndexError:
        batch = _uuid4_batch(_BATCH)
        _spare_ids.extend(batch[1:])
        return batch[0]


#: A record of the report, built in C: the named tuple's generated ``__new__`` is a Python call,
#: and benchmark 1 of bench_core.py (the attempt path's records) misses its target with it.
_event: Callable[[tuple[str, str, datetime]], WorkerExecutionEvent] = functools.partial(
    tuple.__new__, WorkerExecutionEvent
)


class Driver(Protocol):
    """What runs a worker's attempts (:mod:`django_workers.core.drivers`), as the supervisor sees it."""

    def cancel_attempt(self, attempt: int) -> None:
        """Cancel the running attempt ``attempt`` (a silent one), from any thread."""

    def wake(self) -> None:
        """Cancel the running attempt, or end the deferral or backoff wait, for a pending control."""

    def stack(self, frames: dict[int, FrameType]) -> str:
        """Where the worker is now (``frames``: ``sys._current_frames()``)."""


@dataclass(eq=False)
class PoolRuntime:
    """What a pool shares with the supervisors of its workers, and all they see of it."""

    #: The pool's stop flag: nothing starts or restarts once it is set.
    cancel: threading.Event
    #: Where lifecycle events go.
    events: EventRouter
    #: Guards the execution reports of all the pool's workers. One lock, not one per worker:
    #: its critical sections are a few stores.
    state_lock: threading.Lock
    #: Called by a supervisor, last, when it will never run its worker again.
    on_finished: Callable[[Supervisor], None]
    attempt_hooks: tuple[AttemptHook, ...] = ()
    #: Shared, read-only objects that every WorkerContext exposes as ``ctx.extensions``.
    extensions: dict[str, Any] = field(default_factory=dict)
    #: The loop of async workers, once the first one is launched.
    loop: EventLoopThread | None = None


@dataclass(frozen=True, slots=True)
class SupervisionPolicy:
    """How one worker is supervised (the pool's settings with the worker's overrides applied)."""

    deferred_start_threshold: float
    max_executions_attempts: int
    restart_backoff: Backoff
    history_size: int
    #: Hang detection: seconds without ``ctx.heartbeat()`` after which a running attempt is silent.
    max_silence: float | None = None
    #: Cancel (and so restart, attempts permitting) a silent attempt.
    restart_on_silence: bool = False
    #: Runs only while the pool is given a fence for it (:meth:`Supervisor.lease`).
    singleton: bool = False


class Supervisor:
    """Runs one worker under its policy and keeps its execution report.

    Report state (status, attempt, id, events, failure, exhausted, timed out) changes under the
    runtime's state lock; readers get :class:`WorkerExecution` snapshots.
    """

    def __init__(self, runtime: PoolRuntime, worker: Worker, name: str, policy: SupervisionPolicy) -> None:
        self.runtime = runtime
        self.worker = worker
        self.name = name
        self.policy = policy
        #: The name of the worker's thread or task.
        self.label = f"worker:{name}"
        self.is_async = is_async_worker(worker)
        #: The denominator of "attempt n/m" messages.
        self._of = str(policy.max_executions_attempts or "unlimited")
        # -- the report (under runtime.state_lock) --
        self._status = WorkerStatus.UNKNOWN
        self._execution_id = ""
        #: The id is the next attempt's (given before the attempt, for its deferral's event).
        self._id_unused = False
        self._attempt = 0
        self._events: deque[WorkerExecutionEvent] = deque(maxlen=policy.history_size)
        self._failure: Failure | None = None
        self._exhausted = False
        self._timed_out = False
        #: An operator holds the worker paused; the control waiting for the current attempt (or
        #: wait) to end: RESTART or PAUSE, else None.
        self._paused = False
        self._control: str | None = None
        #: A singleton's fencing token while this node holds its lease (it runs only then).
        self._fence: int | None = None
        #: A singleton whose attempt outlived the stop timeout after its lease was lost.
        self._stuck = False
        # -- supervision --
        #: True once supervision has ended (the worker will never run again).
        self.done = False
        #: What runs the attempts (a thread, or a task on the pool's loop), once launched.
        self.driver: Driver | None = None
        #: Restarts so far (the backoff's n), and when the running attempt began (monotonic).
        self._restarts = 0
        self._began = 0.0
        #: Hang detection: the last sign of life of the running attempt (monotonic) and the attempt
        #: found silent (0: none).
        self.last_beat = 0.0
        self._silenced = 0
        #: The stop flag of the worker's attempts (``ctx.cancelled``), and what its deferral and
        #: backoff waits wait on: set at stop, for a silent attempt (restart_on_silence) and for a
        #: control; cleared when an attempt begins. Set only then, so a wait it ends always has a
        #: reason: the pool stopping or a pending control.
        self.flag = threading.Event()
        #: A run after a restart or resume: no deferral.
        self.fresh = False

    # -- reading ------------------------------------------------------------------------------

    @property
    def status(self) -> WorkerStatus:
        """The current status."""
        return self._status

    @property
    def execution_id(self) -> str:
        """The id of the current (or last) attempt."""
        return self._execution_id

    def snapshot(self) -> WorkerExecution:
        """An immutable copy of the report, safe to keep and iterate."""
        policy = self.policy
        with self.runtime.state_lock:
            failure = self._failure
            status = self._status
            silence = monotonic() - self.last_beat
            watched = policy.max_silence is not None and status is RUNNING
            return WorkerExecution(
                id=self._execution_id,
                name=self.name,
                status=status,
                current_execution_attempt=self._attempt,
                max_executions_attempts=policy.max_executions_attempts,
                deferred_start_threshold=policy.deferred_start_threshold,
                events=tuple(self._events),
                last_error=None if failure is None else failure.message,
                failure=failure,
                max_silence=policy.max_silence,
                last_heartbeat=datetime.now(UTC) - timedelta(seconds=silence) if watched else None,
                silent=watched and silence >= (policy.max_silence or 0),
                exhausted=self._exhausted,
                timed_out=self._timed_out,
                paused=self._paused,
                singleton=policy.singleton,
                fence=self._fence,
                stuck=self._stuck and status is RUNNING,
            )

    # -- recording: the state changes under the lock, then the event is published -------------

    def _record(self, status: WorkerStatus, message: str, *, execution_id: str | None = None) -> WorkerExecutionEvent:
        record = WorkerExecutionEvent(execution_id or self._execution_id, message, datetime.now(UTC))
        with self.runtime.state_lock:
            self._status = status
            self._events.append(record)
        return record

    # -- the policy -----------------------------------------------------------------------------

    def prepare(self) -> None:
        """Give the first attempt its id and record the deferral, if any.

        Called by ``start()`` (or ``register()`` after it) in the caller's thread, before the
        worker's thread or task exists, so both are there as soon as that call returns.
        """
        self._execution_id = _new_execution_id()
        self._id_unused = True
        delay = self.deferral()
        if delay:
            record = self._record(DEFERRED, f"deferring execution attempt for {delay:g} seconds")
            self.runtime.events.emit(
                WorkerDeferred,
                self.name,
                record.execution_id,
                0,
                self.policy.max_executions_attempts,
                record,
                DEFERRED,
                delay,
            )

    def deferral(self) -> float:
        """Seconds to wait before the first attempt: the policy's, except for a fresh run."""
        return 0.0 if self.fresh else self.policy.deferred_start_threshold

    def begin_attempt(self) -> WorkerContext | None:
        """Start the next attempt unless the pool is stopping: give it its id, record, publish.

        Returns the attempt's context, or None once ``stop()`` was called: nothing starts or
        restarts after that.
        """
        runtime, policy = self.runtime, self.policy
        attempt = self._attempt + 1
        # The first attempt's id was given by prepare() (or a control before it); others get a new one.
        execution_id = self._execution_id if self._id_unused else _new_execution_id()
        # The beat first: the watchdog, once it sees the attempt running, must not read the
        # previous attempt's last beat (a long backoff would look like silence).
        self._began = self.last_beat = monotonic()
        record = _event((execution_id, f"starting execution attempt {attempt}/{self._of}", datetime.now(UTC)))
        flag = self.flag
        with runtime.state_lock:
            # stop() sets the pool's flag under this lock: an attempt is recorded before it or not at all.
            if runtime.cancel.is_set():
                return None
            control, self._control = self._control, None
            if control is None and policy.singleton and self._fence is None:
                control = STAND_BY  # the lease was lost (or never held): nothing runs here
            fence = self._fence
            if control is None:
                self._execution_id = execution_id
                self._id_unused = False
                self._attempt = attempt
                self._status = RUNNING
                self._events.append(record)
                if flag.is_set():  # cleared under the lock, where stop() and controls set it
                    flag.clear()
        if control is not None:  # requested before this attempt began: followed instead
            return None if self.follow_control(control) is None else self.begin_attempt()
        maximum = policy.max_executions_attempts
        runtime.events.emit(AttemptStarted, self.name, execution_id, attempt, maximum, record, RUNNING)
        return WorkerContext(
            self.name,
            execution_id,
            attempt,
            maximum,
            flag,
            runtime.extensions,
            self if policy.max_silence is not None else None,
            runtime.loop.signal if runtime.loop is not None else None,
            fence,
        )

    def end_attempt(self, error: BaseException | None) -> float | None:
        """Record how the attempt ended and decide what follows.

        ``error`` is what the attempt raised (None: it returned, or was cancelled by a stop).
        Returns the backoff delay in seconds before the next attempt, or None when supervision
        ends: after a success, a failure during a stop, or the last allowed attempt.
        """
        runtime = self.runtime
        # Read unlocked first (one lock less per attempt): a control set just after is not lost,
        # the next begin_attempt(), wait or the pool's end of the worker follows it.
        if self._control is not None:
            with runtime.state_lock:
                control, self._control = self._control, None
            if control is not None and not runtime.cancel.is_set():
                return self._end_controlled(control, error)
        if self._silenced == self._attempt and (error is None or isinstance(error, asyncio.CancelledError)):
            # Cancelled by the watchdog, not by a stop: the attempt failed.
            error = WorkerSilenceError(f"no heartbeat for {self.policy.max_silence:g} seconds")
        duration = monotonic() - self._began
        if error is None:
            self._succeeded(duration)
            return None  # a worker that returned is done: only failures restart
        return self._failed(error, duration, final=runtime.cancel.is_set())

    def _end_controlled(self, control: str, error: BaseException | None) -> float | None:
        """End an attempt an operator cancelled: as at a stop, then restart at once or pause."""
        duration = monotonic() - self._began
        if error is None or isinstance(error, asyncio.CancelledError):
            self._succeeded(duration)
        else:
            self._failed(error, duration, final=True)
        return self.follow_control(control)

    def _succeeded(self, duration: float) -> None:
        """Record and publish the attempt's success."""
        attempt = self._attempt
        record = self._record(SUCCESS, f"stopping execution attempt {attempt}/{self._of} with success")
        self.runtime.events.emit(
            AttemptSucceeded,
            self.name,
            self._execution_id,
            attempt,
            self.policy.max_executions_attempts,
            record,
            SUCCESS,
            duration,
        )

    def _failed(self, error: BaseException, duration: float, *, final: bool) -> float | None:
        """Record and publish the attempt's failure and what follows it. Restarts are decided here.

        ``final``: nothing follows (a stop, or an operator's control that decides what does).
        Returns the backoff delay in seconds before the restart, or None.
        """
        runtime, policy = self.runtime, self.policy
        events = runtime.events
        attempt, execution_id, maximum = self._attempt, self._execution_id, policy.max_executions_attempts
        panic = not isinstance(error, Exception)
        failure = Failure(error, panic)
        outcome = "recovered panic" if panic else "error"
        message = f"stopping execution attempt {attempt}/{self._of} with {outcome}: {failure.message}"
        record = _event((execution_id, message, datetime.now(UTC)))
        # What follows the failure is decided at once and recorded with it, in one locked update.
        exhausted = not final and maximum != 0 and attempt >= maximum
        follow_up: WorkerExecutionEvent | None = None
        if exhausted:
            follow_up = _event((execution_id, "max execution attempts reached", record.timestamp))
        elif not final:
            self._restarts += 1
            message = "restarting after panic recovery" if panic else "restarting after error"
            follow_up = _event((execution_id, message, record.timestamp))
        with runtime.state_lock:
            self._status = ERROR
            self._failure = failure
            self._exhausted = exhausted
            self._events.append(record)
            if follow_up is not None:
                self._events.append(follow_up)
        events.emit(AttemptFailed, self.name, execution_id, attempt, maximum, record, ERROR, duration, failure)
        if follow_up is None:
            return None  # nothing restarts
        if exhausted:
            events.emit(AttemptsExhausted, self.name, execution_id, attempt, maximum, follow_up, ERROR)
            return None
        delay = policy.restart_backoff.delay(self._restarts)
        events.emit(
            WorkerRestarting, self.name, execution_id, attempt, maximum, follow_up, ERROR, delay, self._restarts, panic
        )
        return delay

    def follow_control(self, control: str) -> float | None:
        """Apply a control taken from ``_control``: the delay before the next attempt, or None.

        RESTART gives 0.0 (a fresh run begins at once); PAUSE records the pause and STAND_BY the
        standby, and give None.
        """
        if control == RESTART:
            self.reset_run()
            return 0.0
        if control == STAND_BY:
            self._record_standby()
        else:
            self._record_paused()
        return None

    def reset_run(self) -> None:
        """Start a fresh run: the next attempt is number 1 of a whole budget, without deferral."""
        with self.runtime.state_lock:
            self._attempt = 0
            self._restarts = 0
            self._silenced = 0
            self._exhausted = False
            self.fresh = True

    def _record_paused(self) -> None:
        record = self._record(PAUSED, PAUSED_MESSAGE)
        maximum = self.policy.max_executions_attempts
        self.runtime.events.emit(WorkerPaused, self.name, record.execution_id, self._attempt, maximum, record, PAUSED)

    def _record_standby(self, if_held: bool = False) -> None:
        """Record the standby, once; with ``if_held``, only while the worker still has no lease."""
        with self.runtime.state_lock:
            if self._status is STANDBY or (if_held and (self._fence is not None or self._paused)):
                return
            self._give_id()  # a singleton without its lease at start()
            record = WorkerExecutionEvent(self._execution_id, STANDBY_MESSAGE, datetime.now(UTC))
            self._status = STANDBY
            self._events.append(record)
        maximum = self.policy.max_executions_attempts
        self.runtime.events.emit(WorkerStandby, self.name, record.execution_id, self._attempt, maximum, record, STANDBY)

    def _give_id(self) -> None:
        """Give the report the next attempt's id if it has none yet (under the state lock)."""
        if not self._execution_id:
            self._execution_id = _new_execution_id()
            self._id_unused = True

    def stand_by(self) -> None:
        """Record that a singleton waits for its lease (the pool, for one it did not launch)."""
        self._record_standby(if_held=True)

    @property
    def held(self) -> bool:
        """True while nothing may run: an operator's pause, or a singleton without its lease."""
        return self._paused or (self.policy.singleton and self._fence is None)

    def after_wake(self) -> WorkerContext | None:
        """What follows a deferral or backoff wait that ended early.

        Nothing when the pool is stopping or the control was a pause, else (a restart) a fresh
        run's first attempt.
        """
        with self.runtime.state_lock:
            if self.runtime.cancel.is_set():
                return None
            control, self._control = self._control, None
        if control is not None and self.follow_control(control) is None:
            return None
        return self.begin_attempt()

    # -- control (called by the pool, from any thread) ------------------------------------------

    def request(self, action: str, by: str, *, launched: bool, active: bool) -> bool:
        """Record an operator's ``action`` and act on it; True when the pool must launch a fresh run.

        ``launched``: the pool has started; ``active``: a driver runs the worker now (an attempt,
        or the wait before one). An active worker gets the control as pending and is woken (its
        attempt cancelled): its driver follows it. An inactive one (finished, paused, or not yet
        started) is paused at once, or needs a fresh run (restart, resume) once the pool runs.
        A pause of a paused worker and a resume of a worker that is not paused change nothing
        and record nothing. Called under the pool's lock.
        """
        if action not in CONTROL_ACTIONS:
            raise ValueError(f"unknown control action {action!r}; the actions are {', '.join(CONTROL_ACTIONS)}")
        text = _CONTROL_MESSAGES[action] + (f" by {by}" if by else "")
        runtime = self.runtime
        launch = wake = pause_now = standby_now = False
        with runtime.state_lock:
            if runtime.cancel.is_set():
                raise RuntimeError(f"cannot {action} worker {self.name!r}: the pool is stopping")
            pending = self._control
            if action == PAUSE:
                if self._paused:
                    return False
                self._paused = True
                if active:
                    self._control, wake = PAUSE, pending is None
                else:
                    pause_now = True
            elif action == RESUME:
                if not self._paused:
                    return False
                self._paused = False
                if active:  # the pause has not taken effect yet: its attempt was cancelled, so run afresh
                    self._control = RESTART
                else:
                    launch = launched
                    if not launched:
                        self._status = WorkerStatus.UNKNOWN
            else:
                self._paused = False
                if active:
                    self._control, wake = RESTART, pending is None
                else:
                    launch = launched
                    if not launched and self._status is PAUSED:
                        self._status = WorkerStatus.UNKNOWN
            if launch and self.policy.singleton and self._fence is None:
                launch, standby_now = False, True  # it runs once this node holds the lease
            self._give_id()  # a pause before start()
            if wake:
                self.flag.set()
            record = WorkerExecutionEvent(self._execution_id, text, datetime.now(UTC))
            self._events.append(record)
            status = self._status
            paused = None
            if pause_now:  # in the same locked update: a resume right after cannot come between
                paused = WorkerExecutionEvent(self._execution_id, PAUSED_MESSAGE, record.timestamp)
                self._events.append(paused)
                self._status = PAUSED
        self.runtime.events.emit(
            WorkerControlled,
            self.name,
            record.execution_id,
            self._attempt,
            self.policy.max_executions_attempts,
            record,
            status,
            action,
            by,
        )
        if paused is not None:
            maximum = self.policy.max_executions_attempts
            self.runtime.events.emit(
                WorkerPaused, self.name, paused.execution_id, self._attempt, maximum, paused, PAUSED
            )
        return self._follow_up(standby_now, wake, launch)

    def lease(self, fence: int | None, reason: str, *, launched: bool, active: bool) -> bool:
        """The node took (``fence``: its token) or lost (None) the lease; True when the pool must launch.

        With the lease, a worker standing by begins a fresh run (the pool launches it; before
        ``start()``, it starts with the pool), unless an operator paused it. A running attempt of
        an older fence is cancelled and a fresh run follows. Without the lease, a running attempt
        is cancelled (it ends as at a stop) and the worker stands by; an idle one stands by at
        once. ``reason`` says why it was lost (in the event). Called under the pool's lock.
        """
        if not self.policy.singleton:
            raise ValueError(f"worker {self.name!r} is not a singleton: it runs without a lease")
        runtime = self.runtime
        launch = wake = standby_now = False
        with runtime.state_lock:
            if runtime.cancel.is_set():
                raise RuntimeError(f"cannot change the lease of worker {self.name!r}: the pool is stopping")
            if fence == self._fence:
                return False
            self._fence = fence
            pending = self._control
            if fence is not None:
                self._stuck = False
                if self._paused:
                    pass  # the operator's pause stands; a resume runs it under this fence
                elif active:  # an attempt (or wait) of another fence, or a standby not yet followed
                    if pending != RESTART:
                        self._control, wake = RESTART, pending is None
                else:
                    launch = launched
                    if not launched and self._status is STANDBY:
                        self._status = WorkerStatus.UNKNOWN
            elif active:
                if pending != PAUSE:
                    self._control, wake = STAND_BY, pending is None
            elif not self._paused:
                standby_now = True
            self._give_id()  # a lease before start()
            if wake:
                self.flag.set()
            if fence is not None:
                text = f"lease acquired with fence {fence}"
            else:
                text = "lease lost: " + (reason or "released")
            record = WorkerExecutionEvent(self._execution_id, text, datetime.now(UTC))
            self._events.append(record)
            status = self._status
        maximum = self.policy.max_executions_attempts
        runtime.events.emit(
            WorkerLeaseChanged, self.name, record.execution_id, self._attempt, maximum, record, status, fence, reason
        )
        return self._follow_up(standby_now, wake, launch)

    def _follow_up(self, standby_now: bool, wake: bool, launch: bool) -> bool:
        """After a control or a lease change was recorded: stand by, wake the driver, or prepare a fresh run."""
        if standby_now:
            self._record_standby(if_held=True)
        if wake and self.driver is not None:
            self.driver.wake()
        if launch:
            self.reset_run()
        return launch

    def mark_stuck(self, timeout: float, stack: str) -> bool:
        """Report a singleton whose attempt did not return within ``timeout`` seconds of losing its lease.

        False (nothing recorded) when it returned meanwhile. Unhealthy until the attempt ends.
        """
        message = f"did not return within {timeout:g} seconds of losing its lease"
        with self.runtime.state_lock:
            if self._status is not RUNNING or self._fence is not None or self._stuck:
                return False
            self._stuck = True
            record = WorkerExecutionEvent(self._execution_id, message, datetime.now(UTC))
            self._events.append(record)
        self.runtime.events.emit(
            WorkerStuck,
            self.name,
            record.execution_id,
            self._attempt,
            self.policy.max_executions_attempts,
            record,
            RUNNING,
            timeout,
            stack,
        )
        return True

    def take_control(self, stopping: bool) -> str | None:
        """The pending control, consumed (the pool, when the driver ended before seeing it).

        With ``stopping``, none is followed: a worker resumed after its pause took effect is then
        left ``unknown`` (it will not start), not ``paused``.
        """
        with self.runtime.state_lock:
            control, self._control = self._control, None
            if stopping and self._status is PAUSED and not self._paused:
                self._status = WorkerStatus.UNKNOWN
            return None if stopping else control

    @property
    def paused(self) -> bool:
        """True while an operator holds the worker paused."""
        return self._paused

    def has_control(self) -> bool:
        """True while a control waits for the driver to follow it."""
        return self._control is not None

    def retire(self) -> None:
        """End supervision of a worker that was never launched (or relaunched): the pool stopped first."""
        if not self._execution_id:  # the first attempt's id exists from start() on, even unused
            self._execution_id = _new_execution_id()
        self.finish()

    def finish(self) -> None:
        """Supervision ended (called last by the driver): publish it, and tell the pool."""
        self.runtime.events.emit(
            WorkerFinished,
            self.name,
            self._execution_id,
            self._attempt,
            self.policy.max_executions_attempts,
            self._status,
        )
        self.runtime.on_finished(self)

    # -- stop ------------------------------------------------------------------------------------

    def interrupt(self, attempt: int = 0) -> None:
        """Set the worker's stop flag (``ctx.cancelled``).

        For attempt number ``attempt`` only if it is still running (a silent attempt); with 0,
        whatever it does (the pool is stopping).
        """
        with self.runtime.state_lock:
            if attempt and (attempt != self._attempt or self._status is not RUNNING):
                return
            self.flag.set()  # under the lock: begin_attempt() clears it there

    def time_out(self, timeout: float, stack: str) -> None:
        """Report that the worker did not return within ``stop()``'s deadline (status unchanged).

        Reported once, even when several ``stop()`` calls time out.
        """
        with self.runtime.state_lock:
            if self._timed_out:
                return
            self._timed_out = True
        record = self._record(self._status, f"did not stop within {timeout:g} seconds")
        self.runtime.events.emit(
            WorkerStopTimedOut,
            self.name,
            record.execution_id,
            self._attempt,
            self.policy.max_executions_attempts,
            record,
            self._status,
            timeout,
            stack,
        )

    # -- hang detection (called by the watchdog) ------------------------------------------------

    def check_silence(self, now: float) -> float | None:
        """Report a running attempt silent for longer than ``max_silence`` (and maybe cancel it).

        Returns when the attempt would next become silent (monotonic), or None when there is
        nothing to watch right now.
        """
        max_silence = self.policy.max_silence
        if max_silence is None or self._status is not RUNNING:
            return None
        attempt = self._attempt
        if self._silenced == attempt:
            return None  # already reported for this attempt
        if now - self.last_beat < max_silence:
            return self.last_beat + max_silence
        record = WorkerExecutionEvent(
            self._execution_id, f"no heartbeat for {max_silence:g} seconds", datetime.now(UTC)
        )
        with self.runtime.state_lock:
            if self._status is not RUNNING or self._attempt != attempt:
                return None  # the attempt ended meanwhile
            self._silenced = attempt
            self._events.append(record)
        restarting = self.policy.restart_on_silence and not self.runtime.cancel.is_set()
        self.runtime.events.emit(
            WorkerSilent,
            self.name,
            record.execution_id,
            attempt,
            self.policy.max_executions_attempts,
            record,
            RUNNING,
            max_silence,
            restarting,
        )
        if restarting and self.driver is not None:
            self.driver.cancel_attempt(attempt)
        return None

    def running_attempt(self) -> int:
        """The number of the attempt running now, or 0 when none is."""
        return self._attempt if self._status is RUNNING else 0

    def __repr__(self) -> str:
        return f"<Supervisor {self.name!r} {self._status.value}>"
