"""What a process exposes to Prometheus (``pip install django-worker-pool[metrics]``).

A web server's ``/metrics`` view cannot see the counters of another process: ``runworkers``
serves its own (through :class:`django_workers.http.HttpServer`). This module holds what that
serves, and nothing about HTTP:

- :func:`process_metrics`: the one :class:`~django_workers.observability.metrics.WorkerMetrics`
  of this process for a namespace and subsystem, registered into ``prometheus_client.REGISTRY``
  on first use and reused by every pool built later (tests, ``setting_changed``), so nothing is
  registered twice.
- :func:`exposition_registry`: the registry to serve: ``prometheus_client.REGISTRY``, or in
  multiprocess mode (:func:`multiprocess_dir` set) a registry holding a ``MultiProcessCollector``
  that sums the values of every process writing to that directory.
- :class:`MultiprocessCleanup`: a process service that marks this process dead in the
  multiprocess directory when it stops (its ``livesum`` gauge files are removed).
"""

from __future__ import annotations

import logging
import os
import threading

try:
    from prometheus_client import REGISTRY, CollectorRegistry
    from prometheus_client import multiprocess as _multiprocess
except ImportError as exc:  # pragma: no cover - the check W004 tells how to install it
    raise ImportError(
        "django_workers.observability.exposition needs prometheus-client: pip install django-worker-pool[metrics]",
        name="prometheus_client",
    ) from exc

from ..core.context import LOGGER_NAME
from ..core.pool import WorkerPool
from .metrics import WorkerMetrics
from .names import metric_prefix

__all__ = ["MultiprocessCleanup", "exposition_registry", "multiprocess_dir", "process_metrics"]

logger = logging.getLogger(LOGGER_NAME)

# -- one WorkerMetrics per process and prefix ------------------------------------------------------

_process_metrics: dict[tuple[str, str], WorkerMetrics] = {}
_process_metrics_lock = threading.Lock()


def process_metrics(namespace: str = "", subsystem: str = "") -> WorkerMetrics:
    """The :class:`WorkerMetrics` of this process for ``namespace`` and ``subsystem``, created once.

    The first call registers it into ``prometheus_client.REGISTRY``; later calls (every pool that
    ``build_pool`` builds in this process) return the same object, which keeps counting. Keyed
    by the sanitised prefixes: ``"My-App"`` and ``"my_app"`` are one object. A ``ValueError``
    says so when another collector of ``REGISTRY`` already uses these names, or when a prefix
    cannot be made valid.
    """
    key = (metric_prefix("namespace", namespace), metric_prefix("subsystem", subsystem))
    with _process_metrics_lock:
        metrics = _process_metrics.get(key)
        if metrics is None:
            metrics = WorkerMetrics(*key).register(REGISTRY)
            _process_metrics[key] = metrics
        return metrics


# -- what to serve ---------------------------------------------------------------------------------


def multiprocess_dir() -> str | None:
    """The directory of Prometheus multiprocess mode, or ``None`` when this process is not in it.

    ``PROMETHEUS_MULTIPROC_DIR`` (or the older lower-case ``prometheus_multiproc_dir``), read as
    prometheus_client reads it.
    """
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir") or None  # noqa: SIM112


def exposition_registry() -> CollectorRegistry:
    """``prometheus_client.REGISTRY``; in multiprocess mode, a registry summing every process's files."""
    path = multiprocess_dir()
    if path is None:
        return REGISTRY
    registry = CollectorRegistry()
    _multiprocess.MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
    return registry


# -- multiprocess mode ---------------------------------------------------------------------------


class MultiprocessCleanup:
    """A process service for multiprocess mode: marks this process dead in the directory when it stops.

    ``prometheus_client.multiprocess.mark_process_dead`` removes the files of this process's
    ``livesum``/``liveall``/… gauges, so ``workers_running`` stops counting a process that exited.
    Counters and histograms keep their files: their totals survive the process, as they should.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        #: Shown in the logs of ``runworkers``.
        self.name = f"Prometheus multiprocess mode in {path}"

    def start(self, pool: WorkerPool | None = None) -> None:
        """Nothing to start: prometheus_client writes the values to the directory by itself."""

    def stop(self, timeout: float = 0.0) -> None:
        """Mark this process dead in the directory; never raises."""
        try:
            _multiprocess.mark_process_dead(os.getpid(), self.path)  # type: ignore[no-untyped-call]
        except Exception:
            logger.exception("marking process %d dead in %s failed", os.getpid(), self.path)

    def __repr__(self) -> str:
        return f"<MultiprocessCleanup {self.path!r}>"
