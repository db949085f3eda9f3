"""Supervision of one worker: its state, its restart policy, and the two drivers that run it.

The whole policy (deferral, attempts, restarts, backoff, stop) is written once, in
:meth:`Supervisor.lifecycle`, as a generator of commands: ``RUN`` (run one attempt, send back
the exception it raised or ``None``) or a number of seconds (wait interruptibly, send back True
when cancelled). :meth:`Supervisor.drive_sync` executes those commands in a thread,
:meth:`Supervisor.drive_async` as a task on the pool's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import threading
from collections import deque
from collections.abc import Callable, Generator
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from time import monotonic
from typing import TYPE_CHECKING, Any, Final

from .backoff import Backoff
from .context import LOGGER_NAME, WorkerContext, _current
from .events import (
    AttemptFailed,
    AttemptsExhausted,
    AttemptStarted,
    AttemptSucceeded,
    LifecycleEvent,
    WorkerDeferred,
    WorkerFinished,
    WorkerRestarting,
    WorkerSilent,
    WorkerStopTimedOut,
)
from .execution import Failure, WorkerExecution, WorkerExecutionEvent, WorkerSilenceError, WorkerStatus
from .worker import Worker, is_async_worker

if TYPE_CHECKING:
    from .pool import WorkerPool

__all__ = ["RUN", "AttemptHook", "Supervisor"]

logger = logging.getLogger(LOGGER_NAME)

#: Wraps every attempt, entered in the thread (or task) that runs it, just before ``run(ctx)``;
#: its ``__exit__`` sees the attempt's exception. Used for database hygiene and trace spans.
AttemptHook = Callable[[WorkerContext], AbstractContextManager[Any]]


class _Run:
    __slots__ = ()

    def __repr__(self) -> str:
        return "RUN"


RUN: Final = _Run()

Command = _Run | float
Lifecycle = Generator[Command, Any, None]


def _now() -> datetime:
    return datetime.now(UTC)


_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}


def uuid4(_urandom: Callable[[int], bytes] = os.urandom, _variant: dict[str, str] = _VARIANT) -> str:
    """A random (version 4) UUID string, like ``str(uuid.uuid4())`` at a third of the cost."""
    h = _urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_variant[h[16]]}{h[17:20]}-{h[20:]}"


def uuid4_batch(count: int, _variant: dict[str, str] = _VARIANT) -> list[str]:
    """``count`` random (version 4) UUID strings from one ``os.urandom`` call."""
    pool = os.urandom(16 * count).hex()
    ids = []
    for start in range(0, 32 * count, 32):
        h = pool[start : start + 32]
        ids.append(f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_variant[h[16]]}{h[17:20]}-{h[20:]}")
    return ids


DEFERRED, RUNNING, SUCCESS, ERROR = (
    WorkerStatus.DEFERRED,
    WorkerStatus.RUNNING,
    WorkerStatus.SUCCESS,
    WorkerStatus.ERROR,
)


def _of(max_attempts: int) -> str:
    return str(max_attempts) if max_attempts else "unlimited"


class Supervisor:
    """Runs one worker under the pool's policy and keeps its execution report.

    All mutable state is guarded by ``_lock``; readers get :class:`WorkerExecution` snapshots.
    """

    __slots__ = (
        "_attempt",
        "_events",
        "_execution_id",
        "_failure",
        "_lock",
        "_status",
        "attempt_cancel",
        "cancel",
        "deferred_start_threshold",
        "done",
        "is_async",
        "last_beat",
        "max_executions_attempts",
        "max_silence",
        "name",
        "pool",
        "restart_backoff",
        "restart_on_silence",
        "silenced",
        "task",
        "task_started",
        "thread",
        "timed_out",
        "worker",
    )

    def __init__(
        self,
        pool: WorkerPool,
        worker: Worker,
        name: str,
        deferred_start_threshold: float,
        max_executions_attempts: int,
        restart_backoff: Backoff,
        history_size: int,
        max_silence: float | None = None,
        restart_on_silence: bool = False,
    ) -> None:
        self.pool = pool
        self.worker = worker
        self.name = name
        self.is_async = is_async_worker(worker)
        self.deferred_start_threshold = deferred_start_threshold
        self.max_executions_attempts = max_executions_attempts
        self.restart_backoff = restart_backoff
        #: The pool's stop signal, shared by all its workers: nothing starts or restarts once set.
        self.cancel: threading.Event = pool._cancel
        #: True once supervision has ended (the worker will never run again).
        self.done = False
        self.thread: threading.Thread | None = None
        self.task: asyncio.Task[None] | None = None
        self.task_started = False
        self.timed_out = False
        self._lock = threading.Lock()
        self._status = WorkerStatus.UNKNOWN
        self._execution_id = ""
        self._attempt = 0
        self._events: deque[WorkerExecutionEvent] = deque(maxlen=history_size)
        self._failure: Failure | None = None
        #: Hang detection (see WorkerPool.register): the monotonic time of the last sign of life
        #: of the running attempt, the attempt found silent (0: none), and the running attempt's
        #: own stop signal (only when a silent attempt is to be cancelled).
        self.max_silence = max_silence
        self.restart_on_silence = restart_on_silence
        self.last_beat = 0.0
        self.silenced = 0
        self.attempt_cancel: threading.Event | None = None

    # -- reading ---------------------------------------------------------------------------

    def snapshot(self) -> WorkerExecution:
        """An immutable copy of the report, safe to keep and iterate."""
        with self._lock:
            failure = self._failure
            return WorkerExecution(
                id=self._execution_id,
                name=self.name,
                status=self._status,
                current_execution_attempt=self._attempt,
                max_executions_attempts=self.max_executions_attempts,
                deferred_start_threshold=self.deferred_start_threshold,
                events=tuple(self._events),
                last_error=None if failure is None else failure.message,
                **self._heartbeat_fields(),
                failure=failure,
            )

    def _heartbeat_fields(self) -> dict[str, Any]:
        # Called with the lock held.
        if self.max_silence is None:
            return {}
        if self._status is not WorkerStatus.RUNNING:
            return {"max_silence": self.max_silence}
        silence = monotonic() - self.last_beat
        return {
            "max_silence": self.max_silence,
            "last_heartbeat": datetime.now(UTC) - timedelta(seconds=silence),
            "silent": silence >= self.max_silence,
        }

    def check_silence(self, now: float) -> float | None:
        """Called by the pool's watchdog: report a running attempt silent for too long.

        Returns when the attempt would next become silent (monotonic), or None when there is
        nothing to watch right now.
        """
        max_silence = self.max_silence
        if max_silence is None or self._status is not WorkerStatus.RUNNING:
            return None
        attempt = self._attempt
        if self.silenced == attempt:
            return None  # already reported for this attempt
        silence = now - self.last_beat
        if silence < max_silence:
            return self.last_beat + max_silence
        with self._lock:
            if self._status is not WorkerStatus.RUNNING or self._attempt != attempt:
                return None
            self.silenced = attempt
            record = WorkerExecutionEvent(self._execution_id, f"no heartbeat for {max_silence:g} seconds", _now())
            self._events.append(record)
        restarting = self.restart_on_silence and not self.cancel.is_set()
        if self.pool._listeners:
            self._publish(
                WorkerSilent(
                    self.name,
                    record.execution_id,
                    attempt,
                    self.max_executions_attempts,
                    record,
                    WorkerStatus.RUNNING,
                    max_silence,
                    restarting,
                )
            )
        if restarting:
            if self.is_async:
                task = self.task
                loop = self.pool._loop
                if task is not None and loop is not None:
                    loop.call_soon_threadsafe(self._cancel_silent_task, attempt)
            elif self.attempt_cancel is not None:
                self.attempt_cancel.set()
        return None

    def _cancel_silent_task(self, attempt: int) -> None:
        # On the loop thread: cancel the task if it is still in the silent attempt.
        if self.task is not None and self._attempt == attempt and self._status is WorkerStatus.RUNNING:
            self.task.cancel()

    @property
    def status(self) -> WorkerStatus:
        """The current status."""
        return self._status

    # -- writing: state changes happen under the lock, then the event is published -----------

    def _record(self, status: WorkerStatus, message: str) -> WorkerExecutionEvent:
        record = WorkerExecutionEvent(self._execution_id, message, _now())
        with self._lock:
            self._status = status
            self._events.append(record)
        return record

    def _publish(self, event: LifecycleEvent) -> None:
        self.pool._publish(event)

    # -- the policy ---------------------------------------------------------------------------

    def prepare(self, execution_id: str) -> None:
        """Give the first attempt its id and record the deferral, if any.

        Called by ``start()`` in the caller's thread, before the worker's thread or task exists,
        so both are there as soon as ``start()`` returns.
        """
        delay = self.deferred_start_threshold
        self._execution_id = execution_id
        if delay > 0:
            record = WorkerExecutionEvent(execution_id, f"deferring execution attempt for {delay:g} seconds", _now())
            with self._lock:
                self._status = DEFERRED
                self._events.append(record)
            if self.pool._listeners:
                self._publish(
                    WorkerDeferred(self.name, execution_id, 0, self.max_executions_attempts, record, DEFERRED, delay)
                )

    def lifecycle(self) -> Lifecycle:
        """The supervision policy of this worker, as a generator of commands (see module doc)."""
        name, maximum, lock, events, cancel = (
            self.name,
            self.max_executions_attempts,
            self._lock,
            self._events,
            self.cancel,
        )
        listeners = self.pool._listeners
        publish = self.pool._publish
        of = _of(maximum)
        # Records and events are named tuples built with tuple.__new__: this runs on every
        # attempt, and the generated __new__ costs three times as much.
        _new = tuple.__new__
        now = datetime.now
        if self.deferred_start_threshold > 0 and (yield self.deferred_start_threshold):
            return  # stopped while deferred: never starts
        restarts = 0
        attempt = 0
        execution_id = self._execution_id
        while not cancel.is_set():
            attempt += 1
            if attempt > 1:
                execution_id = uuid4()
            record = _new(WorkerExecutionEvent, (execution_id, f"starting execution attempt {attempt}/{of}", now(UTC)))
            with lock:
                self._execution_id = execution_id
                self._attempt = attempt
                self._status = RUNNING
                events.append(record)
            if listeners:
                publish(_new(AttemptStarted, (name, execution_id, attempt, maximum, record, RUNNING)))
            began = self.last_beat = monotonic()

            error: BaseException | None = yield RUN

            if self.silenced == attempt and (error is None or isinstance(error, asyncio.CancelledError)):
                # Cancelled by the watchdog, not by a stop: the attempt failed.
                error = WorkerSilenceError(f"no heartbeat for {self.max_silence:g} seconds")

            duration = monotonic() - began
            if error is None:
                record = _new(
                    WorkerExecutionEvent,
                    (execution_id, f"stopping execution attempt {attempt}/{of} with success", now(UTC)),
                )
                with lock:
                    self._status = SUCCESS
                    events.append(record)
                if listeners:
                    publish(_new(AttemptSucceeded, (name, execution_id, attempt, maximum, record, SUCCESS, duration)))
                return  # a worker that returned is done: only failures restart
            panic = not isinstance(error, Exception)
            failure = Failure(error, panic)
            failed_at = now(UTC)
            record = _new(
                WorkerExecutionEvent,
                (
                    execution_id,
                    f"stopping execution attempt {attempt}/{of} with "
                    f"{'recovered panic' if panic else 'error'}: {failure.message}",
                    failed_at,
                ),
            )
            # What follows the failure is decided at once and recorded with it, in one locked update.
            stopping = cancel.is_set()
            exhausted = not stopping and maximum != 0 and attempt >= maximum
            if stopping:
                follow_up = None  # stopping: nothing restarts
            elif exhausted:
                follow_up = _new(WorkerExecutionEvent, (execution_id, "max execution attempts reached", failed_at))
            else:
                restarts += 1
                follow_up = _new(
                    WorkerExecutionEvent,
                    (execution_id, "restarting after panic recovery" if panic else "restarting after error", failed_at),
                )
            with lock:
                self._status = ERROR
                self._failure = failure
                events.append(record)
                if follow_up is not None:
                    events.append(follow_up)
            if listeners:
                publish(_new(AttemptFailed, (name, execution_id, attempt, maximum, record, ERROR, duration, failure)))
            if follow_up is None:
                return
            if exhausted:
                if listeners:
                    publish(_new(AttemptsExhausted, (name, execution_id, attempt, maximum, follow_up, ERROR)))
                return
            delay = self.restart_backoff.delay(restarts)
            if listeners:
                publish(
                    _new(
                        WorkerRestarting,
                        (name, execution_id, attempt, maximum, follow_up, ERROR, delay, restarts, panic),
                    )
                )
            if (yield delay):  # a zero delay still lets the drivers check for a stop (and yield the loop)
                return

    def _finish(self) -> None:
        self._publish(
            WorkerFinished(self.name, self._execution_id, self._attempt, self.max_executions_attempts, self._status)
        )
        self.pool._worker_finished(self)

    def time_out(self, timeout: float, stack: str) -> None:
        """Report that the worker did not return within ``stop()``'s deadline (status unchanged).

        Reported once, even when several ``stop()`` calls time out.
        """
        with self._lock:
            if self.timed_out:
                return
            self.timed_out = True
        message = f"did not stop within {timeout:g} seconds"
        record = self._record(self._status, message)
        self._publish(
            WorkerStopTimedOut(
                self.name,
                self._execution_id,
                self._attempt,
                self.max_executions_attempts,
                record,
                self._status,
                timeout,
                stack,
            )
        )

    def _hooks(self, ctx: WorkerContext) -> AbstractContextManager[Any]:
        hooks = self.pool._attempt_hooks
        if len(hooks) == 1:  # the common case, without an ExitStack's cost on every attempt
            return hooks[0](ctx)
        stack = contextlib.ExitStack()
        try:
            for hook in hooks:
                stack.enter_context(hook(ctx))
        except BaseException:
            stack.close()
            raise
        return stack

    # -- sync driver: one thread per worker ---------------------------------------------------

    def drive_sync(self, base: contextvars.Context) -> None:
        """Execute the lifecycle in the current (dedicated) thread."""
        send, cancel, attempt = self.lifecycle().send, self.cancel, self._attempt_sync
        result: Any = None
        try:
            while True:
                try:
                    command = send(result)
                except StopIteration:
                    return
                if command is RUN:
                    result = base.copy().run(attempt)
                else:
                    assert isinstance(command, float | int)
                    result = cancel.wait(command) if command > 0 else cancel.is_set()
        except BaseException:  # pragma: no cover - a bug in the pool itself or a listener
            logger.exception(
                "supervision of worker %s failed",
                self.name,
                extra={"worker": self.name, "workerExecutionID": self._execution_id},
            )
        finally:
            self._finish()

    def _attempt_sync(self) -> BaseException | None:
        cancel = self.cancel
        if self.restart_on_silence:
            # The attempt's own stop signal, so the watchdog can cancel this attempt alone.
            cancel = self.attempt_cancel = threading.Event()
            if self.cancel.is_set():  # stop() may have run before attempt_cancel existed
                cancel.set()
        ctx = WorkerContext(
            self.name,
            self._execution_id,
            self._attempt,
            self.max_executions_attempts,
            cancel,
            self.pool._extensions,
            self if self.max_silence is not None else None,
        )
        _current.set(ctx)
        try:
            if self.pool._attempt_hooks:
                with self._hooks(ctx):
                    self.worker.run(ctx)
            else:
                self.worker.run(ctx)
        except BaseException as exc:  # a worker never takes the process down
            return exc
        return None

    # -- async driver: one task per worker on the pool's loop ---------------------------------

    async def drive_async(self) -> None:
        """Execute the lifecycle as a task on the pool's event loop.

        ``stop()`` cancels the task only once it has started (``task_started``): a task that has
        not run yet sees the stop signal in the lifecycle and ends without an attempt.
        """
        self.task_started = True
        lifecycle = self.lifecycle()
        result: Any = None
        try:
            while True:
                try:
                    command = lifecycle.send(result)
                except StopIteration:
                    return
                if command is RUN:
                    # The attempt, inline: one coroutine per worker, not two.
                    ctx = WorkerContext(
                        self.name,
                        self._execution_id,
                        self._attempt,
                        self.max_executions_attempts,
                        self.cancel,
                        self.pool._extensions,
                        self if self.max_silence is not None else None,
                    )
                    # The task runs in a context of its own: no need to reset the variable (and
                    # keep a Token alive) after the attempt; the next attempt sets its own.
                    _current.set(ctx)
                    try:
                        if self.pool._attempt_hooks:
                            with self._hooks(ctx):
                                await self.worker.run(ctx)
                        else:
                            await self.worker.run(ctx)
                        result = None
                    except asyncio.CancelledError as exc:
                        result = None if self.cancel.is_set() else exc  # cancelled by stop(): a clean end
                    except BaseException as exc:
                        result = exc
                else:
                    assert isinstance(command, float | int)
                    if self.cancel.is_set():  # stop() came before this task's first step
                        result = True
                        continue
                    try:
                        # sleep(0) too: a worker failing without ever suspending, restarted with
                        # no backoff, would otherwise monopolise the loop.
                        await asyncio.sleep(command)
                        result = self.cancel.is_set()
                    except asyncio.CancelledError:
                        result = True  # stop() cancelled the wait
        except BaseException:  # pragma: no cover - a bug in the pool itself or a listener
            logger.exception(
                "supervision of worker %s failed",
                self.name,
                extra={"worker": self.name, "workerExecutionID": self._execution_id},
            )
        finally:
            self._finish()
