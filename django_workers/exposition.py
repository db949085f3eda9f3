"""Serving the Prometheus metrics of the process that runs the workers.

A web server's ``/metrics`` view cannot see the counters of another process: ``runworkers`` serves
its own. This module holds what that takes (``pip install django-worker-pool[metrics]``):

- :func:`process_metrics`: the one :class:`~django_workers.metrics.WorkerMetrics` of this process
  for a namespace and subsystem, registered into ``prometheus_client.REGISTRY`` on first use and
  reused by every pool built later (tests, ``setting_changed``), so nothing is registered twice.
- :func:`exposition_registry`: what an endpoint serves: ``prometheus_client.REGISTRY``, or in
  multiprocess mode (``PROMETHEUS_MULTIPROC_DIR`` set) a registry holding a
  ``MultiProcessCollector`` that sums the values of every process writing to that directory.
- :class:`MetricsEndpoint`: a process service (:mod:`django_workers.services`) serving a registry
  over HTTP from a thread of its own, shut down and joined when it stops.
- :class:`MultiprocessCleanup`: a process service that marks this process dead in the
  multiprocess directory when it stops (its ``livesum`` gauge files are removed).
- :func:`metrics_services`: which of them ``runworkers`` runs, from the settings and its options;
  when django-prometheus already exports ``REGISTRY`` on a port from this process
  (``PROMETHEUS_METRICS_EXPORT_PORT``), no second port is bound.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import threading
from collections.abc import Callable
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

try:
    from prometheus_client import REGISTRY, CollectorRegistry, make_wsgi_app
    from prometheus_client import multiprocess as _multiprocess
except ImportError as exc:  # pragma: no cover - the check W004 tells how to install it
    raise ImportError(
        "django_workers.exposition needs prometheus-client: pip install django-worker-pool[metrics]",
        name="prometheus_client",
    ) from exc

from .core.context import LOGGER_NAME
from .metrics import WorkerMetrics

if TYPE_CHECKING:
    from .core.pool import WorkerPool
    from .services import ProcessService

__all__ = [
    "DEFAULT_ADDRESS",
    "EndpointError",
    "MetricsEndpoint",
    "MultiprocessCleanup",
    "django_prometheus_export",
    "exposition_registry",
    "metrics_services",
    "multiprocess_dir",
    "parse_port",
    "process_metrics",
]

logger = logging.getLogger(LOGGER_NAME)

#: The address the endpoint binds by default: only this host (a sidecar or a node agent scrapes it).
DEFAULT_ADDRESS = "127.0.0.1"

# -- one WorkerMetrics per process and prefix ------------------------------------------------------

_process_metrics: dict[tuple[str, str], WorkerMetrics] = {}
_process_metrics_lock = threading.Lock()


def process_metrics(namespace: str = "", subsystem: str = "") -> WorkerMetrics:
    """The :class:`WorkerMetrics` of this process for ``namespace`` and ``subsystem``, created once.

    The first call registers it into ``prometheus_client.REGISTRY``; later calls (every pool that
    ``build_pool`` builds in this process) return the same object, which keeps counting. A
    ``ValueError`` says so when another collector of ``REGISTRY`` already uses these names.
    """
    key = (namespace, subsystem)
    with _process_metrics_lock:
        metrics = _process_metrics.get(key)
        if metrics is None:
            metrics = WorkerMetrics(namespace, subsystem).register(REGISTRY)
            _process_metrics[key] = metrics
        return metrics


# -- what an endpoint serves ----------------------------------------------------------------------


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


# -- the HTTP endpoint ----------------------------------------------------------------------------


class EndpointError(RuntimeError):
    """The endpoint could not listen on its address (port in use, address not available, …)."""


class _QuietHandler(WSGIRequestHandler):
    """Logs requests at DEBUG on the ``django_workers`` logger instead of writing them to stderr."""

    def log_message(self, format: str, *args: Any) -> None:
        """Log one request line at DEBUG."""
        logger.debug("metrics endpoint: %s %s", self.address_string(), format % args)


class _Server(ThreadingMixIn, WSGIServer):
    """One thread per scrape; those threads never keep the process alive."""

    daemon_threads = True


def _server_class(address: str, port: int) -> tuple[type[_Server], str]:
    """The server class of the right address family for ``address``, and the host to bind."""
    infos = socket.getaddrinfo(address or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, sockaddr = infos[0]
    return type("_MetricsServer", (_Server,), {"address_family": family}), str(sockaddr[0])


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class MetricsEndpoint:
    """A process service serving a Prometheus registry over HTTP (any path; ``/metrics`` by convention).

    ``start()`` binds ``address:port`` (port ``0``: any free port, see :attr:`port`) and serves
    from a thread of its own; it raises :class:`EndpointError` with a readable message when it
    cannot bind. ``stop()`` shuts the server down, closes the socket and joins the thread.
    ``registry`` defaults to :func:`exposition_registry`.
    """

    def __init__(self, port: int, address: str = DEFAULT_ADDRESS, registry: CollectorRegistry | None = None) -> None:
        self.address = address
        self._requested_port = port
        self._registry = registry
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        #: Shown in the logs of ``runworkers`` (with the port actually bound, once started).
        self.name = f"metrics endpoint on {self.url}"

    @property
    def port(self) -> int:
        """The port listened on (the one actually bound, once started with port ``0``)."""
        return self._server.server_address[1] if self._server is not None else self._requested_port

    @property
    def url(self) -> str:
        """``http://host:port/metrics``."""
        return f"http://{_hostport(self.address or '0.0.0.0', self.port)}/metrics"

    def start(self, pool: WorkerPool | None = None) -> None:
        """Bind and serve; :class:`EndpointError` when the address cannot be bound."""
        if self._server is not None:
            raise RuntimeError(f"{self.name} is already started")
        where = _hostport(self.address or "*", self._requested_port)
        registry = self._registry if self._registry is not None else exposition_registry()
        try:
            server_class, host = _server_class(self.address, self._requested_port)
            server = server_class((host, self._requested_port), _QuietHandler)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            if exc.errno == errno.EADDRINUSE:
                hint = "another process listens on that port: stop it, or choose another --metrics-port / METRICS PORT"
            elif exc.errno in (errno.EACCES, errno.EPERM):
                hint = "ports below 1024 need privileges: choose a port >= 1024"
            else:
                hint = "check the --metrics-address / METRICS ADDRESS (an address of this host) and the port"
            raise EndpointError(f"cannot serve metrics on {where}: {reason}; {hint}") from exc
        server.set_app(make_wsgi_app(registry))
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.5},
            name=f"metrics-endpoint:{server.server_address[1]}",
            daemon=True,  # a forced exit must not wait for it; stop() joins it
        )
        self._server, self._thread = server, thread
        self.name = f"metrics endpoint on {self.url}"
        thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving, close the socket, join the thread (within ``timeout`` seconds); never raises."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        # shutdown() waits for serve_forever() to notice (poll_interval at most): from a helper
        # thread, so that the deadline holds even if it takes longer.
        stopper = threading.Thread(target=server.shutdown, name=f"{thread.name}:stop", daemon=True)
        stopper.start()
        stopper.join(timeout)
        thread.join(max(0.0, timeout))
        server.server_close()
        self._server = None
        self._thread = None
        if thread.is_alive():
            logger.warning("the %s did not stop within %g seconds", self.name, timeout)

    def __enter__(self) -> MetricsEndpoint:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "serving" if self._server is not None else "stopped"
        return f"<MetricsEndpoint {self.url} {state}>"


class MultiprocessCleanup:
    """A process service for multiprocess mode: marks this process dead in the directory when it stops.

    ``prometheus_client.multiprocess.mark_process_dead`` removes the files of this process's
    ``livesum``/``liveall``/… gauges, so ``workers_running`` stops counting a process that exited.
    Counters and histograms keep their files: their totals survive the process, as they should.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.name = f"Prometheus multiprocess mode in {path}"

    def start(self, pool: WorkerPool | None = None) -> None:
        """Nothing to start: prometheus_client writes the values to the directory by itself."""

    def stop(self, timeout: float = 0.0) -> None:
        """Mark this process dead in the directory; never raises."""
        try:
            _multiprocess.mark_process_dead(os.getpid(), self.path)  # type: ignore[no-untyped-call]
        except Exception:
            logger.exception("marking process %d dead in %s failed", os.getpid(), self.path)


# -- what runworkers runs ---------------------------------------------------------------------------


def django_prometheus_export() -> str | None:
    """Where django-prometheus exports ``REGISTRY`` from this process, or ``None`` if it does not.

    django-prometheus starts ``prometheus_client.start_http_server`` in its ``AppConfig.ready()``
    when ``django_prometheus`` is installed and ``PROMETHEUS_METRICS_EXPORT_PORT`` (or
    ``PROMETHEUS_METRICS_EXPORT_PORT_RANGE``) is set (never under the autoreloader). That endpoint
    serves ``prometheus_client.REGISTRY``, where :func:`process_metrics` registers the workers'
    metrics: binding a second port would serve the same thing twice.
    """
    from django.apps import apps
    from django.conf import settings

    if not apps.is_installed("django_prometheus") or os.environ.get("RUN_MAIN") == "true":
        return None
    address = getattr(settings, "PROMETHEUS_METRICS_EXPORT_ADDRESS", "") or "*"
    port_range = getattr(settings, "PROMETHEUS_METRICS_EXPORT_PORT_RANGE", None)
    if port_range:
        return f"a port of PROMETHEUS_METRICS_EXPORT_PORT_RANGE on {address}"
    port = getattr(settings, "PROMETHEUS_METRICS_EXPORT_PORT", None)
    if port:
        return f"{_hostport(address, port)} (PROMETHEUS_METRICS_EXPORT_PORT)"
    return None


def parse_port(value: object, source: str) -> int:
    """A TCP port number (``0``: any free port) from an int or a command-line string; ``ValueError``."""
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise ValueError(f"{source} must be a port number from 0 to 65535 (0: any free port), got {value!r}")
    return value


def metrics_services(
    port: int | None,
    address: str,
    *,
    port_option: object = None,
    address_option: object = None,
    export: Callable[[], str | None] = django_prometheus_export,
) -> list[ProcessService]:
    """The services that expose this process's metrics (metrics being enabled).

    The command-line options (``--metrics-port``, ``--metrics-address``) override the settings
    (``METRICS`` ``PORT`` and ``ADDRESS``); no port at all means no endpoint. When django-prometheus
    already exports ``REGISTRY`` from this process (see :func:`django_prometheus_export`) no port
    is bound: its endpoint serves the workers' metrics. In multiprocess mode a
    :class:`MultiprocessCleanup` is added, endpoint or not. ``ValueError`` for a bad option.
    """
    if port_option is not None:
        port = parse_port(port_option, "--metrics-port")
    if address_option is not None:
        address = str(address_option)
    services: list[ProcessService] = []
    exported = export()
    if exported is not None:
        if port_option is not None:
            logger.warning(
                "--metrics-port %d is not bound: django-prometheus already serves the metrics of this process on %s",
                port,
                exported,
            )
        else:
            logger.info("metrics are served by django-prometheus on %s; runworkers binds no other port", exported)
    elif port is not None:
        services.append(MetricsEndpoint(port, address))
    path = multiprocess_dir()
    if path is not None:
        services.append(MultiprocessCleanup(path))
    return services
