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
        # `import django_workers` never imports the optional opentelemetry-api.
        from .core.tracing import ctx_tracer  # noqa: PLC0415 - optional dependency: opentelemetry-api

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
