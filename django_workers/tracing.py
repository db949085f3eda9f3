"""OpenTelemetry tracing of workers (``pip install django-worker-pool[tracing]``).

The public path of :mod:`django_workers.core.tracing`: the pool opens one span per attempt and
annotates the provider it is given, so the code lives in the engine; see that module.
"""

from .core.tracing import (
    ATTR_ATTEMPT,
    ATTR_MAX_ATTEMPTS,
    ATTR_WORKER,
    ATTR_WORKER_EXECUTION_ID,
    TRACER_NAME,
    TRACER_PROVIDER_KEY,
    AttemptSpanHook,
    WorkerSpanProcessor,
    annotate_tracer_provider,
    attempt_span_hook,
    ctx_tracer,
    tracer_of,
)

__all__ = [
    "ATTR_ATTEMPT",
    "ATTR_MAX_ATTEMPTS",
    "ATTR_WORKER",
    "ATTR_WORKER_EXECUTION_ID",
    "TRACER_NAME",
    "TRACER_PROVIDER_KEY",
    "AttemptSpanHook",
    "WorkerSpanProcessor",
    "annotate_tracer_provider",
    "attempt_span_hook",
    "ctx_tracer",
    "tracer_of",
]
