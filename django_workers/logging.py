"""Logging: the listener that logs the pool's lifecycle, and a filter for any logger.

Records go to the ``django_workers`` logger (the library only installs a ``NullHandler`` on it)
and carry the attributes ``worker`` and ``workerExecutionID``.
"""

from __future__ import annotations

import logging

from .core.context import LOGGER_NAME, current_context
from .core.events import (
    AttemptFailed,
    AttemptsExhausted,
    AttemptStarted,
    AttemptSucceeded,
    LifecycleEvent,
    PoolStarted,
    PoolStopped,
    PoolStopping,
    ReportedEvent,
    WorkerDeferred,
    WorkerRestarting,
    WorkerStopTimedOut,
)

__all__ = ["LoggingListener", "WorkerLogFilter"]

logger = logging.getLogger(LOGGER_NAME)
logger.addHandler(logging.NullHandler())

_LEVELS: dict[type[LifecycleEvent], int] = {
    WorkerDeferred: logging.INFO,
    AttemptStarted: logging.INFO,
    AttemptSucceeded: logging.INFO,
    AttemptFailed: logging.ERROR,
    WorkerRestarting: logging.WARNING,
    AttemptsExhausted: logging.ERROR,
    WorkerStopTimedOut: logging.ERROR,
    PoolStarted: logging.INFO,
    PoolStopping: logging.INFO,
    PoolStopped: logging.INFO,
}


class LoggingListener:
    """Logs every lifecycle event of a pool on the ``django_workers`` logger.

    A failed attempt is logged at ERROR with its traceback; a stop time-out at ERROR with the
    stack of the worker that did not return.
    """

    def __init__(self, logger: logging.Logger = logger) -> None:
        self.logger = logger

    def __call__(self, event: LifecycleEvent) -> None:
        """Log one event, if the logger is enabled for its level."""
        level = _LEVELS.get(type(event))
        if level is None or not self.logger.isEnabledFor(level):
            return
        if isinstance(event, ReportedEvent):
            extra = {"worker": event.worker, "workerExecutionID": event.execution_id}
            if isinstance(event, AttemptFailed):
                exc = event.failure.exception
                self.logger.log(level, "%s", event.message, exc_info=(type(exc), exc, exc.__traceback__), extra=extra)
            elif isinstance(event, WorkerRestarting):
                self.logger.log(level, "%s (in %.3f seconds)", event.message, event.delay, extra=extra)
            elif isinstance(event, WorkerStopTimedOut):
                self.logger.log(level, "%s; its stack:\n%s", event.message, event.stack.rstrip(), extra=extra)
            else:
                self.logger.log(level, "%s", event.message, extra=extra)
        elif isinstance(event, PoolStarted):
            self.logger.log(
                level, "worker pool started with %d worker(s): %s", len(event.workers), ", ".join(event.workers)
            )
        elif isinstance(event, PoolStopping):
            self.logger.log(level, "worker pool stopping (timeout %g seconds)", event.timeout)
        elif isinstance(event, PoolStopped):
            if event.not_stopped:
                self.logger.log(logging.ERROR, "worker pool stopped; still running: %s", ", ".join(event.not_stopped))
            else:
                self.logger.log(level, "worker pool stopped")


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
