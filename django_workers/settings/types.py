"""``settings.WORKERS`` once parsed: frozen dataclasses holding the one set of defaults.

Every default of every key lives here and nowhere else; the validation
(:mod:`django_workers.settings.validation`) fills in what a project leaves out from these
classes, and the history, the health checks and the admin read the parsed values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

from ..core.backoff import Backoff
from ..core.worker import Worker

__all__ = [
    "ORPHAN_GRACE_HEARTBEATS",
    "SETTING",
    "FleetSettings",
    "HealthSettings",
    "HistorySettings",
    "MetricsSettings",
    "TracingSettings",
    "WorkerSpec",
    "WorkersSettings",
]

#: The name of the Django setting.
SETTING: Final = "WORKERS"

#: A ``runworkers`` node without a heartbeat for this many heartbeat intervals is lost (unless
#: ``HISTORY["ORPHAN_GRACE"]`` says otherwise): its open attempts are closed, it shows as stale.
ORPHAN_GRACE_HEARTBEATS: Final = 3


@dataclass(frozen=True)
class HistorySettings:
    """``WORKERS["HISTORY"]``: storing executions and their events in the database."""

    enabled: bool = False
    database: str = "default"
    #: Days stored executions are kept (the ranges of every number: ``settings.values``).
    retention_days: int = 7
    #: Seconds between two heartbeats of a ``runworkers`` node (its row's ``last_heartbeat``).
    heartbeat_interval: float = 10.0
    #: Seconds without a heartbeat after which a node is lost; ``None``: see :attr:`grace`.
    orphan_grace: float | None = None
    #: Events kept in memory while the database is unreachable or slow (the oldest are dropped beyond).
    buffer_size: int = 1_000
    #: Events written per transaction, at most.
    batch_size: int = 1_000

    @property
    def grace(self) -> float:
        """Seconds without a heartbeat after which a node is lost (and shown as stale).

        ``orphan_grace`` when set, else :data:`ORPHAN_GRACE_HEARTBEATS` heartbeat intervals.
        """
        if self.orphan_grace is not None:
            return self.orphan_grace
        return ORPHAN_GRACE_HEARTBEATS * self.heartbeat_interval


@dataclass(frozen=True)
class MetricsSettings:
    """``WORKERS["METRICS"]``: Prometheus counters (``[namespace_][subsystem_]worker_…``)."""

    #: Count when prometheus-client is importable (off, silently, when it is not).
    enabled: bool = True
    #: Sanitised as Yokai does (lower-case, spaces and dashes to ``_``).
    namespace: str = ""
    subsystem: str = ""
    #: Port of the endpoint ``runworkers`` serves the metrics on (0: any free port); None: no endpoint.
    port: int | None = None
    #: Address that endpoint binds ("": every interface).
    address: str = "127.0.0.1"


@dataclass(frozen=True)
class TracingSettings:
    """``WORKERS["TRACING"]``: one OpenTelemetry span per attempt, annotation of spans inside workers."""

    #: Trace when opentelemetry-api is importable (off, silently, when it is not).
    enabled: bool = True
    #: Dotted path of a zero-argument factory returning the pool's TracerProvider; None: the global one.
    provider: str | None = None


@dataclass(frozen=True)
class HealthSettings:
    """``WORKERS["HEALTH"]``: the ``/livez`` and ``/readyz`` endpoint of ``runworkers`` (worker pods)."""

    #: Port of the endpoint (0: any free port, logged); None: no endpoint unless ``--health-port``.
    port: int | None = None
    #: Address that endpoint binds; "0.0.0.0" for a Kubernetes httpGet probe (it calls the pod's IP).
    address: str = "127.0.0.1"


@dataclass(frozen=True)
class FleetSettings:
    """``WORKERS["FLEET"]``: the leases that run each singleton worker on one replica at a time.

    The holder of a lease trusts its own monotonic clock, from the start of its last successful
    renewal: when renewing keeps failing, it cancels its singleton worker :meth:`cancel_after`
    seconds after that start (``LEASE_TTL - MARGIN - STOP_TIMEOUT``), so that the worker, given
    up to ``STOP_TIMEOUT`` to return, is gone before the lease can expire and another replica
    take it. The settings are valid when that leaves time to retry a renewal
    (:meth:`stops_in_time`).
    """

    #: Seconds a lease lasts after each acquisition or renewal (by the database's clock): how long
    #: a replica that dies holding one keeps the others from taking over.
    lease_ttl: float = 60.0
    #: Seconds between two renewals of a held lease; ``None``: a third of the TTL (see :attr:`renew`).
    renew_interval: float | None = None
    #: Seconds the holder subtracts from the TTL for clock-rate differences and statement latency.
    margin: float = 1.0
    #: The database alias holding the lease table (a key of ``settings.DATABASES``).
    database: str = "default"

    @property
    def renew(self) -> float:
        """Seconds between two renewals: ``renew_interval`` when set, else a third of ``lease_ttl``."""
        if self.renew_interval is not None:
            return self.renew_interval
        return self.lease_ttl / 3

    def cancel_after(self, stop_timeout: float) -> float:
        """Seconds after the start of its last successful renewal at which a holder cancels its worker.

        ``LEASE_TTL - MARGIN - STOP_TIMEOUT``: a worker given ``stop_timeout`` seconds to return
        after it is cancelled is gone ``MARGIN`` seconds before the lease can expire.
        """
        return self.lease_ttl - self.margin - stop_timeout

    def minimum_ttl(self, stop_timeout: float) -> float:
        """The bound ``lease_ttl`` must exceed for ``stop_timeout``, with the other values unchanged.

        A holder must retry at least one renewal before it cancels its worker:
        ``LEASE_TTL > renew + MARGIN + STOP_TIMEOUT``. With ``renew_interval`` unset the renewal
        interval is a third of the TTL, so the bound is ``1.5 * (MARGIN + STOP_TIMEOUT)``.
        """
        if self.renew_interval is not None:
            return self.renew_interval + self.margin + stop_timeout
        return 1.5 * (self.margin + stop_timeout)

    def stops_in_time(self, stop_timeout: float) -> bool:
        """Whether ``lease_ttl`` exceeds :meth:`minimum_ttl` (``stop_timeout``: ``STOP_TIMEOUT``, or its override)."""
        return self.lease_ttl > self.minimum_ttl(stop_timeout)


@dataclass(frozen=True)
class WorkerSpec:
    """One validated entry of ``WORKERS["WORKERS"]``.

    The overrides are ``None`` when the entry does not set them (the pool's value applies).
    """

    path: str
    worker_class: type[Worker]
    name: str
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), hash=False)
    deferred_start_threshold: float | None = None
    max_executions_attempts: int | None = None
    restart_backoff: Backoff | None = None
    #: Hang detection: seconds without ``ctx.heartbeat()`` after which the worker is silent (unhealthy).
    max_silence: float | None = None
    #: Cancel (and restart, attempts permitting) a silent attempt.
    restart_on_silence: bool = False
    #: Run on one replica at a time, on a lease (see :class:`FleetSettings`, ``WORKERS["FLEET"]``).
    singleton: bool = False

    def instantiate(self) -> Worker:
        """A new instance of the worker class, with ``OPTIONS`` as keyword arguments."""
        return self.worker_class(**dict(self.options))


@dataclass(frozen=True)
class WorkersSettings:
    """``settings.WORKERS``, validated, with every default filled in."""

    deferred_start_threshold: float = 0.0
    max_executions_attempts: int = 1
    restart_backoff: Backoff = Backoff(initial=1.0, maximum=30.0, multiplier=2.0, jitter=0.1)  # noqa: RUF009 - frozen
    stop_timeout: float = 25.0
    history_size: int = 100
    history: HistorySettings = field(default_factory=HistorySettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    tracing: TracingSettings = field(default_factory=TracingSettings)
    health: HealthSettings = field(default_factory=HealthSettings)
    fleet: FleetSettings = field(default_factory=FleetSettings)
    workers: tuple[WorkerSpec, ...] = ()

    def worker_names(self) -> list[str]:
        """The configured worker names, in configured order."""
        return [spec.name for spec in self.workers]
