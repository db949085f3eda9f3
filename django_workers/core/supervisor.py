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
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Generator, Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime
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
    WorkerStopTimedOut,
)
from .execution import Failure, WorkerExecution, WorkerExecutionEvent, WorkerStatus
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


def _of(max_attempts: int) -> str:
    return str(max_attempts) if max_attempts else "unlimited"


class Supervisor:
    """Runs one worker under the pool's policy and keeps its execution report.

    All mutable state is guarded by ``_lock``; readers get :class:`WorkerExecution` snapshots.
    """

    def __init__(
        self,
        pool: WorkerPool,
        worker: Worker,
        name: str,
        deferred_start_threshold: float,
        max_executions_attempts: int,
        restart_backoff: Backoff,
        history_size: int,
    ) -> None:
        self.pool = pool
        self.worker = worker
        self.name = name
        self.is_async = is_async_worker(worker)
        self.deferred_start_threshold = deferred_start_threshold
        self.max_executions_attempts = max_executions_attempts
        self.restart_backoff = restart_backoff
        #: Set by ``stop()``: nothing starts or restarts after it.
        self.cancel = threading.Event()
        #: Set when supervision has ended (the worker will never run again).
        self.finished = threading.Event()
        self.thread: threading.Thread | None = None
        self.task: asyncio.Task[None] | None = None
        self.timed_out = False
        self._lock = threading.Lock()
        self._status = WorkerStatus.UNKNOWN
        self._execution_id = ""
        self._attempt = 0
        self._events: deque[WorkerExecutionEvent] = deque(maxlen=history_size)
        self._failure: Failure | None = None
        self._context: WorkerContext | None = None
        self._began = 0.0

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
                failure=failure,
            )

    @property
    def status(self) -> WorkerStatus:
        """The current status."""
        return self._status

    # -- writing: every state change goes through _record, then is published --------------

    def _record(self, status: WorkerStatus, message: str) -> WorkerExecutionEvent:
        record = WorkerExecutionEvent(self._execution_id, message, _now())
        with self._lock:
            self._status = status
            self._events.append(record)
        return record

    def _publish(self, event: LifecycleEvent) -> None:
        self.pool._publish(event)

    # -- the policy ---------------------------------------------------------------------------

    def prepare(self) -> None:
        """Give the first attempt its id (called by ``start()``, so a deferral event carries it)."""
        with self._lock:
            self._execution_id = str(uuid.uuid4())

    def lifecycle(self) -> Lifecycle:
        """The supervision policy of this worker, as a generator of commands (see module doc)."""
        maximum = self.max_executions_attempts
        of = _of(maximum)
        if self.deferred_start_threshold > 0:
            delay = self.deferred_start_threshold
            record = self._record(WorkerStatus.DEFERRED, f"deferring execution attempt for {delay:g} seconds")
            self._publish(
                WorkerDeferred(self.name, self._execution_id, 0, maximum, record, WorkerStatus.DEFERRED, delay)
            )
            if (yield delay):
                return
        restarts = 0
        while not self.cancel.is_set():
            attempt = self._attempt + 1
            if attempt > 1:
                new_id = str(uuid.uuid4())
                with self._lock:
                    self._execution_id = new_id
            self._attempt = attempt
            self._began = time.monotonic()
            record = self._record(WorkerStatus.RUNNING, f"starting execution attempt {attempt}/{of}")
            self._publish(AttemptStarted(self.name, self._execution_id, attempt, maximum, record, WorkerStatus.RUNNING))

            error: BaseException | None = yield RUN

            duration = time.monotonic() - self._began
            if error is None:
                record = self._record(WorkerStatus.SUCCESS, f"stopping execution attempt {attempt}/{of} with success")
                self._publish(
                    AttemptSucceeded(
                        self.name, self._execution_id, attempt, maximum, record, WorkerStatus.SUCCESS, duration
                    )
                )
                return  # a worker that returned is done: only failures restart
            panic = not isinstance(error, Exception)
            failure = Failure(error, panic)
            with self._lock:
                self._failure = failure
            kind = "recovered panic" if panic else "error"
            record = self._record(
                WorkerStatus.ERROR, f"stopping execution attempt {attempt}/{of} with {kind}: {failure.message}"
            )
            self._publish(
                AttemptFailed(
                    self.name, self._execution_id, attempt, maximum, record, WorkerStatus.ERROR, duration, failure
                )
            )
            if self.cancel.is_set():
                return  # stopping: nothing restarts
            if maximum and attempt >= maximum:
                record = self._record(WorkerStatus.ERROR, "max execution attempts reached")
                self._publish(
                    AttemptsExhausted(self.name, self._execution_id, attempt, maximum, record, WorkerStatus.ERROR)
                )
                return
            restarts += 1
            delay = self.restart_backoff.delay(restarts)
            record = self._record(
                WorkerStatus.ERROR, "restarting after panic recovery" if panic else "restarting after error"
            )
            self._publish(
                WorkerRestarting(
                    self.name, self._execution_id, attempt, maximum, record, WorkerStatus.ERROR, delay, restarts, panic
                )
            )
            if delay > 0 and (yield delay):
                return

    def _finish(self) -> None:
        self._publish(
            WorkerFinished(self.name, self._execution_id, self._attempt, self.max_executions_attempts, self._status)
        )
        self.finished.set()
        self.pool._worker_finished(self)

    def task_done(self, task: asyncio.Task[None]) -> None:
        """Done-callback of the async task: finish a task cancelled before it ever ran."""
        if not self.finished.is_set():
            self._finish()

    def time_out(self, timeout: float, stack: str) -> None:
        """Report that the worker did not return within ``stop()``'s deadline (status unchanged)."""
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

    def _context_for_attempt(self) -> WorkerContext:
        return WorkerContext(
            self.name,
            self._execution_id,
            self._attempt,
            self.max_executions_attempts,
            self.cancel,
            self.pool._context_extensions(),
        )

    @contextlib.contextmanager
    def _hooks(self, ctx: WorkerContext) -> Iterator[None]:
        hooks = self.pool._attempt_hooks
        if not hooks:
            yield
            return
        with contextlib.ExitStack() as stack:
            for hook in hooks:
                stack.enter_context(hook(ctx))
            yield

    # -- sync driver: one thread per worker ---------------------------------------------------

    def drive_sync(self, lifecycle: Lifecycle, command: Command, base: contextvars.Context) -> None:
        """Execute the lifecycle in the current (dedicated) thread."""
        try:
            while True:
                if command is RUN:
                    result: Any = base.copy().run(self._attempt_sync)
                else:
                    assert isinstance(command, float | int)
                    result = self.cancel.wait(command)
                try:
                    command = lifecycle.send(result)
                except StopIteration:
                    return
        except BaseException:  # pragma: no cover - a bug in the pool itself or a listener
            logger.exception(
                "supervision of worker %s failed",
                self.name,
                extra={"worker": self.name, "workerExecutionID": self._execution_id},
            )
        finally:
            self._finish()

    def _attempt_sync(self) -> BaseException | None:
        ctx = self._context_for_attempt()
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

    async def drive_async(self, lifecycle: Lifecycle, command: Command) -> None:
        """Execute the lifecycle as a task on the pool's event loop."""
        try:
            while True:
                if command is RUN:
                    result: Any = await self._attempt_async()
                else:
                    assert isinstance(command, float | int)
                    try:
                        await asyncio.sleep(command)
                        result = self.cancel.is_set()
                    except asyncio.CancelledError:
                        result = True
                try:
                    command = lifecycle.send(result)
                except StopIteration:
                    return
        except BaseException:  # pragma: no cover - a bug in the pool itself or a listener
            logger.exception(
                "supervision of worker %s failed",
                self.name,
                extra={"worker": self.name, "workerExecutionID": self._execution_id},
            )
        finally:
            self._finish()

    async def _attempt_async(self) -> BaseException | None:
        ctx = self._context_for_attempt()
        token = _current.set(ctx)
        try:
            if self.pool._attempt_hooks:
                with self._hooks(ctx):
                    await self.worker.run(ctx)
            else:
                await self.worker.run(ctx)
        except asyncio.CancelledError as exc:
            if self.cancel.is_set():
                return None  # cancelled by stop(): a clean end
            return exc
        except BaseException as exc:
            return exc
        finally:
            _current.reset(token)
        return None
