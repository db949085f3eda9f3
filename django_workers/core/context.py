"""``WorkerContext``: what a running worker knows about itself, and the ``ctx_*`` accessors."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
from collections.abc import KeysView, MutableMapping
from threading import get_ident
from time import monotonic
from typing import Any, Protocol

__all__ = [
    "LOGGER_NAME",
    "StopSignal",
    "WorkerContext",
    "WorkerLoggerAdapter",
    "ctx_logger",
    "ctx_worker_execution_id",
    "ctx_worker_name",
    "current_context",
]

LOGGER_NAME = "django_workers"

logger = logging.getLogger(LOGGER_NAME)

_current: contextvars.ContextVar[WorkerContext | None] = contextvars.ContextVar("django_workers_context", default=None)


class _Heart(Protocol):
    last_beat: float


def _wake(waiter: asyncio.Future[bool]) -> None:
    if not waiter.done():
        waiter.set_result(False)


#: A StopSignal forgets its cancelled futures (a ``wait_for(ctx.until_cancelled(), 1)`` loop makes
#: one a second) when it holds more than four times as many as after the last sweep, and this many:
#: sweeping costs at most a third of a check per future made, and memory stays bounded.
_SWEEP_AT = 1024


class StopSignal:
    """The pool's stop, as the tasks on its event loop wait for it without being cancelled.

    :meth:`future` gives a future that :meth:`set` completes with True; :meth:`wait` awaits one
    with a timeout. ``ctx.until_cancelled()`` and the pool's own deferral and backoff waits use
    them: ``stop()`` wakes a worker's task suspended on such a future instead of cancelling it
    (see :meth:`set`). Every method runs on the loop's thread (the pool calls :meth:`set` from a
    loop callback).
    """

    __slots__ = ("_cancel", "_sweep_at", "_waiters", "is_set", "loop", "thread_id")

    def __init__(self, loop: asyncio.AbstractEventLoop, cancel: threading.Event) -> None:
        self.loop = loop
        #: The thread that runs the loop (set by that thread before the loop runs).
        self.thread_id: int | None = None
        #: The pool's stop flag, set (by ``stop()``, in its thread) before this signal.
        self._cancel = cancel
        self.is_set = False
        #: The pending futures, in the order they were made (a dict used as an ordered set).
        self._waiters: dict[asyncio.Future[bool], None] = {}
        self._sweep_at = _SWEEP_AT

    def set(self) -> KeysView[asyncio.Future[bool]]:
        """Complete every pending future with True, now and for good (later ones are born done).

        Returns the futures it knew of. A task suspended on one of them (its ``_fut_waiter``) is
        woken by this call: it will see the stop by itself and needs no cancellation.
        """
        self.is_set = True
        waiters, self._waiters = self._waiters, {}
        for waiter in waiters:
            if not waiter.done():  # a cancelled one, or one its timer completed
                waiter.set_result(True)
        return waiters.keys()

    def future(self) -> asyncio.Future[bool]:
        """A future that :meth:`set` completes with True (done already if it was set)."""
        waiter = self.loop.create_future()
        if self.is_set:
            waiter.set_result(True)
            return waiter
        waiters = self._waiters
        waiters[waiter] = None
        if len(waiters) > self._sweep_at:  # amortised: forget the cancelled ones
            for done in [w for w in waiters if w.done()]:
                del waiters[done]
            self._sweep_at = max(_SWEEP_AT, 4 * len(waiters))
        return waiter

    async def wait(self, timeout: float | None = None) -> bool:
        """Wait until the signal is set (True) or ``timeout`` seconds have passed (False)."""
        if self.is_set:
            return True
        waiter = self.future()
        timer = None if timeout is None else self.loop.call_later(timeout, _wake, waiter)
        try:
            await waiter
        except BaseException:  # cancelled: forget the waiter
            self._waiters.pop(waiter, None)
            if timer is not None:
                timer.cancel()
            raise
        if timer is not None:  # woken by set() (which forgot every waiter) or by the timer
            timer.cancel()
            self._waiters.pop(waiter, None)
        # The pool's stop flag is set before the signal: a timer that fires in between is a stop too.
        return self.is_set or self._cancel.is_set()


class WorkerLoggerAdapter(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Adds ``worker`` and ``workerExecutionID`` to every record it emits."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        """Merge the worker attributes into the record's ``extra``."""
        extra = kwargs.get("extra")
        kwargs["extra"] = dict(self.extra or {}) if extra is None else {**extra, **(self.extra or {})}
        return msg, kwargs


class WorkerContext:
    """The context of one execution attempt, passed to ``Worker.run(ctx)``.

    ``cancelled`` becomes True when the pool stops; ``sleep``/``asleep`` wait interruptibly and
    return True at once when cancelled; async workers can also ``await ctx.until_cancelled()``.
    """

    __slots__ = (
        "_cancel",
        "_heart",
        "_logger",
        "_signal",
        "attempt",
        "execution_id",
        "extensions",
        "max_attempts",
        "worker_name",
    )

    def __init__(
        self,
        worker_name: str,
        execution_id: str,
        attempt: int,
        max_attempts: int,
        cancel: threading.Event,
        extensions: dict[str, Any] | None = None,
        heart: _Heart | None = None,
        signal: StopSignal | None = None,
    ) -> None:
        self.worker_name = worker_name
        self.execution_id = execution_id
        self.attempt = attempt
        self.max_attempts = max_attempts
        self._cancel = cancel
        self._heart = heart
        self._signal = signal
        self._logger: WorkerLoggerAdapter | None = None
        #: Objects that extensions attach to an attempt (the tracer provider, say).
        self.extensions: dict[str, Any] = extensions if extensions is not None else {}

    @property
    def cancelled(self) -> bool:
        """True once the pool asked this worker to stop."""
        return self._cancel.is_set()

    def sleep(self, seconds: float) -> bool:
        """Wait up to ``seconds``; return True (at once) if cancelled, else False."""
        return self._cancel.wait(max(0.0, seconds))

    async def asleep(self, seconds: float) -> bool:
        """Coroutine twin of :meth:`sleep` for async workers.

        Returns True at once if already cancelled. When the pool stops it also cancels the
        worker's task, so a pending ``asleep`` raises ``asyncio.CancelledError``; the pool counts
        a worker that ends that way as a success. To be woken without a cancellation, await
        :meth:`until_cancelled`.
        """
        if self._cancel.is_set():
            return True
        await asyncio.sleep(max(0.0, seconds))
        return self._cancel.is_set()

    def until_cancelled(self) -> asyncio.Future[bool]:
        """Wait until the pool stops: ``await ctx.until_cancelled()`` (True). For async workers.

        The asynchronous ``<-ctx.Done()``, and the graceful way for an async worker to stop:
        ``stop()`` cancels the task of every async worker, except one suspended on this future,
        which returns True instead. The worker then winds down as it likes (awaits included) and
        returns; like a sync worker, one that does not return within stop's deadline is reported.

        It returns a future (done already after a stop), so it also composes:
        ``asyncio.wait({ctx.until_cancelled(), job})``. Only a task that awaits the future itself
        is spared, though: a worker waiting in ``asyncio.wait()`` or ``gather()`` is cancelled at
        stop (with the future done), as is one that awaits something else. Raises
        ``RuntimeError`` outside the pool's event loop (in a sync worker, use ``ctx.sleep()`` or
        ``ctx.cancelled``).
        """
        signal = self._signal
        # On the loop's thread, the running loop is the pool's: a thread id is cheaper to compare
        # than asyncio.get_running_loop() is to call (a getpid() system call on Python 3.11).
        if signal is None or signal.thread_id != get_ident():
            raise RuntimeError(
                "ctx.until_cancelled() waits on the pool's event loop, so it works in async workers "
                "(async def run) only; in a sync worker, use ctx.sleep(seconds) or ctx.cancelled"
            )
        return signal.future()

    def heartbeat(self) -> None:
        """Tell the pool this worker is alive (cheap: one clock read).

        Only meaningful for a worker registered with ``max_silence``: one that does not call it
        for longer than that is reported as silent (unhealthy) and, with ``restart_on_silence``,
        cancelled and restarted. Starting an attempt counts as a heartbeat.
        """
        heart = self._heart
        if heart is not None:
            heart.last_beat = monotonic()

    @property
    def logger(self) -> WorkerLoggerAdapter:
        """A logger adapter on ``django_workers`` stamping ``worker`` and ``workerExecutionID``."""
        if self._logger is None:
            self._logger = WorkerLoggerAdapter(
                logger, {"worker": self.worker_name, "workerExecutionID": self.execution_id}
            )
        return self._logger

    def __repr__(self) -> str:
        return (
            f"<WorkerContext {self.worker_name!r} execution_id={self.execution_id!r} "
            f"attempt={self.attempt}/{self.max_attempts or 'unlimited'} cancelled={self.cancelled}>"
        )


def current_context() -> WorkerContext | None:
    """The context of the worker attempt running in this thread or task, or ``None``."""
    return _current.get()


def ctx_logger(ctx: WorkerContext | None = None) -> logging.Logger | WorkerLoggerAdapter:
    """The worker's logger (``ctx.logger``); outside a worker, the plain ``django_workers`` logger."""
    ctx = ctx if ctx is not None else _current.get()
    return ctx.logger if ctx is not None else logger


def ctx_worker_name(ctx: WorkerContext | None = None) -> str:
    """The running worker's name; ``""`` outside a worker."""
    ctx = ctx if ctx is not None else _current.get()
    return ctx.worker_name if ctx is not None else ""


def ctx_worker_execution_id(ctx: WorkerContext | None = None) -> str:
    """The running attempt's execution id; ``""`` outside a worker."""
    ctx = ctx if ctx is not None else _current.get()
    return ctx.execution_id if ctx is not None else ""
