"""The composition root: parsed settings in, a configured pool and the process's services out.

- :func:`build_pool`: a new, unstarted :class:`~django_workers.WorkerPool` from
  :class:`~django_workers.settings.WorkersSettings` (workers, logging, database hygiene,
  metrics, tracing).
- :func:`build_services`: what a process that runs a pool runs beside it (the history recorder and
  the pickup of control requests, one HTTP server per port for ``/metrics``, ``/livez`` and
  ``/readyz``, the Prometheus multiprocess clean-up), from the settings and explicit arguments.
- :class:`ProcessService`, :func:`start_services`, :func:`stop_services`: their life cycle. A
  service is started before the pool starts, so that it sees the pool's first events, and
  stopped after the pool stopped, within what is left of the stop timeout.

The process-wide objects (one ``WorkerMetrics`` per namespace, one tracer provider per factory)
are built here once and shared by every pool of the process.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, cast, runtime_checkable

from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from . import db
from .control import ControlPickup
from .core.context import LOGGER_NAME
from .core.pool import WorkerPool
from .fleet import LeaseKeeper
from .history import HistoryRecorder
from .http import HttpServer, django_prometheus_export
from .settings import (
    FleetSettings,
    HistorySettings,
    MetricsSettings,
    TracingSettings,
    WorkersSettings,
    load_settings,
    select_workers,
)
from .settings.imports import describe_exception, importable
from .settings.values import got, where
from .settings.workers import construct_worker

if TYPE_CHECKING:  # types only: prometheus-client is optional
    from .observability.metrics import WorkerMetrics

__all__ = [
    "MetricsUnavailableError",
    "ProcessService",
    "build_pool",
    "build_services",
    "metrics_unavailable",
    "pool_metrics",
    "start_services",
    "stop_services",
    "tracer_provider",
]

logger = logging.getLogger(LOGGER_NAME)


# -- process services ---------------------------------------------------------------------------------


@runtime_checkable
class ProcessService(Protocol):
    """Something that runs beside a pool in one process."""

    #: Shown in logs ("history recorder", "HTTP server on 127.0.0.1:9100 (/metrics)").
    name: str

    def start(self, pool: WorkerPool) -> None:
        """Start (before ``pool.start()``); may add listeners to the pool. Raise to abort the start."""

    def stop(self, timeout: float) -> None:
        """Stop within ``timeout`` seconds (after ``pool.stop()``); must not raise."""


def start_services(services: Sequence[ProcessService], pool: WorkerPool) -> None:
    """Start the services in order; if one fails, stop those already started and re-raise."""
    started: list[ProcessService] = []
    try:
        for service in services:
            service.start(pool)
            started.append(service)
            logger.info("started %s", service.name)
    except BaseException:
        stop_services(started, 5.0)
        raise


def stop_services(services: Sequence[ProcessService], timeout: float) -> None:
    """Stop the services in reverse order, sharing ``timeout`` seconds; log (never raise) failures."""
    deadline = time.monotonic() + timeout
    for service in reversed(services):
        try:
            service.stop(max(0.0, deadline - time.monotonic()))
        except Exception:
            logger.exception("stopping %s failed", service.name)


# -- process-wide objects ---------------------------------------------------------------------------


def pool_metrics(metrics_settings: MetricsSettings) -> Any:
    """The ``WorkerMetrics`` a pool built from the settings counts into, or ``None`` (no cost at all).

    ``None`` when ``METRICS["ENABLED"]`` is false or prometheus-client is missing (silently by
    default: the check W004 warns only when metrics were asked for explicitly).
    Otherwise this process's one ``WorkerMetrics`` for the namespace and subsystem, registered
    into ``prometheus_client.REGISTRY`` when first built and shared by every pool built later.
    """
    if metrics_unavailable(metrics_settings) is not None:
        return None
    from .observability.exposition import process_metrics  # noqa: PLC0415 - optional dependency: prometheus-client

    try:
        return process_metrics(metrics_settings.namespace, metrics_settings.subsystem)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{where('METRICS')}: {exc}") from exc


_tracer_providers: dict[str, Any] = {}
_tracer_providers_lock = threading.Lock()


def tracer_provider(path: str) -> Any:
    """The TracerProvider returned by the factory at dotted ``path``, called once per process.

    Later calls return the same provider (a provider owns span processors and their threads: one
    per process). ``ImproperlyConfigured`` when the factory cannot be imported, raises, or returns
    something that is not a tracer provider.
    """
    with _tracer_providers_lock:
        provider = _tracer_providers.get(path)
        if provider is not None:
            return provider
        place = where("TRACING", "PROVIDER")
        try:
            factory = import_string(path)
        except ImportError as exc:
            raise ImproperlyConfigured(f"{place} {path!r} cannot be imported: {describe_exception(exc)}") from exc
        try:
            provider = factory()
        except Exception as exc:
            raise ImproperlyConfigured(f"{place} {path!r} raised {describe_exception(exc)}") from exc
        if not callable(getattr(provider, "get_tracer", None)):
            raise ImproperlyConfigured(
                f"{place} {path!r} returned {got(provider)}, which is not a TracerProvider "
                f"(it has no get_tracer() method); return e.g. an opentelemetry.sdk.trace.TracerProvider."
            )
        _tracer_providers[path] = provider
        return provider


def _pool_tracing(tracing_settings: TracingSettings) -> dict[str, Any]:
    """The tracing arguments of ``WorkerPool``: ``tracing`` and ``tracer_provider``.

    Tracing is off when ``TRACING["ENABLED"]`` is false or opentelemetry-api is missing (silently
    by default: the check W003 warns only when tracing was asked for explicitly). Otherwise every
    attempt runs in a span of the provider that ``TRACING["PROVIDER"]`` returns (annotated by the
    pool), or of the global provider when it is None.
    """
    if not tracing_settings.enabled or not importable("opentelemetry.trace"):
        return {"tracing": False, "tracer_provider": None}
    provider = tracer_provider(tracing_settings.provider) if tracing_settings.provider is not None else None
    return {"tracing": True, "tracer_provider": provider}


# -- the pool -------------------------------------------------------------------------------------------


def build_pool(
    workers_settings: WorkersSettings | None = None,
    *,
    only: Sequence[str] = (),
    exclude: Sequence[str] = (),
    stop_timeout: float | None = None,
) -> WorkerPool:
    """A new, unstarted :class:`~django_workers.WorkerPool` configured from the settings.

    ``workers_settings`` defaults to :func:`~django_workers.settings.load_settings` (which raises
    ``ImproperlyConfigured`` when they are invalid). Each configured worker is registered with its
    overrides: the instance that validating the settings constructed, if no pool took it yet, else a
    new one built with its ``OPTIONS`` (a process constructs each worker once, see
    :func:`~django_workers.settings.workers.construct_worker`); ``only``/``exclude`` filter by worker name
    (``ValueError`` for an unknown one); ``stop_timeout`` overrides ``STOP_TIMEOUT``. The pool
    closes the database connections of its worker threads around every attempt (see
    :mod:`django_workers.db`).
    """
    if workers_settings is None:
        workers_settings = load_settings()
    specs = select_workers(workers_settings.workers, only=only, exclude=exclude)
    pool = WorkerPool(
        deferred_start_threshold=workers_settings.deferred_start_threshold,
        max_executions_attempts=workers_settings.max_executions_attempts,
        restart_backoff=workers_settings.restart_backoff,
        stop_timeout=workers_settings.stop_timeout if stop_timeout is None else stop_timeout,
        history_size=workers_settings.history_size,
        attempt_hooks=[db.connection_hygiene],
        listeners=[db.close_thread_connections],
        metrics=pool_metrics(workers_settings.metrics),
        **_pool_tracing(workers_settings.tracing),
    )
    for spec in specs:
        try:
            worker = construct_worker(spec)
        except (Exception, SystemExit) as exc:
            raise ImproperlyConfigured(
                f"Worker {spec.name!r} ({spec.path}) could not be instantiated: {describe_exception(exc)}"
            ) from exc
        pool.register(
            worker,
            deferred_start_threshold=spec.deferred_start_threshold,
            max_executions_attempts=spec.max_executions_attempts,
            restart_backoff=spec.restart_backoff,
            max_silence=spec.max_silence,
            restart_on_silence=spec.restart_on_silence,
            singleton=spec.singleton,
        )
    return pool


# -- the services -----------------------------------------------------------------------------------


class MetricsUnavailableError(ValueError):
    """A metrics port or address was given, but this process has no metrics to serve."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"a metrics endpoint was asked for, but {reason}")
        #: Why there are no metrics (metrics disabled, prometheus-client missing).
        self.reason = reason


def metrics_unavailable(metrics_settings: MetricsSettings) -> str | None:
    """Why this process has no metrics to serve, or ``None`` when it has."""
    if not metrics_settings.enabled:
        return f"metrics are disabled ({where('METRICS', 'ENABLED')} is False)"
    if not importable("prometheus_client"):
        return "prometheus-client is not installed (pip install 'django-worker-pool[metrics]')"
    return None


def build_services(
    workers_settings: WorkersSettings,
    pool: WorkerPool,
    *,
    metrics_port: int | None = None,
    metrics_address: str | None = None,
    health_port: int | None = None,
) -> list[ProcessService]:
    """The services a process runs beside ``pool``, from the settings and explicit overrides.

    ``metrics_port``/``metrics_address`` override ``METRICS["PORT"]``/``["ADDRESS"]``,
    ``health_port`` overrides ``HEALTH["PORT"]``. No port, no endpoint. The metrics and the health
    endpoints given the same port are one server serving both. ``ValueError`` when the overrides
    ask for what cannot be: one port on two addresses, or a metrics port without metrics
    (:class:`MetricsUnavailableError`).
    """
    services: list[ProcessService] = []
    history = _history_services(workers_settings.history, pool)
    services.extend(history)  # first: stopped last, it flushes
    # After the pickup (standing pauses are applied first); stopped first, once the pool stopped.
    node = next((service.node_id for service in history if isinstance(service, HistoryRecorder)), None)
    services.extend(_fleet_services(workers_settings.fleet, pool, node))
    metrics = workers_settings.metrics
    port, address = _metrics_endpoint(metrics, pool, metrics_port, metrics_address)
    health = workers_settings.health
    health_at = health.port if health_port is None else health_port
    if port is not None and port == health_at and port != 0:
        if address != health.address:
            raise ValueError(
                f"the metrics and the health endpoints share port {port} but not their address "
                f"({address!r} and {health.address!r}); give them one address, or two ports"
            )
        services.append(HttpServer(port, address, metrics=_registry(), health=True))
    else:
        if port is not None:
            services.append(HttpServer(port, address, metrics=_registry()))
        if health_at is not None:
            services.append(HttpServer(health_at, health.address, health=True))
    if pool.metrics is not None:
        services.extend(_multiprocess_services())
    return services


def _metrics_endpoint(
    metrics: MetricsSettings, pool: WorkerPool, port_override: int | None, address_override: str | None
) -> tuple[int | None, str]:
    """The port and address of the metrics endpoint (port None: no endpoint)."""
    asked = port_override is not None or address_override is not None
    if pool.metrics is None:
        if asked:
            raise MetricsUnavailableError(metrics_unavailable(metrics) or "the pool counts into no metrics")
        return None, ""
    port = metrics.port if port_override is None else port_override
    address = metrics.address if address_override is None else address_override
    exported = django_prometheus_export()
    if exported is not None:
        if port_override is not None:
            logger.warning(
                "metrics port %d is not bound: django-prometheus already serves the metrics of this process on %s",
                port_override,
                exported,
            )
        else:
            logger.info("metrics are served by django-prometheus on %s; runworkers binds no other port", exported)
        return None, address
    return port, address


def _registry() -> Any:
    from .observability.exposition import exposition_registry  # noqa: PLC0415 - optional dependency: prometheus-client

    return exposition_registry()


def _multiprocess_services() -> list[ProcessService]:
    from .observability import exposition  # noqa: PLC0415 - optional dependency: prometheus-client

    path = exposition.multiprocess_dir()
    return [] if path is None else [exposition.MultiprocessCleanup(path)]


def _fleet_services(fleet: FleetSettings, pool: WorkerPool, node: uuid.UUID | None) -> list[ProcessService]:
    """The lease keeper of the pool's singleton workers, if it has any.

    The leases are held for ``node`` (the history's node id, so that the console can name the
    holder), or for an id of this process's own without history. ``ValueError`` when the lease
    cannot cover the pool's stop timeout (``--stop-timeout`` may have raised it past the check).
    """
    if not any(execution.singleton for execution in pool.executions().values()):
        return []
    if not fleet.stops_in_time(pool.stop_timeout):
        raise ValueError(
            f"{where('FLEET', 'LEASE_TTL')} is {fleet.lease_ttl:g} seconds, which cannot cover a renewal interval "
            f"of {fleet.renew:g}, a margin of {fleet.margin:g} and a stop timeout of {pool.stop_timeout:g} seconds: "
            f"a singleton worker could outlive its lease. Make LEASE_TTL more than "
            f"{fleet.minimum_ttl(pool.stop_timeout):g} seconds, or lower the stop timeout."
        )
    keeper = LeaseKeeper(
        node or uuid.uuid4(),
        ttl=fleet.lease_ttl,
        renew=fleet.renew,
        margin=fleet.margin,
        stop_timeout=pool.stop_timeout,
        database=fleet.database,
    )
    return [keeper]


def _history_services(history: HistorySettings, pool: WorkerPool) -> list[ProcessService]:
    """The history recorder, then the pickup of control requests for its node, when ``HISTORY["ENABLED"]``."""
    if not history.enabled:
        return []
    recorder = HistoryRecorder(
        history.database,
        buffer_size=history.buffer_size,
        batch_size=history.batch_size,
        heartbeat_interval=history.heartbeat_interval,
        orphan_grace=history.grace,
        retention_days=history.retention_days,
        metrics=cast("WorkerMetrics | None", pool.metrics),  # what pool_metrics() gave build_pool()
    )
    pickup = ControlPickup(history.database, recorder.node_id, poll_interval=history.heartbeat_interval)
    return [recorder, pickup]
