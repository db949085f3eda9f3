"""Workers and tracer-provider factories of the in-process observability tests (dotted paths for settings)."""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from django_workers import Worker, WorkerContext
from django_workers.tracing import ctx_tracer

#: Where the spans of :func:`memory_provider` go; tests clear it.
EXPORTER = InMemorySpanExporter()
#: How many times each factory was called.
CALLS = {"memory_provider": 0}


def memory_provider() -> TracerProvider:
    """A provider exporting to :data:`EXPORTER` (not annotated: the pool does it)."""
    CALLS["memory_provider"] += 1
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
    return provider


def broken_provider() -> TracerProvider:
    raise RuntimeError("no collector configured")


def not_a_provider() -> Any:
    return {"not": "a provider"}


NOT_CALLABLE = TracerProvider(shutdown_on_exit=False)


class Succeeding(Worker):
    """Opens a child span with another tracer, then returns."""

    name = "succeeding"

    def run(self, ctx: WorkerContext) -> None:
        with ctx_tracer(ctx).start_as_current_span("unit of work"):
            pass


class Failing(Worker):
    name = "failing"

    def run(self, ctx: WorkerContext) -> None:
        raise RuntimeError(f"failing on attempt {ctx.attempt}")


class Waiting(Worker):
    name = "waiting"

    def run(self, ctx: WorkerContext) -> None:
        while not ctx.sleep(60):
            pass
