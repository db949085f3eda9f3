"""The pool's log lines: the listener that logs its lifecycle, and a filter for any logger.

Records go to the ``django_workers`` logger (the library only installs a ``NullHandler`` on it)
and carry the attributes ``worker`` and ``workerExecutionID``. Logging is the standard library's
and every pool logs by default, so this listener is part of the engine; the listeners that need
optional packages (metrics, tracing) live in ``django_workers.observability``.
"""

from __future__ import annotations

import logging

from .context import LOGGER_NAME, current_context
from .events import (
    AttemptFailed,
    AttemptsExhausted,
    AttemptStarted,
    AttemptSucceeded,
    LifecycleEvent,
    PoolStarted,
    PoolStopped,
    PoolStopping,
    WorkerControlled,
    WorkerDeferred,
    WorkerLeaseChanged,
    WorkerPaused,
    WorkerRestarting,
    WorkerSilent,
    WorkerStandby,
    WorkerStopTimedOut,
    WorkerStuck,
)
from .execution import Failure

__all__ = ["EVENT_LEVELS", "LoggingListener", "WorkerLogFilter"]

logger = logging.getLogger(LOGGER_NAME)
logger.addHandler(logging.NullHandler())

#: The logging level of each lifecycle event (the recorder stores events with the same levels).
EVENT_LEVELS: dict[type[LifecycleEvent], int] = {
    WorkerDeferred: logging.INFO,
    AttemptStarted: logging.INFO,
    AttemptSucceeded: logging.INFO,
    AttemptFailed: logging.ERROR,
    WorkerRestarting: logging.WARNING,
    AttemptsExhausted: logging.ERROR,
    WorkerSilent: logging.ERROR,
    WorkerStopTimedOut: logging.ERROR,
    WorkerControlled: logging.INFO,
    WorkerPaused: logging.INFO,
    WorkerLeaseChanged: logging.INFO,
    WorkerStandby: logging.INFO,
    WorkerStuck: logging.ERROR,
    PoolStarted: logging.INFO,
    PoolStopping: logging.INFO,
    PoolStopped: logging.INFO,
}


class LoggingListener:
    """Logs every lifecycle event of a pool on the ``django_workers`` logger.

    A failed attempt is logged at ERROR with its traceback; a stop time-out at ERROR with the
    stack of the worker that did not return.
    """

    #: The events it logs (the pool calls it for these only; not WorkerFinished, say).
    event_types = frozenset(EVENT_LEVELS)

    def __init__(self, logger: logging.Logger = logger) -> None:
        self.logger = logger

    def __call__(self, event: LifecycleEvent) -> None:
        """Log one event, if the logger is enabled for its level."""
        level = EVENT_LEVELS.get(type(event))
        if type(event) is PoolStopped and event.not_stopped:
            level = logging.ERROR
        if level is None or not self.logger.isEnabledFor(level):
            return
        log = self.logger.log
        match event:
            case AttemptFailed(worker=worker, execution_id=execution_id, record=record, failure=failure):
                self._log_failure(level, record.message, failure, {"worker": worker, "workerExecutionID": execution_id})
            case WorkerRestarting(worker=worker, execution_id=execution_id, record=record, delay=delay):
                extra = {"worker": worker, "workerExecutionID": execution_id}
                log(level, "%s (in %.3f seconds)", record.message, delay, extra=extra)
            case (
                WorkerStopTimedOut(worker=worker, execution_id=execution_id, record=record, stack=stack)
                | WorkerStuck(worker=worker, execution_id=execution_id, record=record, stack=stack)
            ):
                extra = {"worker": worker, "workerExecutionID": execution_id}
                log(level, "%s; its stack:\n%s", record.message, stack.rstrip(), extra=extra)
            case WorkerSilent(worker=worker, execution_id=execution_id, record=record, restarting=restarting):
                extra = {"worker": worker, "workerExecutionID": execution_id}
                then = "cancelling the attempt" if restarting else "it may be hung"
                log(level, "%s: %s", record.message, then, extra=extra)
            case (
                WorkerDeferred()
                | AttemptStarted()
                | AttemptSucceeded()
                | AttemptsExhausted()
                | WorkerControlled()
                | WorkerPaused()
                | WorkerLeaseChanged()
                | WorkerStandby()
            ):
                extra = {"worker": event.worker, "workerExecutionID": event.execution_id}
                log(level, "%s", event.record.message, extra=extra)
            case PoolStarted(workers=workers):
                if workers:
                    log(level, "worker pool started with %d worker(s): %s", len(workers), ", ".join(workers))
                else:  # every worker paused, or a singleton standing by
                    log(level, "worker pool started with no worker running")
            case PoolStopping(timeout=timeout):
                log(level, "worker pool stopping (timeout %g seconds)", timeout)
            case PoolStopped(not_stopped=not_stopped) if not_stopped:
                log(logging.ERROR, "worker pool stopped; still running: %s", ", ".join(not_stopped))
            case PoolStopped():
                log(level, "worker pool stopped")

    def _log_failure(self, level: int, message: str, failure: Failure, extra: dict[str, str]) -> None:
        """Log a failed attempt with its exception and the pool's capped traceback text.

        The record keeps ``exc_info`` (for handlers that want the exception object, Sentry's say),
        and its ``exc_text`` is set to the capped traceback, which formatters use instead of
        formatting the exception again (with a message of any length).
        """
        logger = self.logger
        exc = failure.exception
        fn, lno, func, sinfo = logger.findCaller()
        record = logger.makeRecord(
            logger.name, level, fn, lno, "%s", (message,), (type(exc), exc, exc.__traceback__), func, extra, sinfo
        )
        record.exc_text = failure.traceback.rstrip("\n")
        logger.handle(record)


class WorkerLogFilter(logging.Filter):
    """Stamps ``worker`` and ``workerExecutionID`` on records emitted inside a worker.

    Put it on your handlers (``"filters": ["workers"]`` in ``LOGGING``) to correlate records of
    any logger — a third-party client's, say — with the worker that emitted them. Records emitted
    outside a worker get empty strings, so formats like ``%(worker)s`` always work. Attributes
    already on a record are kept.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Add the attributes; never drops a record."""
        if not hasattr(record, "worker"):
            ctx = current_context()
            record.worker = ctx.worker_name if ctx is not None else ""
            record.workerExecutionID = ctx.execution_id if ctx is not None else ""
        elif not hasattr(record, "workerExecutionID"):
            record.workerExecutionID = ""
        return True
