"""Supervision of one worker: its state, its restart policy, and the two drivers that run it.

The policy (attempts, restarts, backoff, stop) is written once, in two methods:
:meth:`Supervisor.begin_attempt` starts an attempt unless the pool is stopping, and
:meth:`Supervisor.end_attempt` records how it ended and decides what follows (nothing, or a
restart after a backoff delay): restarts happen there. :meth:`Supervisor.drive_sync` calls them
from the worker's thread, :meth:`Supervisor.drive_async` from its task on the pool's event loop;
the drivers only run the attempts and wait (interruptibly) for the deferral and the backoff.

A supervisor sees its pool only through a :class:`PoolRuntime`: the stop flag, the event router,
the state lock, the attempt hooks, the extensions and the event loop, nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import threading
import traceback
from collections import deque
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from time import monotonic
from types import FrameType
from typing import Any

from .backoff import Backoff
from .context import LOGGER_NAME, WorkerContext, worker_context
from .events import (
    AttemptFailed,
    AttemptsExhausted,
    AttemptStarted,
    AttemptSucceeded,
    EventRouter,
    WorkerDeferred,
    WorkerFinished,
    WorkerRestarting,
    WorkerSilent,
    WorkerStopTimedOut,
)
from .execution import Failure, WorkerExecution, WorkerExecutionEvent, WorkerSilenceError, WorkerStatus
from .loop import EventLoopThread
from .worker import Worker, is_async_worker

__all__ = ["AttemptHook", "PoolRuntime", "SupervisionPolicy", "Supervisor"]

logger = logging.getLogger(LOGGER_NAME)

#: Wraps every attempt, entered in the thread (or task) that runs it, just before ``run(ctx)``;
#: its ``__exit__`` sees the attempt's exception. Used for database hygiene and trace spans.
AttemptHook = Callable[[WorkerContext], AbstractContextManager[Any]]

DEFERRED, RUNNING = WorkerStatus.DEFERRED, WorkerStatus.RUNNING
SUCCESS, ERROR = WorkerStatus.SUCCESS, WorkerStatus.ERROR


def _new_execution_id() -> str:
    # A random (version 4) UUID string; str(uuid.uuid4()) makes benchmark 1 of bench_core.py miss.
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


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
        self._attempt = 0
        self._events: deque[WorkerExecutionEvent] = deque(maxlen=policy.history_size)
        self._failure: Failure | None = None
        self._exhausted = False
        self._timed_out = False
        # -- supervision --
        #: True once supervision has ended (the worker will never run again).
        self.done = False
        self.thread: threading.Thread | None = None
        self.task: asyncio.Task[None] | None = None
        #: True once the task took its first step (a stop cancels only a started task).
        self.task_started = False
        #: Restarts so far (the backoff's n), and when the running attempt began (monotonic).
        self._restarts = 0
        self._began = 0.0
        #: Hang detection: the last sign of life of the running attempt (monotonic), the attempt
        #: found silent (0: none), and that attempt's own stop flag (with restart_on_silence).
        self.last_beat = 0.0
        self._silenced = 0
        self._attempt_cancel: threading.Event | None = None

    # -- reading ------------------------------------------------------------------------------

    @property
    def status(self) -> WorkerStatus:
        """The current status."""
        return self._status

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
        delay = self.policy.deferred_start_threshold
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

    def begin_attempt(self) -> WorkerContext | None:
        """Start the next attempt unless the pool is stopping: give it its id, record, publish.

        Returns the attempt's context, or None once ``stop()`` was called: nothing starts or
        restarts after that.
        """
        runtime, policy = self.runtime, self.policy
        if runtime.cancel.is_set():
            return None
        attempt = self._attempt + 1
        # The first attempt's id was given by prepare(); every further attempt gets a new one.
        execution_id = self._execution_id if attempt == 1 else _new_execution_id()
        # The beat first: the watchdog, once it sees the attempt running, must not read the
        # previous attempt's last beat (a long backoff would look like silence).
        self._began = self.last_beat = monotonic()
        record = WorkerExecutionEvent(
            execution_id, f"starting execution attempt {attempt}/{self._of}", datetime.now(UTC)
        )
        with runtime.state_lock:
            self._execution_id = execution_id
            self._attempt = attempt
            self._status = RUNNING
            self._events.append(record)
        maximum = policy.max_executions_attempts
        runtime.events.emit(AttemptStarted, self.name, execution_id, attempt, maximum, record, RUNNING)
        cancel = runtime.cancel
        if policy.restart_on_silence and not self.is_async:
            # The sync attempt's own stop flag, so the watchdog can cancel this attempt alone
            # (an async attempt is cancelled through its task).
            cancel = self._attempt_cancel = threading.Event()
            if runtime.cancel.is_set():  # stop() may have run before the flag existed
                cancel.set()
        return WorkerContext(
            self.name,
            execution_id,
            attempt,
            maximum,
            cancel,
            runtime.extensions,
            self if policy.max_silence is not None else None,
            runtime.loop.signal if runtime.loop is not None else None,
        )

    def end_attempt(self, error: BaseException | None) -> float | None:
        """Record how the attempt ended and decide what follows. Restarts are decided here.

        ``error`` is what the attempt raised (None: it returned, or was cancelled by a stop).
        Returns the backoff delay in seconds before the next attempt, or None when supervision
        ends: after a success, a failure during a stop, or the last allowed attempt.
        """
        runtime, policy = self.runtime, self.policy
        events = runtime.events
        attempt, execution_id, maximum = self._attempt, self._execution_id, policy.max_executions_attempts
        if self._silenced == attempt and (error is None or isinstance(error, asyncio.CancelledError)):
            # Cancelled by the watchdog, not by a stop: the attempt failed.
            error = WorkerSilenceError(f"no heartbeat for {policy.max_silence:g} seconds")
        duration = monotonic() - self._began
        if error is None:
            record = self._record(SUCCESS, f"stopping execution attempt {attempt}/{self._of} with success")
            events.emit(AttemptSucceeded, self.name, execution_id, attempt, maximum, record, SUCCESS, duration)
            return None  # a worker that returned is done: only failures restart
        panic = not isinstance(error, Exception)
        failure = Failure(error, panic)
        outcome = "recovered panic" if panic else "error"
        record = WorkerExecutionEvent(
            execution_id,
            f"stopping execution attempt {attempt}/{self._of} with {outcome}: {failure.message}",
            datetime.now(UTC),
        )
        # What follows the failure is decided at once and recorded with it, in one locked update.
        stopping = runtime.cancel.is_set()
        exhausted = not stopping and maximum != 0 and attempt >= maximum
        follow_up: WorkerExecutionEvent | None = None
        if exhausted:
            follow_up = WorkerExecutionEvent(execution_id, "max execution attempts reached", record.timestamp)
        elif not stopping:
            self._restarts += 1
            message = "restarting after panic recovery" if panic else "restarting after error"
            follow_up = WorkerExecutionEvent(execution_id, message, record.timestamp)
        with runtime.state_lock:
            self._status = ERROR
            self._failure = failure
            self._exhausted = exhausted
            self._events.append(record)
            if follow_up is not None:
                self._events.append(follow_up)
        events.emit(AttemptFailed, self.name, execution_id, attempt, maximum, record, ERROR, duration, failure)
        if follow_up is None:
            return None  # stopping: nothing restarts
        if exhausted:
            events.emit(AttemptsExhausted, self.name, execution_id, attempt, maximum, follow_up, ERROR)
            return None
        delay = policy.restart_backoff.delay(self._restarts)
        events.emit(
            WorkerRestarting, self.name, execution_id, attempt, maximum, follow_up, ERROR, delay, self._restarts, panic
        )
        return delay

    def _finish(self) -> None:
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

    def interrupt(self) -> None:
        """The pool is stopping: set the running sync attempt's own stop flag, if it has one."""
        cancel = self._attempt_cancel
        if cancel is not None:
            cancel.set()

    def cancel_task(self, spared: frozenset[asyncio.Task[Any]]) -> None:
        """On the loop thread, at stop: cancel the worker's task unless it is in ``spared``.

        ``spared`` are the tasks the stop signal woke (suspended on ``ctx.until_cancelled()`` or
        the pool's own waits): they see the stop by themselves. A task that has not taken its
        first step is left alone: it sees the stop signal and ends without an attempt (a task
        cancelled before its first step would never run at all).
        """
        task = self.task
        if task is not None and self.task_started and not task.done() and task not in spared:
            task.cancel()

    def stack(self, frames: dict[int, FrameType]) -> str:
        """Where the worker is now: its thread's stack, or its task's await chain."""
        thread, task, loop = self.thread, self.task, self.runtime.loop
        if thread is not None and thread.ident in frames:
            return "".join(traceback.format_stack(frames[thread.ident]))
        if task is not None and loop is not None:
            return loop.stack_of(task, frames)
        return "(no stack available)\n"

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
        if restarting:
            loop = self.runtime.loop
            if self.is_async and loop is not None:
                loop.call(self._cancel_silent_task, attempt)
            else:
                self.interrupt()
        return None

    def _cancel_silent_task(self, attempt: int) -> None:
        # On the loop thread: cancel the task if it is still in the silent attempt.
        if self.task is not None and self._attempt == attempt and self._status is RUNNING:
            self.task.cancel()

    # -- running an attempt -----------------------------------------------------------------------

    def _hooks(self, ctx: WorkerContext) -> AbstractContextManager[Any]:
        stack = contextlib.ExitStack()
        try:
            for hook in self.runtime.attempt_hooks:
                stack.enter_context(hook(ctx))
        except BaseException:
            stack.close()
            raise
        return stack

    # -- sync driver: one thread per worker ------------------------------------------------------

    def launch_thread(self, base: contextvars.Context) -> threading.Thread:
        """The worker's thread (created, not started), its first attempt begun unless deferred.

        The first attempt begins here, in the launching thread: ``start()`` returns with the
        workers already ``running``, and the new thread only runs the attempt (a new thread that
        did the bookkeeping first kept the GIL while the launcher waited to be woken, which made
        starting many threads miss its benchmark).
        """
        first = None if self.policy.deferred_start_threshold else self.begin_attempt()
        self.thread = threading.Thread(
            target=self.drive_sync,
            args=(base, first),
            name=self.label,
            daemon=True,  # a worker that ignores cancellation must not keep the process alive
        )
        return self.thread

    def drive_sync(self, base: contextvars.Context, first: WorkerContext | None = None) -> None:
        """Supervise the worker in the current (dedicated) thread until supervision ends.

        ``first``: the first attempt, begun by :meth:`launch_thread`; without it, the thread
        waits out the deferral and begins it.
        """
        cancel = self.runtime.cancel
        try:
            ctx = first
            if ctx is None:
                delay: float | None = self.policy.deferred_start_threshold
                if delay and cancel.wait(delay):
                    return  # stopped while deferred: never starts
                ctx = self.begin_attempt()
            while ctx is not None:
                # Each attempt runs in a fresh copy of the context start() was called in.
                delay = self.end_attempt(base.copy().run(self._attempt_sync, ctx))
                if delay is None or (delay > 0 and cancel.wait(delay)):
                    return
                ctx = self.begin_attempt()
        except BaseException:  # pragma: no cover - a bug in the pool itself or a listener
            logger.exception(
                "supervision of worker %s failed",
                self.name,
                extra={"worker": self.name, "workerExecutionID": self._execution_id},
            )
        finally:
            self._finish()

    def _attempt_sync(self, ctx: WorkerContext) -> BaseException | None:
        worker_context.set(ctx)
        try:
            if self.runtime.attempt_hooks:
                with self._hooks(ctx):
                    self.worker.run(ctx)
            else:
                self.worker.run(ctx)
        except BaseException as exc:  # a worker never takes the process down
            return exc
        return None

    # -- async driver: one task per worker on the pool's loop -------------------------------------

    def create_task(self, base: contextvars.Context) -> None:
        """Create the worker's task on the pool's loop (called on the loop's thread)."""
        loop = self.runtime.loop
        assert loop is not None
        self.task = loop.loop.create_task(self.drive_async(), name=self.label, context=base.copy())

    async def drive_async(self) -> None:
        """Supervise the worker as a task on the pool's event loop until supervision ends."""
        self.task_started = True
        cancel = self.runtime.cancel
        try:
            delay: float | None = self.policy.deferred_start_threshold
            if delay and await self._pause(delay):
                return  # stopped while deferred: never starts
            while (ctx := self.begin_attempt()) is not None:
                # The task runs in a context of its own: each attempt sets the variable anew.
                worker_context.set(ctx)
                error: BaseException | None = None
                try:
                    if self.runtime.attempt_hooks:
                        with self._hooks(ctx):
                            await self.worker.run(ctx)
                    else:
                        await self.worker.run(ctx)
                except asyncio.CancelledError as exc:
                    error = None if cancel.is_set() else exc  # cancelled by stop(): a clean end
                except BaseException as exc:
                    error = exc
                delay = self.end_attempt(error)
                # A zero delay still pauses: a worker failing without ever suspending, restarted
                # with no backoff, would otherwise monopolise the loop.
                if delay is None or await self._pause(delay):
                    return
        except BaseException:  # pragma: no cover - a bug in the pool itself or a listener
            logger.exception(
                "supervision of worker %s failed",
                self.name,
                extra={"worker": self.name, "workerExecutionID": self._execution_id},
            )
        finally:
            self._finish()

    async def _pause(self, seconds: float) -> bool:
        """Wait ``seconds`` on the loop (0 still yields to it); True when the pool is stopping."""
        loop = self.runtime.loop
        assert loop is not None  # the loop, and its signal, exist before any task
        if self.runtime.cancel.is_set():  # stop() came before this task's first step
            return True
        try:
            return await loop.signal.wait(seconds)  # stop() wakes it: no cancellation needed
        except asyncio.CancelledError:
            return True

    def __repr__(self) -> str:
        return f"<Supervisor {self.name!r} {self._status.value}>"
