"""``WorkerContext``: what a running worker knows about itself, and the ``ctx_*`` accessors."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import math
import numbers
import threading
from collections.abc import MutableMapping
from time import monotonic
from typing import Any, Protocol

from .stop import StopFuture, StopSignal

__all__ = [
    "LOGGER_NAME",
    "TRACER_PROVIDER_KEY",
    "WorkerContext",
    "WorkerLoggerAdapter",
    "ctx_logger",
    "ctx_worker_execution_id",
    "ctx_worker_name",
    "current_context",
]

LOGGER_NAME = "django_workers"

#: Key of ``WorkerContext.extensions`` under which the pool keeps the tracer provider it was given
#: (``django_workers.tracing.ctx_tracer`` reads it).
TRACER_PROVIDER_KEY = "tracer_provider"

logger = logging.getLogger(LOGGER_NAME)

#: The context of the attempt running in this thread or task (set by the supervisor per attempt).
worker_context: contextvars.ContextVar[WorkerContext | None] = contextvars.ContextVar(
    "django_workers_context", default=None
)


class _Heart(Protocol):
    last_beat: float


def _timeout(method: str, seconds: float) -> float | None:
    """The timeout of a wait of ``seconds``: None (no timeout) beyond the longest timed wait."""
    if isinstance(seconds, bool) or not isinstance(seconds, numbers.Real):
        raise TypeError(f"ctx.{method}() takes a number of seconds (int or float), got {type(seconds).__qualname__}")
    # NaN of any Real type (math.isnan() overflows on a huge int); a wait of NaN would return at once, silently.
    if seconds != seconds:  # noqa: PLR0124
        raise ValueError(f"ctx.{method}() got NaN seconds; pass a number (float('inf') waits until the stop)")
    if seconds >= threading.TIMEOUT_MAX:  # Event.wait() overflows beyond it
        return None
    return float(seconds) if seconds > 0 else 0.0


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
    A singleton worker also becomes cancelled when its node loses the lease; ``fence`` is then
    the token of the lease it ran under.
    """

    __slots__ = (
        "_cancel",
        "_heart",
        "_logger",
        "_signal",
        "attempt",
        "execution_id",
        "extensions",
        "fence",
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
        fence: int | None = None,
    ) -> None:
        self.worker_name = worker_name
        self.execution_id = execution_id
        self.attempt = attempt
        self.max_attempts = max_attempts
        self._cancel = cancel
        self._heart = heart
        self._signal = signal
        self._logger: WorkerLoggerAdapter | None = None
        #: The fencing token of a singleton worker's lease (an int that grows at every change of
        #: holder), for guarding its writes (``UPDATE … WHERE fence <= :token``); None otherwise.
        self.fence = fence
        #: Objects that extensions attach to an attempt (the tracer provider, say).
        self.extensions: dict[str, Any] = extensions if extensions is not None else {}

    @property
    def cancelled(self) -> bool:
        """True once the pool asked this worker to stop."""
        return self._cancel.is_set()

    def sleep(self, seconds: float) -> bool:
        """Wait up to ``seconds``; return True (at once) if cancelled, else False.

        ``float("inf")`` (or any wait longer than the platform's longest timed wait) waits until
        the stop; a negative number waits 0 seconds. ``ValueError`` for NaN, ``TypeError`` for
        something that is not a number.
        """
        return self._cancel.wait(_timeout("sleep", seconds))

    async def asleep(self, seconds: float) -> bool:
        """Coroutine twin of :meth:`sleep` for async workers.

        Takes the same ``seconds`` as :meth:`sleep` (``float("inf")``: until the stop). Returns
        True at once if already cancelled. When the pool stops it also cancels the worker's task,
        so a pending ``asleep`` raises ``asyncio.CancelledError``; the pool counts a worker that
        ends that way as a success. To be woken without a cancellation, await
        :meth:`until_cancelled`.
        """
        timeout = _timeout("asleep", seconds)
        if self._cancel.is_set():
            return True
        await asyncio.sleep(math.inf if timeout is None else timeout)
        return self._cancel.is_set()

    def until_cancelled(self) -> StopFuture:
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
        if signal is None or signal.thread_id != threading.get_ident():
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
    return worker_context.get()


def ctx_logger(ctx: WorkerContext | None = None) -> logging.Logger | WorkerLoggerAdapter:
    """The worker's logger (``ctx.logger``); outside a worker, the plain ``django_workers`` logger."""
    ctx = ctx if ctx is not None else worker_context.get()
    return ctx.logger if ctx is not None else logger


def ctx_worker_name(ctx: WorkerContext | None = None) -> str:
    """The running worker's name; ``""`` outside a worker."""
    ctx = ctx if ctx is not None else worker_context.get()
    return ctx.worker_name if ctx is not None else ""


def ctx_worker_execution_id(ctx: WorkerContext | None = None) -> str:
    """The running attempt's execution id; ``""`` outside a worker."""
    ctx = ctx if ctx is not None else worker_context.get()
    return ctx.execution_id if ctx is not None else ""
