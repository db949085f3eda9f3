"""Temporary re-export while the house is reshaped (issue 10); removed before landing."""

from .core.pool import WorkerPool

__all__ = ["WorkerPool"]
