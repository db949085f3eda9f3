"""The pool as users build it: the core engine with logging, and metrics when given."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from .core.backoff import Backoff
from .core.events import Listener
from .core.pool import DEFAULT_HISTORY_SIZE, DEFAULT_STOP_TIMEOUT
from .core.pool import WorkerPool as _EnginePool
from .core.supervisor import AttemptHook
from .logging import LoggingListener

if TYPE_CHECKING:  # type only: importing the package imports neither prometheus_client nor opentelemetry
    from opentelemetry.trace import TracerProvider

    from .metrics import WorkerMetrics

__all__ = ["WorkerPool"]


class WorkerPool(_EnginePool):
    """A :class:`django_workers.core.pool.WorkerPool` that logs its lifecycle.

    It logs every lifecycle event on the ``django_workers`` logger (``log=False`` to opt out),
    counts into ``metrics`` (a :class:`django_workers.metrics.WorkerMetrics`) when one is given,
    and opens one OpenTelemetry span per attempt when ``tracing`` is true (by default: when a
    ``tracer_provider`` is given, which is then also annotated by
    :func:`django_workers.tracing.annotate_tracer_provider`; otherwise the global provider is
    used, and never set). Everything else is the engine's behaviour.
    """

    def __init__(
        self,
        deferred_start_threshold: float = 0.0,
        max_executions_attempts: int = 1,
        restart_backoff: Backoff | None = None,
        stop_timeout: float = DEFAULT_STOP_TIMEOUT,
        history_size: int = DEFAULT_HISTORY_SIZE,
        listeners: Iterable[Listener] = (),
        attempt_hooks: Iterable[AttemptHook] = (),
        log: bool = True,
        metrics: WorkerMetrics | None = None,
        tracer_provider: TracerProvider | None = None,
        tracing: bool | None = None,
    ) -> None:
        listeners = [LoggingListener(), *listeners] if log else list(listeners)
        if metrics is not None:
            listeners.append(metrics)
        self._metrics = metrics
        hooks = list(attempt_hooks)
        if tracing or (tracing is None and tracer_provider is not None):
            from .tracing import annotate_tracer_provider, attempt_span_hook  # ImportError with a pip hint

            hooks.insert(0, attempt_span_hook(tracer_provider))  # first: its span is current for the others
            if tracer_provider is not None and hasattr(tracer_provider, "add_span_processor"):
                annotate_tracer_provider(tracer_provider)  # idempotent
        self._tracer_provider = tracer_provider
        super().__init__(
            deferred_start_threshold=deferred_start_threshold,
            max_executions_attempts=max_executions_attempts,
            restart_backoff=restart_backoff,
            stop_timeout=stop_timeout,
            history_size=history_size,
            listeners=listeners,
            attempt_hooks=hooks,
        )
        if tracer_provider is not None:
            from .tracing import TRACER_PROVIDER_KEY

            self._extensions[TRACER_PROVIDER_KEY] = tracer_provider  # read by ctx_tracer()

    @property
    def metrics(self) -> WorkerMetrics | None:
        """The :class:`~django_workers.metrics.WorkerMetrics` this pool counts into, or ``None``."""
        return self._metrics

    @property
    def tracer_provider(self) -> TracerProvider | None:
        """The OpenTelemetry tracer provider given to the pool; ``None``: the global one is used."""
        return self._tracer_provider
