"""The supervision engine: standard library only, no Django import.

(``core.tracing``, loaded only by a pool that traces, imports the optional opentelemetry-api.)
"""

from .backoff import Backoff
from .context import WorkerContext, ctx_logger, ctx_worker_execution_id, ctx_worker_name, current_context
from .execution import WorkerExecution, WorkerExecutionEvent, WorkerStatus
from .logs import WorkerLogFilter
from .pool import WorkerPool
from .worker import Worker

__all__ = [
    "Backoff",
    "Worker",
    "WorkerContext",
    "WorkerExecution",
    "WorkerExecutionEvent",
    "WorkerLogFilter",
    "WorkerPool",
    "WorkerStatus",
    "ctx_logger",
    "ctx_worker_execution_id",
    "ctx_worker_name",
    "current_context",
]
