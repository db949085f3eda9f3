"""django-worker-pool: run and supervise long-running background workers in Django."""

from .core.backoff import Backoff
from .core.context import WorkerContext, ctx_logger, ctx_worker_execution_id, ctx_worker_name
from .core.execution import WorkerExecution, WorkerExecutionEvent, WorkerStatus
from .core.worker import Worker
from .logging import WorkerLogFilter
from .pool import WorkerPool

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    # ctx_tracer needs opentelemetry-api: imported on first use, so `import django_workers` never does.
    if name == "ctx_tracer":
        from .tracing import ctx_tracer

        return ctx_tracer
    raise AttributeError(f"module 'django_workers' has no attribute {name!r}")


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
    "ctx_tracer",
    "ctx_worker_execution_id",
    "ctx_worker_name",
]
