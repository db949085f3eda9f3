"""Temporary re-export while the house is reshaped (issue 10); removed before landing."""

from .core.logs import EVENT_LEVELS, LoggingListener, WorkerLogFilter

__all__ = ["EVENT_LEVELS", "LoggingListener", "WorkerLogFilter"]
