"""OpenTelemetry wiring of the test project: one tracer provider per process, chosen by environment.

``WORKERS["TRACING"]["PROVIDER"]`` points at :func:`tracer_provider`: ``runworkers`` opens one span
per worker attempt with it, and every span started inside a worker (by any instrumentation) gets
the ``Worker`` and ``WorkerExecutionID`` attributes. The web process (``testproject/wsgi.py``)
also traces its requests with the same provider through ``DjangoInstrumentor``
(opentelemetry-instrumentation-django, when installed).

``OTEL_TRACES_EXPORTER`` picks where spans go (the variable of the OpenTelemetry SDK, read here):

- ``none`` (the default, so that ``make run`` stays quiet): spans are made, then dropped;
- ``console``: each span is printed as JSON on stdout;
- ``otlp``: spans are sent to an OpenTelemetry collector over OTLP/HTTP
  (opentelemetry-exporter-otlp-proto-http; ``OTEL_EXPORTER_OTLP_ENDPOINT``, default
  ``http://localhost:4318``).

``OTEL_SERVICE_NAME`` names the service (default ``django-worker-pool-testproject``). Nothing
here sets the OpenTelemetry globals.
"""

from __future__ import annotations

import functools
import os

from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

from django_workers.tracing import annotate_tracer_provider

EXPORTERS = ("none", "console", "otlp")


def _exporter(name: str) -> SpanExporter | None:
    if name == "none":
        return None
    if name == "console":
        return ConsoleSpanExporter()
    if name == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()  # configured by the OTEL_EXPORTER_OTLP_* variables
    raise ValueError(f"OTEL_TRACES_EXPORTER must be one of {', '.join(EXPORTERS)}, got {name!r}")


@functools.cache
def tracer_provider() -> TracerProvider:
    """The process's tracer provider: annotated for workers, exporting where ``OTEL_TRACES_EXPORTER`` says."""
    service = os.environ.get("OTEL_SERVICE_NAME", "django-worker-pool-testproject")
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service}))
    exporter = _exporter(os.environ.get("OTEL_TRACES_EXPORTER", "none").strip().lower())
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return annotate_tracer_provider(provider)


def instrument_requests() -> bool:
    """Trace the web process's requests with :func:`tracer_provider` (DjangoInstrumentor).

    Call it before the WSGI/ASGI handler is built (``wsgi.py``). False when
    opentelemetry-instrumentation-django is not installed.
    """
    try:
        from opentelemetry.instrumentation.django import DjangoInstrumentor
    except ImportError:
        return False
    instrumentor = DjangoInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument(tracer_provider=tracer_provider())
    return True
