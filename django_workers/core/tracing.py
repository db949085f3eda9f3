"""OpenTelemetry tracing: one span per execution attempt, and span annotation inside workers.

Public as :mod:`django_workers.tracing`. Needs ``opentelemetry-api`` (``pip install
django-worker-pool[tracing]``): the one module of the engine with a third-party import, which
``WorkerPool`` imports only when it traces (``tracer_provider=`` or ``tracing=True``), so that
the dependency stays optional. It lives in the engine because the pool itself opens the span of
every attempt and annotates the provider it is given. Nothing here sets OpenTelemetry globals.

- :func:`attempt_span_hook` builds an attempt hook for the pool: every attempt runs inside a span
  ``worker <name>`` that is the current span of the attempt's thread (sync worker) or task
  (async worker), so spans started by the worker become its children.
- :func:`annotate_tracer_provider` adds, once per provider, a :class:`WorkerSpanProcessor` that
  stamps ``Worker`` and ``WorkerExecutionID`` on every span started inside a worker attempt,
  whichever tracer (a database or HTTP client instrumentation, say) starts it. The span
  processor works with an ``opentelemetry-sdk`` ``TracerProvider`` (or any provider with
  ``add_span_processor``).
- :func:`ctx_tracer` is the tracer a worker should use: the pool's provider's, which the pool
  stores in ``ctx.extensions[TRACER_PROVIDER_KEY]``, else the global provider's.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import weakref
from types import TracebackType
from typing import Any

try:
    from opentelemetry import context as otel_context
    from opentelemetry import trace
    from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer, TracerProvider
except ImportError as exc:  # the optional dependency is missing
    raise ImportError(
        "tracing worker attempts needs opentelemetry-api: pip install django-worker-pool[tracing]",
        name="opentelemetry",
    ) from exc

from .context import TRACER_PROVIDER_KEY, WorkerContext, current_context
from .text import format_exception, safe_str

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

#: Instrumentation scope name of the spans this package starts, and of ``ctx_tracer()``.
TRACER_NAME = "django_workers"

#: Span attributes set on the attempt span and, by ``WorkerSpanProcessor``, on every span
#: started inside a worker (the names of the Yokai worker module).
ATTR_WORKER = "Worker"
ATTR_WORKER_EXECUTION_ID = "WorkerExecutionID"
#: Attempt number (1-based) and maximum number of attempts (0 = unlimited), on the attempt span.
ATTR_ATTEMPT = "worker.attempt"
ATTR_MAX_ATTEMPTS = "worker.max_attempts"

# A provider's tracer, per provider: the SDK builds a new scope (and resets a warnings filter) on
# every ``get_tracer`` call, too much for once per attempt.
_tracers: weakref.WeakKeyDictionary[Any, Tracer] = weakref.WeakKeyDictionary()
_tracers_lock = threading.Lock()


def tracer_of(provider: TracerProvider) -> Tracer:
    """The ``django_workers`` tracer of ``provider``, cached per provider."""
    try:
        return _tracers[provider]
    except KeyError:
        pass
    except TypeError:  # neither hashable nor weakly referenceable: no cache
        return provider.get_tracer(TRACER_NAME)
    tracer = provider.get_tracer(TRACER_NAME)
    with _tracers_lock:
        return _tracers.setdefault(provider, tracer)


def ctx_tracer(ctx: WorkerContext | None = None) -> Tracer:
    """The tracer a worker should start its spans with (instrumentation scope ``django_workers``).

    Inside a worker (``ctx`` given, or found in the current thread or task), the tracer of the
    pool's tracer provider when the pool was given one, else of the global provider. Outside a
    worker, the global provider's tracer. A tracer of the global provider obtained before
    ``opentelemetry.trace.set_tracer_provider()`` follows the provider set later.
    """
    ctx = ctx if ctx is not None else current_context()
    if ctx is not None:
        provider = ctx.extensions.get(TRACER_PROVIDER_KEY)
        if provider is not None:
            return tracer_of(provider)
    return tracer_of(trace.get_tracer_provider())


# -- one span per attempt ------------------------------------------------------------------------


class _AttemptSpan:
    """The context manager of one attempt: starts its span, makes it current, ends it."""

    __slots__ = ("_ctx", "_record_exception", "_span", "_token", "_tracer")

    def __init__(self, tracer: Tracer, ctx: WorkerContext, record_exception: bool) -> None:
        self._tracer = tracer
        self._ctx = ctx
        self._record_exception = record_exception

    def __enter__(self) -> trace.Span:
        ctx = self._ctx
        span = self._tracer.start_span(
            f"worker {ctx.worker_name}",
            kind=SpanKind.INTERNAL,
            attributes={
                ATTR_WORKER: ctx.worker_name,
                ATTR_WORKER_EXECUTION_ID: ctx.execution_id,
                ATTR_ATTEMPT: ctx.attempt,
                ATTR_MAX_ATTEMPTS: ctx.max_attempts,
            },
        )
        self._span = span
        self._token = otel_context.attach(trace.set_span_in_context(span))
        return span

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        span = self._span
        try:
            otel_context.detach(self._token)
        finally:
            # An async worker cancelled by stop() ends cleanly: not an error, as for the pool.
            # BaseExceptions too: a SystemExit in a worker is a failed (panicked) attempt.
            if (
                exc is not None
                and not (isinstance(exc, asyncio.CancelledError) and self._ctx.cancelled)
                and span.is_recording()
            ):
                message = safe_str(exc)
                if self._record_exception:
                    # What Span.record_exception() records, with texts taken safely and capped
                    # (it calls str(exc) itself, which may raise, and keeps any length).
                    span.add_event(
                        "exception",
                        {
                            "exception.type": _exception_type(exc),
                            "exception.message": message,
                            "exception.stacktrace": format_exception(exc),
                            "exception.escaped": "True",
                        },
                    )
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {message}"))
            span.end()


def _exception_type(exc: BaseException) -> str:
    """The ``exception.type`` attribute, as OpenTelemetry's SDK writes it."""
    cls = type(exc)
    module = cls.__module__
    return f"{module}.{cls.__qualname__}" if module and module != "builtins" else cls.__qualname__


#: What the hook returns when spans could only be no-ops: no span, nothing made current.
_NO_SPAN: contextlib.nullcontext[trace.Span] = contextlib.nullcontext(trace.INVALID_SPAN)


class AttemptSpanHook:
    """An attempt hook (see ``django_workers.core.supervisor.AttemptHook``) opening a span per attempt.

    The span is named ``worker <name>`` (kind ``INTERNAL``), carries the attributes ``Worker``,
    ``WorkerExecutionID``, ``worker.attempt`` and ``worker.max_attempts``, and is the current span
    while ``run(ctx)`` runs. A failed attempt (an exception, or a recovered panic) sets the span's
    status to ``ERROR`` and, unless ``record_exception`` is False, records the exception (with its
    stack trace, the main cost of a failed attempt's span) as a span event; an async worker
    cancelled by ``stop()`` is not a failure. The span is a child of whatever span was current
    when the pool was started (workers inherit the caller's ``contextvars`` context), usually none.

    While no global provider is set (and with the API's no-op provider), the hook does nothing.
    """

    __slots__ = ("record_exception", "tracer_provider")

    def __init__(self, tracer_provider: TracerProvider | None = None, *, record_exception: bool = True) -> None:
        #: The provider of the spans; ``None``: the global provider, read at every attempt.
        self.tracer_provider = tracer_provider
        #: Whether a failed attempt's exception is recorded as a span event.
        self.record_exception = record_exception

    def __call__(self, ctx: WorkerContext) -> contextlib.AbstractContextManager[trace.Span]:
        """The context manager wrapping one attempt."""
        provider = self.tracer_provider
        if provider is None or isinstance(provider, trace.ProxyTracerProvider):
            # The global provider: while none is set, get_tracer_provider() returns the proxy,
            # whose tracers are no-ops until then.
            provider = trace.get_tracer_provider()
            if isinstance(provider, trace.ProxyTracerProvider):
                return _NO_SPAN
        elif isinstance(provider, trace.NoOpTracerProvider):
            return _NO_SPAN
        return _AttemptSpan(tracer_of(provider), ctx, self.record_exception)

    def __repr__(self) -> str:
        return f"<AttemptSpanHook tracer_provider={self.tracer_provider!r}>"


def attempt_span_hook(
    tracer_provider: TracerProvider | None = None, *, record_exception: bool = True
) -> AttemptSpanHook:
    """An attempt hook that runs every attempt inside its own span (see :class:`AttemptSpanHook`).

    ``tracer_provider`` defaults to the global provider (``opentelemetry.trace.get_tracer_provider()``,
    read at each attempt, so one set after the pool was built is used). No global is ever set.
    Use it as ``WorkerPool(attempt_hooks=[attempt_span_hook(provider)])``.
    """
    return AttemptSpanHook(tracer_provider, record_exception=record_exception)


# -- annotation of every span started inside a worker ---------------------------------------------


class WorkerSpanProcessor:
    """A span processor stamping ``Worker`` and ``WorkerExecutionID`` on spans started in a worker.

    It reads the running attempt from the current thread or task (``contextvars``), so it also
    annotates spans that other tracers and instrumentations start inside a worker. Spans started
    elsewhere (including in threads a worker starts without copying its context) are untouched.
    It implements the ``opentelemetry.sdk.trace.SpanProcessor`` interface without importing the SDK.
    """

    __slots__ = ()

    def on_start(self, span: Any, parent_context: otel_context.Context | None = None) -> None:
        """Set the worker attributes on ``span`` if it starts inside a worker attempt."""
        ctx = current_context()
        if ctx is not None:
            span.set_attributes({ATTR_WORKER: ctx.worker_name, ATTR_WORKER_EXECUTION_ID: ctx.execution_id})

    def _on_ending(self, span: Any) -> None:
        """Nothing to do when a span is ending (SDK hook)."""

    def on_end(self, span: Any) -> None:
        """Nothing to do when a span ends."""

    def shutdown(self) -> None:
        """Nothing to release."""

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Nothing buffered: always flushed."""
        return True

    def __repr__(self) -> str:
        return "<WorkerSpanProcessor>"


# Providers already annotated. A WeakSet: an annotated provider can still be garbage-collected.
_annotated: weakref.WeakSet[Any] = weakref.WeakSet()
_annotated_lock = threading.Lock()


def annotate_tracer_provider(tp: TracerProvider) -> TracerProvider:
    """Add a :class:`WorkerSpanProcessor` to ``tp`` (once: further calls add nothing) and return ``tp``.

    Every span then started inside a worker attempt, by any tracer of ``tp``, carries the
    attributes ``Worker`` and ``WorkerExecutionID``. ``tp`` must accept span processors, like
    ``opentelemetry.sdk.trace.TracerProvider``; a ``TypeError`` says how to fix anything else
    (the API's no-op provider, or the global provider before one was set).
    """
    add = getattr(tp, "add_span_processor", None)
    if not callable(add):
        if isinstance(tp, trace.ProxyTracerProvider):
            hint = (
                "it is the global provider and none was set yet: build an "
                "opentelemetry.sdk.trace.TracerProvider, annotate it and pass it to "
                "opentelemetry.trace.set_tracer_provider() (or to the pool)"
            )
        else:
            hint = "use an opentelemetry.sdk.trace.TracerProvider (pip install opentelemetry-sdk)"
        raise TypeError(f"cannot annotate tracer provider {tp!r}: it has no add_span_processor() method; {hint}")
    with _annotated_lock:
        try:
            weakref.ref(tp)
        except TypeError:  # not weakly referenceable: the mark is an attribute of the provider
            if not getattr(tp, "_django_workers_annotated", False):
                add(WorkerSpanProcessor())
                tp._django_workers_annotated = True  # type: ignore[attr-defined]
            return tp
        if tp not in _annotated:
            add(WorkerSpanProcessor())
            _annotated.add(tp)
    return tp
