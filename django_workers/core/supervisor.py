"""Supervision of one worker: its state, its restart policy, and the two drivers that run it.

The policy (attempts, restarts, backoff, stop) is written once, in two methods:
:meth:`Supervisor.begin_attempt` starts an attempt unless the pool is stopping, and
:meth:`Supervisor.end_attempt` records how it ended and decides what follows (nothing, or a
restart after a backoff delay). :meth:`Supervisor.drive_sync` calls them from the worker's thread,
:meth:`Supervisor.drive_async` from its task on the pool's event loop; the drivers only run the
attempts and wait (interruptibly) for the deferral and the backoff delays.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import threading
from collections import deque
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from time import monotonic
from typing import TYPE_CHECKING, Any

from .backoff import Backoff
from .context import LOGGER_NAME, WorkerContext, _current
from .events import (
    AttemptFailed,
    AttemptsExhausted,
    AttemptStarted,
    AttemptSucceeded,
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

__all__ = ["AttemptHook", "Supervisor"]

logger = logging.getLogger(LOGGER_NAME)

#: Wraps every attempt, entered in the thread (or task) that runs it, just before ``run(ctx)``;
#: its ``__exit__`` sees the attempt's exception. Used for database hygiene and trace spans.
AttemptHook = Callable[[WorkerContext], AbstractContextManager[Any]]


def _now() -> datetime:
    return datetime.now(UTC)


# Records and events are named tuples built with tuple.__new__ on the attempt path: the generated
# __new__ costs three times as much. _clock(UTC) is datetime.now(UTC) without the attribute lookup.
_new = tuple.__new__
_clock = datetime.now


_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}


def uuid4(_urandom: Callable[[int], bytes] = os.urandom, _variant: dict[str, str] = _VARIANT) -> str:
    """A random (version 4) UUID string, like ``str(uuid.uuid4())`` at a third of the cost."""
    h = _urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_variant[h[16]]}{h[17:20]}-{h[20:]}"


# uuid4_batch builds all the strings in one bytearray, 37 bytes each ("8-4-4-4-12" and a newline):
# every hex digit position is filled for all ids at once by one strided slice assignment.
# (source index in the 32 hex digits, target index in the 37 bytes); 12 is the version digit,
# 16 the variant digit, both written separately.
_DIGITS = [(i, i + (i >= 8) + (i >= 12) + (i >= 16) + (i >= 20)) for i in range(32) if i not in (12, 16)]
_VARIANT_DIGIT = bytes(ord(_VARIANT[chr(c)]) if chr(c) in _VARIANT else 0 for c in range(256))


def uuid4_batch(count: int) -> list[str]:
    """``count`` random (version 4) UUID strings: ``[uuid4() for _ in range(count)]``, faster.

    From 16 ids on they come from one ``os.urandom`` call, at about a third of the per-id cost.
    """
    if count < 16:  # below this, the per-id path is cheaper than the slicing set-up
        return [uuid4() for _ in range(count)]
    digits = os.urandom(16 * count).hex().encode("ascii")
    out = bytearray(37 * count)
    for source, target in _DIGITS:
        out[target::37] = digits[source::32]
    dashes = b"-" * count
    out[8::37] = out[13::37] = out[18::37] = out[23::37] = dashes
    out[14::37] = b"4" * count
    out[19::37] = digits[16::32].translate(_VARIANT_DIGIT)
    out[36::37] = b"\n" * count
    return out.decode("ascii").split()


#: Execution ids made in advance, a batch at a time (in a batch, an id costs a third as much).
#: ``popleft`` and ``extend`` are atomic: worker threads share the deque without a lock. A forked
#: child empties it: it must not reuse ids its parent may already have given out.
_spare_ids: deque[str] = deque()
_SPARE_BATCH = 256
os.register_at_fork(after_in_child=_spare_ids.clear)


def new_execution_id() -> str:
    """A fresh random (version 4) UUID string for an attempt: ``uuid4()``, mostly from a batch."""
    try:
        return _spare_ids.popleft()
    except IndexError:
        _spare_ids.extend(uuid4_batch(_SPARE_BATCH))
        return uuid4()


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

    All mutable state is guarded by ``_lock`` (the pool's state lock, shared by its workers);
    readers get :class:`WorkerExecution` snapshots.
    """

    __slots__ = (
        "_attempt",
        "_events",
        "_execution_id",
        "_failure",
        "_lock",
        "_of",
        "_status",
        "attempt_cancel",
        "began",
        "cancel",
        "deferred_start_threshold",
        "done",
        "is_async",
        "label",
        "last_beat",
        "max_executions_attempts",
        "max_silence",
        "name",
        "pool",
        "restart_backoff",
        "restart_on_silence",
        "restarts",
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
        #: The name of the worker's thread or task.
        self.label = f"worker:{name}"
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
        self._lock = pool._state_lock
        self._status = WorkerStatus.UNKNOWN
        self._execution_id = ""
        self._attempt = 0
        self._events: deque[WorkerExecutionEvent] = deque(maxlen=history_size)
        self._failure: Failure | None = None
        #: The denominator of "attempt n/m" messages.
        self._of = _of(max_executions_attempts)
        #: Restarts so far (the backoff's n), and when the running attempt began (monotonic).
        self.restarts = 0
        self.began = 0.0
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
        calls = self.pool._routes[WorkerSilent]
        if calls:
            self.pool._dispatch(
                calls,
                WorkerSilent(
                    self.name,
                    record.execution_id,
                    attempt,
                    self.max_executions_attempts,
                    record,
                    WorkerStatus.RUNNING,
                    max_silence,
                    restarting,
                ),
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

    # -- the policy ---------------------------------------------------------------------------

    def prepare(self, execution_id: str) -> None:
        """Give the first attempt its id and record the deferral, if any.

        Called by ``start()`` in the caller's thread, before the worker's thread or task exists,
        so both are there as soon as ``start()`` returns.
        """
        self._execution_id = execution_id
        if self.deferred_start_threshold:
            delay = self.deferred_start_threshold
            record = WorkerExecutionEvent(execution_id, f"deferring execution attempt for {delay:g} seconds", _now())
            with self._lock:
                self._status = DEFERRED
                self._events.append(record)
            calls = self.pool._routes[WorkerDeferred]
            if calls:
                self.pool._dispatch(
                    calls,
                    WorkerDeferred(self.name, execution_id, 0, self.max_executions_attempts, record, DEFERRED, delay),
                )

    def begin_attempt(self) -> WorkerContext | None:
        """Start the next attempt unless the pool is stopping: give it its id, record, publish.

        Returns the attempt's context, or None once ``stop()`` was called: nothing starts or
        restarts after that.
        """
        cancel = self.cancel
        if cancel.is_set():
            return None
        pool = self.pool
        attempt = self._attempt + 1
        # The first attempt's id was given by prepare(); every further attempt gets a new one.
        execution_id = self._execution_id if attempt == 1 else new_execution_id()
        record = _new(
            WorkerExecutionEvent, (execution_id, f"starting execution attempt {attempt}/{self._of}", _clock(UTC))
        )
        # The beat first: the watchdog, once it sees the attempt running, must not read the
        # previous attempt's last beat (a long backoff would look like silence).
        self.began = self.last_beat = monotonic()
        with self._lock:
            self._execution_id = execution_id
            self._attempt = attempt
            self._status = RUNNING
            self._events.append(record)
        maximum = self.max_executions_attempts
        calls = pool._routes[AttemptStarted]
        if calls:
            pool._dispatch(calls, _new(AttemptStarted, (self.name, execution_id, attempt, maximum, record, RUNNING)))
        if self.restart_on_silence and not self.is_async:
            # The sync attempt's own stop signal, so the watchdog can cancel this attempt alone
            # (an async attempt is cancelled through its task).
            cancel = self.attempt_cancel = threading.Event()
            if self.cancel.is_set():  # stop() may have run before attempt_cancel existed
                cancel.set()
        return WorkerContext(
            self.name,
            execution_id,
            attempt,
            maximum,
            cancel,
            pool._extensions,
            self if self.max_silence is not None else None,
            pool._signal,
        )

    def end_attempt(self, error: BaseException | None) -> float | None:
        """Record how the attempt ended and decide what follows. Restarts are decided here.

        ``error`` is what the attempt raised (None: it returned, or was cancelled by a stop).
        Returns the backoff delay in seconds before the next attempt, or None when supervision
        ends: after a success, a failure during a stop, or the last allowed attempt.
        """
        attempt, execution_id = self._attempt, self._execution_id
        if self.silenced == attempt and (error is None or isinstance(error, asyncio.CancelledError)):
            # Cancelled by the watchdog, not by a stop: the attempt failed.
            error = WorkerSilenceError(f"no heartbeat for {self.max_silence:g} seconds")
        pool = self.pool
        routes = pool._routes
        if error is None:
            record = _new(
                WorkerExecutionEvent,
                (execution_id, f"stopping execution attempt {attempt}/{self._of} with success", _clock(UTC)),
            )
            with self._lock:
                self._status = SUCCESS
                self._events.append(record)
            calls = routes[AttemptSucceeded]
            if calls:
                duration = monotonic() - self.began
                event = (self.name, execution_id, attempt, self.max_executions_attempts, record, SUCCESS, duration)
                pool._dispatch(calls, _new(AttemptSucceeded, event))
            return None  # a worker that returned is done: only failures restart
        duration = monotonic() - self.began
        maximum = self.max_executions_attempts
        panic = not isinstance(error, Exception)
        failure = Failure(error, panic)
        failed_at = _clock(UTC)
        record = _new(
            WorkerExecutionEvent,
            (
                execution_id,
                f"stopping execution attempt {attempt}/{self._of} with "
                f"{'recovered panic' if panic else 'error'}: {failure.message}",
                failed_at,
            ),
        )
        # What follows the failure is decided at once and recorded with it, in one locked update.
        stopping = self.cancel.is_set()
        exhausted = not stopping and maximum != 0 and attempt >= maximum
        if stopping:
            follow_up = None  # stopping: nothing restarts
        elif exhausted:
            follow_up = _new(WorkerExecutionEvent, (execution_id, "max execution attempts reached", failed_at))
        else:
            self.restarts += 1
            follow_up = _new(
                WorkerExecutionEvent,
                (execution_id, "restarting after panic recovery" if panic else "restarting after error", failed_at),
            )
        with self._lock:
            self._status = ERROR
            self._failure = failure
            self._events.append(record)
            if follow_up is not None:
                self._events.append(follow_up)
        dispatch = pool._dispatch
        calls = routes[AttemptFailed]
        if calls:
            dispatch(
                calls,
                _new(AttemptFailed, (self.name, execution_id, attempt, maximum, record, ERROR, duration, failure)),
            )
        if follow_up is None:
            return None
        if exhausted:
            calls = routes[AttemptsExhausted]
            if calls:
                dispatch(calls, _new(AttemptsExhausted, (self.name, execution_id, attempt, maximum, follow_up, ERROR)))
            return None
        delay = self.restart_backoff.delay(self.restarts)
        calls = routes[WorkerRestarting]
        if calls:
            dispatch(
                calls,
                _new(
                    WorkerRestarting,
                    (self.name, execution_id, attempt, maximum, follow_up, ERROR, delay, self.restarts, panic),
                ),
            )
        return delay

    def _finish(self) -> None:
        pool = self.pool
        calls = pool._routes[WorkerFinished]
        if calls:
            event = (self.name, self._execution_id, self._attempt, self.max_executions_attempts, self._status)
            pool._dispatch(calls, _new(WorkerFinished, event))
        pool._worker_finished(self)

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
        self.pool._publish(
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

    def drive_sync(self, base: contextvars.Context, first: WorkerContext | None = None) -> None:
        """Supervise the worker in the current (dedicated) thread until supervision ends.

        ``first``: the first attempt, begun by the pool in the launching thread (see
        ``WorkerPool._launch``); without it, the thread waits out the deferral and begins it.
        """
        cancel, attempt = self.cancel, self._attempt_sync
        try:
            ctx = first
            if ctx is None:
                delay: float | None = self.deferred_start_threshold
                if delay and cancel.wait(delay):
                    return  # stopped while deferred: never starts
                ctx = self.begin_attempt()
            while ctx is not None:
                # Each attempt runs in a fresh copy of the context start() was called in.
                delay = self.end_attempt(base.copy().run(attempt, ctx))
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
        """Supervise the worker as a task on the pool's event loop until supervision ends.

        ``stop()`` cancels the task only once it has started (``task_started``): a task that has
        not run yet sees the stop signal in :meth:`begin_attempt` and ends without an attempt.
        """
        self.task_started = True
        # Locals of a suspended coroutine live as long as it does: a bound method kept here would
        # be one more object per worker for the garbage collector to track.
        cancel, hooked = self.cancel, bool(self.pool._attempt_hooks)
        try:
            delay: float | None = self.deferred_start_threshold
            if delay and await self._pause(delay):
                return  # stopped while deferred: never starts
            while (ctx := self.begin_attempt()) is not None:
                # The attempt, inline: one coroutine per worker, not two. The task runs in a
                # context of its own: no need to reset the variable (and keep a Token alive)
                # after the attempt; the next attempt sets its own.
                _current.set(ctx)
                error: BaseException | None = None
                try:
                    if hooked:
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
        signal = self.pool._signal
        assert signal is not None  # the loop, and its signal, exist before any task
        if self.cancel.is_set():  # stop() came before this task's first step
            return True
        try:
            return await signal.wait(seconds)  # stop() wakes it: no cancellation needed
        except asyncio.CancelledError:
            return True
