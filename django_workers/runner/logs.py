"""The logging of ``runworkers``: stderr at the level of ``-v``, unless ``LOGGING`` decides."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from django.conf import settings

from ..core.context import LOGGER_NAME
from ..core.logs import WorkerLogFilter

__all__ = ["LOG_FORMAT", "configure_logging", "level_of"]

logger = logging.getLogger(LOGGER_NAME)

LOG_FORMAT = "%(asctime)s %(levelname)-7s [%(worker)s %(workerExecutionID)s] %(message)s"


class StderrFormatter(logging.Formatter):
    """Shows ``-`` for the worker fields of records emitted outside a worker."""

    def format(self, record: logging.LogRecord) -> str:
        """Format a copy of the record when its worker fields are empty (other handlers see the original)."""
        if getattr(record, "worker", "") and getattr(record, "workerExecutionID", ""):
            return super().format(record)
        copy = logging.makeLogRecord(record.__dict__)
        copy.worker = getattr(record, "worker", "") or "-"
        copy.workerExecutionID = getattr(record, "workerExecutionID", "") or "-"
        return super().format(copy)


def level_of(verbosity: int) -> int:
    """The logging level of ``-v``: 0 ERROR, 1 INFO, 2 and 3 DEBUG."""
    if verbosity <= 0:
        return logging.ERROR
    return logging.INFO if verbosity == 1 else logging.DEBUG


def _reaches_a_handler(target: logging.Logger) -> bool:
    current: logging.Logger | None = target
    while current is not None:
        if any(not isinstance(handler, logging.NullHandler) for handler in current.handlers):
            return True
        if not current.propagate:
            return False
        current = current.parent
    return False


def configure_logging(verbosity: int) -> Callable[[], None]:
    """Log to stderr at the level of ``-v``, unless the project configures the logger.

    When ``LOGGING`` names the ``django_workers`` logger, nothing is changed. Otherwise the
    logger's level follows ``-v`` (see :func:`level_of`) and, unless its records already reach a
    handler (a root handler from ``LOGGING``, say), a stderr handler is added. Returns a function
    that undoes it.
    """
    configured = getattr(settings, "LOGGING", None) or {}
    if LOGGER_NAME in (configured.get("loggers") or {}):
        return lambda: None
    previous_level = logger.level
    logger.setLevel(level_of(verbosity))
    handler: logging.Handler | None = None
    if not _reaches_a_handler(logger):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(StderrFormatter(LOG_FORMAT))
        handler.addFilter(WorkerLogFilter())
        logger.addHandler(handler)

    def undo() -> None:
        logger.setLevel(previous_level)
        if handler is not None:
            logger.removeHandler(handler)

    return undo
