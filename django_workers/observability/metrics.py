"""Prometheus metrics of a worker pool: a lifecycle listener that counts into prometheus_client.

Optional (``pip install django-worker-pool[metrics]``); the core never imports it. Its public
path is ``django_workers.metrics``. A pool counts into a :class:`WorkerMetrics` when it is one of
its listeners (``WorkerPool(metrics=WorkerMetrics())``); expose them by registering it into a
registry::

    from prometheus_client import REGISTRY
    from django_workers.metrics import WorkerMetrics

    metrics = WorkerMetrics(namespace="myapp").register(REGISTRY)

Metrics, each name prefixed with ``<namespace>_<subsystem>_`` when those are given (sanitised as
Yokai does: lower-cased, spaces and dashes replaced by ``_``, so ``"My-App"`` gives ``my_app_``):

- ``worker_executions_total{worker, status}`` (counter, as in Yokai, with its HELP text):
  ``status`` is ``started``, ``success`` or ``error`` for execution attempts (a recovered panic
  counts as ``error``), or ``restarted`` for restarts.
- ``workers_running{worker}`` (gauge): 1 while an attempt runs, else 0.
- ``worker_status{worker, status}`` (gauge): 1 for the worker's current status, 0 for the others
  (:data:`STATUSES`: ``unknown``, ``deferred``, ``running``, ``success``, ``error``, ``exhausted``
  — its last allowed attempt failed, it will not run again — ``paused``, ``standby``, a
  singleton worker on a replica that does not hold its lease, and ``stuck``, one still running
  after its replica lost the lease, beyond the stop timeout). An alert on
  ``worker_status{status="exhausted"} == 1`` fires for a worker that gave up.
- ``worker_execution_duration_seconds{worker, status}`` (histogram, ``status`` ``success`` or
  ``error``): how long each attempt ran, with buckets from 10 ms to a day (:data:`DURATION_BUCKETS`).
- ``worker_lease_leader{worker}`` (gauge): for a singleton worker, 1 while this process (the
  replica: the scrape target's ``instance``) holds its lease, else 0; ``sum by (worker)`` over the
  fleet is 1 when one replica leads, and an alert on ``> 1`` would show a split brain.
- ``worker_lease_transitions_total{worker, change}`` (counter): ``change`` is ``acquired`` or
  ``lost``; leases changing hands often point at renewals that do not get through in time.
- ``worker_recorder_dropped_events_total`` (counter) and
  ``worker_last_heartbeat_timestamp_seconds`` (gauge, Unix time): updated by the history
  recorder through :meth:`WorkerMetrics.record_dropped` and :meth:`WorkerMetrics.set_heartbeat`.

The ``worker`` label is :func:`~django_workers.observability.names.worker_label` of the worker
name (``"My Worker-1"`` becomes ``"my_worker_1"``). The series of the workers a pool starts with
exist from ``start()`` on, at 0, so rates and alerts work before the first failure; a worker
registered after ``start()`` gets its series on its first event.

Multiprocess mode: when several processes serve metrics (``runworkers`` beside a web server with
several processes, say), set ``PROMETHEUS_MULTIPROC_DIR`` to an empty directory *before*
prometheus_client is imported, in every process, and expose a registry holding a
``prometheus_client.multiprocess.MultiProcessCollector`` rather than registering this object
(:func:`django_workers.observability.exposition.exposition_registry` does). Counters and the
histogram are summed over processes. The gauges declare how they aggregate: ``workers_running``
and ``worker_status`` with ``livesum`` (the number of processes alive now where an attempt runs,
or where the worker is in that status) and
``worker_last_heartbeat_timestamp_seconds`` with ``max`` (the latest heartbeat of any process).
The modes are ignored outside multiprocess mode.
"""

from __future__ import annotations

import math
import threading
import time
import weakref
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

try:
    from prometheus_client import Counter, Gauge, Histogram
except ImportError as exc:  # pragma: no cover - exercised by a test that hides prometheus_client
    raise ImportError(
        "django_workers.metrics needs prometheus-client: pip install django-worker-pool[metrics]",
        name="prometheus_client",
    ) from exc

from ..core.events import (
    AttemptFailed,
    AttemptsExhausted,
    AttemptStarted,
    AttemptSucceeded,
    LifecycleEvent,
    PoolStarted,
    ReportedEvent,
    WorkerDeferred,
    WorkerFinished,
    WorkerLeaseChanged,
    WorkerPaused,
    WorkerRestarting,
    WorkerStandby,
    WorkerStuck,
)
from .names import metric_prefix, worker_label

if TYPE_CHECKING:
    from prometheus_client.registry import Collector, CollectorRegistry

__all__ = ["DURATION_BUCKETS", "EXECUTIONS_HELP", "STATUSES", "WorkerMetrics", "worker_label"]

#: The values of the ``status`` label of ``worker_status``: the statuses of
#: :class:`~django_workers.WorkerStatus`, with ``exhausted`` for an ``error`` that is final.
STATUSES: tuple[str, ...] = (
    "unknown",
    "deferred",
    "running",
    "success",
    "error",
    "exhausted",
    "paused",
    "standby",
    "stuck",
)

#: Histogram buckets (seconds) of attempt durations: workers run from milliseconds to days.
DURATION_BUCKETS: tuple[float, ...] = (
    0.01,
    0.05,
    0.1,
    0.5,
    1.0,
    5.0,
    15.0,
    60.0,
    300.0,
    900.0,
    3600.0,
    4 * 3600.0,
    12 * 3600.0,
    24 * 3600.0,
    math.inf,
)

#: The HELP text of ``worker_executions_total``: Yokai's, word for word.
EXECUTIONS_HELP = "Total number of workers executions"


class _Series:
    """The labelled children of one worker, created once and reused on every event."""

    __slots__ = (
        "duration_error",
        "duration_success",
        "error",
        "label",
        "leader",
        "lock",
        "metrics",
        "restarted",
        "running",
        "started",
        "status",
        "statuses",
        "success",
    )

    def __init__(self, metrics: WorkerMetrics, label: str) -> None:
        executions = metrics._executions
        self.started = executions.labels(label, "started")
        self.restarted = executions.labels(label, "restarted")
        self.success = executions.labels(label, "success")
        self.error = executions.labels(label, "error")
        self.running = metrics._running.labels(label)
        self.duration_success = metrics._duration.labels(label, "success")
        self.duration_error = metrics._duration.labels(label, "error")
        #: Created for a singleton worker only (its first lease event), so others have no such series.
        self.leader: Any = None
        self.label = label
        self.metrics = metrics
        self.statuses = {status: metrics._status.labels(label, status) for status in STATUSES}
        self.statuses["unknown"].set(1)
        self.status = "unknown"
        #: A control publishes from the requester's thread: one status at 1, whoever publishes.
        self.lock = threading.Lock()

    def set_leader(self, value: int | None) -> None:
        """Set the lease gauge (created at 0 on first use); None only creates it."""
        if self.leader is None:
            self.leader = self.metrics._leader.labels(self.label)
        if value is not None:
            self.leader.set(value)

    def set_status(self, status: str) -> None:
        with self.lock:
            if status != self.status:
                self.statuses[self.status].set(0)
                self.statuses[status].set(1)
                self.status = status


class WorkerMetrics:
    """Prometheus metrics of a worker pool, fed by its lifecycle events (see the module doc).

    It is a pool listener: ``pool.add_listener(metrics)`` or ``WorkerPool(metrics=metrics)``.
    Nothing is exported until :meth:`register` adds it to a registry. ``namespace`` and
    ``subsystem`` prefix every metric name, sanitised as Yokai does (``"My-App"`` becomes
    ``"my_app"``; :attr:`namespace` and :attr:`subsystem` hold the sanitised values); what
    sanitising cannot make valid (a dot, a leading digit) raises ``ValueError``.
    """

    #: The events it counts: the pool calls it for these only (set below, from _HANDLERS).
    event_types: ClassVar[frozenset[type]]

    def __init__(self, namespace: str = "", subsystem: str = "") -> None:
        self.namespace = metric_prefix("namespace", namespace)
        self.subsystem = metric_prefix("subsystem", subsystem)
        ns, sub = self.namespace, self.subsystem
        self._executions = Counter(
            "worker_executions",
            EXECUTIONS_HELP,
            ("worker", "status"),
            namespace=ns,
            subsystem=sub,
            registry=None,
        )
        self._running = Gauge(
            "workers_running",
            "1 while an execution attempt of the worker runs, else 0.",
            ("worker",),
            multiprocess_mode="livesum",
            namespace=ns,
            subsystem=sub,
            registry=None,
        )
        self._status = Gauge(
            "worker_status",
            "1 for the current status of the worker (exhausted: it gave up; paused: held by an operator), else 0.",
            ("worker", "status"),
            multiprocess_mode="livesum",
            namespace=ns,
            subsystem=sub,
            registry=None,
        )
        self._duration = Histogram(
            "worker_execution_duration_seconds",
            "Duration of worker execution attempts, by outcome.",
            ("worker", "status"),
            buckets=DURATION_BUCKETS,
            namespace=ns,
            subsystem=sub,
            registry=None,
        )
        self._leader = Gauge(
            "worker_lease_leader",
            "1 while this process holds the lease of the singleton worker, else 0.",
            ("worker",),
            multiprocess_mode="livesum",
            namespace=ns,
            subsystem=sub,
            registry=None,
        )
        self._transitions = Counter(
            "worker_lease_transitions",
            "Changes of this process's hold on the lease of a singleton worker (acquired, lost).",
            ("worker", "change"),
            namespace=ns,
            subsystem=sub,
            registry=None,
        )
        self._dropped = Counter(
            "worker_recorder_dropped_events",
            "Lifecycle events the execution history recorder dropped instead of storing them.",
            namespace=ns,
            subsystem=sub,
            registry=None,
        )
        self._heartbeat = Gauge(
            "worker_last_heartbeat_timestamp_seconds",
            "Unix time of the last heartbeat of the worker process.",
            multiprocess_mode="max",
            namespace=ns,
            subsystem=sub,
            registry=None,
        )
        self._series: dict[str, _Series] = {}
        self._registries: weakref.WeakSet[CollectorRegistry] = weakref.WeakSet()

    @property
    def collectors(self) -> tuple[Collector, ...]:
        """The prometheus_client metrics, in the order they are registered."""
        return (
            self._executions,
            self._running,
            self._status,
            self._duration,
            self._leader,
            self._transitions,
            self._dropped,
            self._heartbeat,
        )

    # -- registries -----------------------------------------------------------------------------

    def register(self, registry: CollectorRegistry) -> WorkerMetrics:
        """Add the metrics to ``registry`` and return ``self``.

        Raises ``ValueError`` when this object is already registered there, or when another
        collector of the registry already uses one of the names (the registry is then unchanged).
        """
        if registry in self._registries:
            raise ValueError(
                f"this WorkerMetrics (namespace={self.namespace!r}, subsystem={self.subsystem!r}) "
                f"is already registered in {registry!r}"
            )
        done: list[Collector] = []
        try:
            for collector in self.collectors:
                registry.register(collector)
                done.append(collector)
        except ValueError as exc:
            for collector in done:
                registry.unregister(collector)
            raise ValueError(
                f"cannot register WorkerMetrics (namespace={self.namespace!r}, subsystem={self.subsystem!r}): "
                f"{exc}; another collector of this registry (another WorkerMetrics?) already uses these names; "
                f"give this one a different namespace or subsystem"
            ) from exc
        self._registries.add(registry)
        return self

    def unregister(self, registry: CollectorRegistry) -> None:
        """Remove the metrics from ``registry``; ``LookupError`` when they are not registered there."""
        if registry not in self._registries:
            raise LookupError(f"this WorkerMetrics is not registered in {registry!r}")
        for collector in self.collectors:
            registry.unregister(collector)
        self._registries.discard(registry)

    # -- the listener ---------------------------------------------------------------------------

    def __call__(self, event: LifecycleEvent) -> None:
        """Count one lifecycle event (called by the pool, in the thread where it happens)."""
        handler = _HANDLERS.get(type(event))
        if handler is not None:
            handler(self, event)

    def _of(self, name: str) -> _Series:
        series = self._series.get(name)
        if series is None:
            # Two threads may build it at once: labels() returns the same children to both.
            series = self._series.setdefault(name, _Series(self, worker_label(name)))
        return series

    def _pool_started(self, event: PoolStarted) -> None:
        for name in event.workers:
            self._of(name)

    def _deferred(self, event: WorkerDeferred) -> None:
        self._of(event.worker).set_status("deferred")

    def _attempt_started(self, event: AttemptStarted) -> None:
        series = self._of(event.worker)
        series.started.inc()
        series.running.set(1)
        series.set_status("running")

    def _attempt_succeeded(self, event: AttemptSucceeded) -> None:
        series = self._of(event.worker)
        series.running.set(0)
        series.success.inc()
        series.duration_success.observe(event.duration)
        series.set_status("success")

    def _attempt_failed(self, event: AttemptFailed) -> None:
        series = self._of(event.worker)
        series.running.set(0)
        series.error.inc()
        series.duration_error.observe(event.duration)
        series.set_status("error")

    def _status_event(self, event: ReportedEvent) -> None:
        # Exhausted: the error is final; paused: held by an operator.
        self._of(event.worker).set_status("exhausted" if type(event) is AttemptsExhausted else event.status.value)

    def _lease_changed(self, event: WorkerLeaseChanged) -> None:
        acquired = event.fence is not None
        self._of(event.worker).set_leader(1 if acquired else 0)
        self._transitions.labels(worker_label(event.worker), "acquired" if acquired else "lost").inc()

    def _standby(self, event: WorkerStandby) -> None:
        series = self._of(event.worker)
        series.set_status("standby")
        series.set_leader(None)  # a singleton standing by from the start: its gauge exists, at 0

    def _stuck(self, event: WorkerStuck) -> None:
        self._of(event.worker).set_status("stuck")

    def _restarting(self, event: WorkerRestarting) -> None:
        self._of(event.worker).restarted.inc()

    def _finished(self, event: WorkerFinished) -> None:
        # Supervision ended: no attempt of this worker runs any more, whatever happened.
        self._of(event.worker).running.set(0)

    # -- updated by the history recorder --------------------------------------------------------

    def record_dropped(self, count: int = 1) -> None:
        """Count ``count`` lifecycle events that the history recorder had to drop."""
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"record_dropped() takes a number of events (an int >= 0), got {count!r}")
        if count:
            self._dropped.inc(count)

    def set_heartbeat(self, timestamp: float | datetime | None = None) -> None:
        """Set the last heartbeat: Unix time in seconds, an aware ``datetime``, or now when None."""
        if timestamp is None:
            value = time.time()
        elif isinstance(timestamp, datetime):
            if timestamp.tzinfo is None:
                raise ValueError(f"set_heartbeat() needs a timezone-aware datetime, got {timestamp!r}")
            value = timestamp.timestamp()
        elif isinstance(timestamp, bool) or not isinstance(timestamp, int | float):
            raise TypeError(f"set_heartbeat() takes Unix time in seconds or a datetime, got {timestamp!r}")
        else:
            value = float(timestamp)
        self._heartbeat.set(value)

    def __repr__(self) -> str:
        return f"<WorkerMetrics namespace={self.namespace!r} subsystem={self.subsystem!r}>"


# Dispatch on the event's exact type: one dict lookup per event, nothing for the ones not counted.
_HANDLERS: dict[type, Callable[[WorkerMetrics, Any], None]] = {
    PoolStarted: WorkerMetrics._pool_started,
    WorkerDeferred: WorkerMetrics._deferred,
    AttemptStarted: WorkerMetrics._attempt_started,
    AttemptSucceeded: WorkerMetrics._attempt_succeeded,
    AttemptFailed: WorkerMetrics._attempt_failed,
    WorkerRestarting: WorkerMetrics._restarting,
    WorkerFinished: WorkerMetrics._finished,
    AttemptsExhausted: WorkerMetrics._status_event,
    WorkerPaused: WorkerMetrics._status_event,
    WorkerStandby: WorkerMetrics._standby,
    WorkerLeaseChanged: WorkerMetrics._lease_changed,
    WorkerStuck: WorkerMetrics._stuck,
}
WorkerMetrics.event_types = frozenset(_HANDLERS)
