"""The supervision engine: standard library only, no Django import."""

from .backoff import Backoff
from .context import WorkerContext, ctx_logger, ctx_worker_execution_id, ctx_worker_name, current_context
from .execution import WorkerExecution, WorkerExecutionEvent, WorkerStatus
from .pool import WorkerPool
from .worker import Worker

__all__ = [
    "Backoff",
    "Worker",
    "WorkerContext",
    "WorkerExecution",
    "WorkerExecutionEvent",
    "WorkerPool",
    "WorkerStatus",
    "ctx_logger",
    "ctx_worker_execution_id",
    "ctx_worker_name",
    "current_context",
]
