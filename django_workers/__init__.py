"""django-worker-pool: run and supervise long-running background workers in Django."""

from .core import (
    Backoff,
    Worker,
    WorkerContext,
    WorkerExecution,
    WorkerExecutionEvent,
    WorkerLogFilter,
    WorkerPool,
    WorkerStatus,
    ctx_logger,
    ctx_worker_execution_id,
    ctx_worker_name,
)

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    if name == "ctx_tracer":
        # Optional dependency: opentelemetry-api, imported on first use (`import django_workers` never does).
        from .core.tracing import ctx_tracer  # noqa: PLC0415

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
