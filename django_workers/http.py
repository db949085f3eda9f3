"""One small HTTP server for a process that runs a pool: ``/metrics``, ``/livez``, ``/readyz``.

For worker pods, which have no web server. :class:`HttpServer` is a process service
(:class:`~django_workers.runtime.ProcessService`) that serves, from threads of its own:

- ``GET /metrics`` (when given a registry): the Prometheus exposition of that registry, in the
  format the scraper asks for (``Accept``, as prometheus_client's own server chooses it), gzipped
  when it accepts gzip, restricted to ``?name[]=...`` when asked;
- ``GET /livez`` (``health=True``): 200 ``{"status": "alive", ...}`` while the process and its
  main thread are alive (the answer comes from the process, and reading the pool's state did not
  block);
- ``GET /readyz`` (``health=True``): the health of the process's pool
  (:func:`~django_workers.health.reports.pool_report`, the one health rule), 200 when healthy,
  503 when not, with :meth:`~django_workers.health.reports.HealthReport.as_json` as the body;
- 404 with a JSON body naming the paths it serves, for anything else.

A trailing slash and a query string are fine (``/readyz/?verbose=1``). It never touches the
database. One port serves what it is given: ``--metrics-port`` and ``--health-port`` on the same
port are one server.

:func:`django_prometheus_export` says whether django-prometheus already serves this process's
metrics (then ``runworkers`` binds no metrics port). Ports are parsed by
:func:`django_workers.settings.values.parse_port`, the one port parser.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import json
import logging
import os
import socket
import socketserver
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from django.apps import apps
from django.conf import settings

from .core.context import LOGGER_NAME
from .core.pool import WorkerPool
from .health.reports import pool_report

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

__all__ = [
    "DEFAULT_ADDRESS",
    "BindError",
    "HttpServer",
    "django_prometheus_export",
]

logger = logging.getLogger(LOGGER_NAME)

#: The address a server binds by default: only this host (a sidecar, a node agent or an exec probe).
DEFAULT_ADDRESS = "127.0.0.1"

#: A client that sends nothing (or reads nothing) for this many seconds is dropped (Prometheus's
#: default scrape time-out).
CLIENT_TIMEOUT = 10.0

#: How often the serving thread looks at its stop signal while no connection comes.
_POLL_INTERVAL = 0.2


def django_prometheus_export() -> str | None:
    """Where django-prometheus exports ``REGISTRY`` from this process, or ``None`` if it does not.

    django-prometheus starts ``prometheus_client.start_http_server`` in its ``AppConfig.ready()``
    when ``django_prometheus`` is installed and ``PROMETHEUS_METRICS_EXPORT_PORT`` (or
    ``PROMETHEUS_METRICS_EXPORT_PORT_RANGE``) is set (never under the autoreloader). That endpoint
    serves ``prometheus_client.REGISTRY``, where the workers' metrics are registered: binding a
    second port would serve the same thing twice.
    """
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


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class BindError(OSError):
    """A server could not listen on its address: port in use, privileged port, bad address.

    Its message says what to change; ``errno`` is the one of the underlying error.
    """


# -- the server --------------------------------------------------------------------------------------


class _Server(HTTPServer):
    """The listening socket (IPv4 or IPv6 by the address); one thread per connection.

    The request threads are the server's own (not ``ThreadingMixIn``'s, whose ``server_close()``
    joins them without a deadline): :meth:`join_requests` waits for them within a time-out.
    """

    def __init__(self, address: tuple[str, int], family: socket.AddressFamily, owner: HttpServer) -> None:
        self.address_family = family
        self.owner = owner
        #: The threads answering a connection, with their connection.
        self.requests: dict[threading.Thread, socket.socket] = {}
        self.requests_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        """Bind, without the reverse DNS lookup that ``HTTPServer.server_bind`` does."""
        socketserver.TCPServer.server_bind(self)
        host, port = self.socket.getsockname()[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Answer the connection in a thread of its own: a slow client delays nobody else."""
        thread = threading.Thread(
            target=self._answer,
            args=(request, client_address),
            name=f"{self.owner.thread_name}:request",
            daemon=True,  # a forced exit must not wait for a client; stop() joins them
        )
        with self.requests_lock:
            self.requests[thread] = request
        thread.start()

    def _answer(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)
            with self.requests_lock:
                self.requests.pop(threading.current_thread(), None)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away or timed out: logged at DEBUG (``socketserver`` prints to stderr)."""
        logger.debug("%s: a request from %s failed", self.owner.name, client_address, exc_info=True)

    def join_requests(self, deadline: float) -> int:
        """Wait for the request threads until ``deadline`` (monotonic), then drop the connections left.

        Returns how many were dropped: their threads end at once, their socket being shut down.
        """
        with self.requests_lock:
            running = list(self.requests)
        for thread in running:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self.requests_lock:
            left = [connection for thread, connection in self.requests.items() if thread.is_alive()]
        for connection in left:
            with contextlib.suppress(OSError):  # closed by its thread meanwhile
                connection.shutdown(socket.SHUT_RDWR)
        return len(left)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = CLIENT_TIMEOUT
    protocol_version = "HTTP/1.0"  # one request per connection: no idle keep-alive threads
    server_version = "django-worker-pool"
    error_content_type = "application/json"
    error_message_format = '{"status": "error", "code": %(code)d, "message": "%(message)s"}'

    def do_GET(self) -> None:
        """Route to ``/metrics``, ``/livez`` or ``/readyz``; 404 for anything else."""
        owner = self.server.owner
        url = urlsplit(self.path)
        path = url.path.rstrip("/") or "/"
        if path not in owner.paths:
            served = ", ".join(owner.paths)
            self._send_json(HTTPStatus.NOT_FOUND, {"status": "error", "message": f"not found: try {served}"})
            return
        try:
            if path == "/metrics":
                self._send_metrics(url.query)
                return
            status, body = owner.livez() if path == "/livez" else owner.readyz()
        except Exception as exc:
            logger.exception("the %s failed to answer %s", owner.name, self.path)
            status, body = HTTPStatus.SERVICE_UNAVAILABLE, {"status": "error", "message": type(exc).__name__}
        self._send_json(status, body)

    def _send_metrics(self, query: str) -> None:
        from prometheus_client.exposition import choose_encoder, gzip_accepted  # noqa: PLC0415 - optional dependency: prometheus-client

        registry = self.server.owner.metrics
        assert registry is not None
        names = parse_qs(query).get("name[]")
        encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
        payload = encoder(registry.restricted_registry(names) if names else registry)
        headers = {"Content-Type": content_type}
        if gzip_accepted(self.headers.get("Accept-Encoding", "")):
            payload = gzip.compress(payload)
            headers["Content-Encoding"] = "gzip"
        self._send(HTTPStatus.OK, payload, headers)

    def _send_json(self, status: HTTPStatus, body: dict[str, Any]) -> None:
        self._send(status, json.dumps(body).encode(), {"Content-Type": "application/json", "Cache-Control": "no-store"})

    def _send(self, status: HTTPStatus, payload: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        """Probes and scrapes come every few seconds: log them at DEBUG only."""
        logger.debug("%s: %s - %s", self.server.owner.name, self.address_string(), format % args)


class HttpServer:
    """A process service serving ``/metrics``, ``/livez`` and ``/readyz`` on one port.

    ``HttpServer(port, address="127.0.0.1", *, metrics=None, health=False)``:

    - ``metrics``: a ``prometheus_client`` registry to serve on ``/metrics``
      (:func:`~django_workers.observability.exposition.exposition_registry`, say); ``None``: no
      ``/metrics``.
    - ``health``: serve ``/livez`` and ``/readyz`` for the pool given to :meth:`start`.
    - ``port`` ``0`` binds any free port: :attr:`port` is the bound one once started. ``address``
      chooses IPv4 or IPv6 (``"::1"``, ``"::"``); ``""`` means every interface.

    :meth:`start` binds and serves from a thread of its own (one more per connection, each
    dropped after :data:`CLIENT_TIMEOUT` seconds of silence), and raises :class:`BindError` with a
    readable message when it cannot bind. :meth:`stop` stops accepting, closes the socket and
    joins the threads within its time-out (connections still open then are dropped); it never
    raises. :attr:`name` (logged by
    ``runworkers``) and :attr:`url` say where it listens.
    """

    def __init__(
        self,
        port: int,
        address: str = DEFAULT_ADDRESS,
        *,
        metrics: CollectorRegistry | None = None,
        health: bool = False,
    ) -> None:
        if metrics is None and not health:
            raise ValueError("an HttpServer serves /metrics (metrics=<a registry>), /livez and /readyz (health=True)")
        self.address = address
        self.metrics = metrics
        self.health = health
        #: The paths it serves, in this order.
        self.paths: tuple[str, ...] = (("/metrics",) if metrics is not None else ()) + (
            ("/livez", "/readyz") if health else ()
        )
        self._port = port
        self._pool: WorkerPool | None = None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._started_at = 0.0
        #: Shown in the logs of ``runworkers`` (with the port actually bound, once started).
        self.name = self._name()

    def _name(self) -> str:
        return f"HTTP server on {self.url} ({', '.join(self.paths)})"

    @property
    def port(self) -> int:
        """The port listened on: the one actually bound once started (also after a stop)."""
        return self._port

    @property
    def url(self) -> str:
        """``http://host:port``, without a path (``"0.0.0.0"`` shown for every interface)."""
        return f"http://{_hostport(self.address or '0.0.0.0', self._port)}"

    @property
    def thread_name(self) -> str:
        """The name of the serving thread (request threads add ``:request``)."""
        return f"http-server:{self._port}"

    # -- ProcessService ------------------------------------------------------------------------

    def start(self, pool: WorkerPool | None = None) -> None:
        """Bind and serve; :class:`BindError` when the address cannot be bound.

        ``pool`` is needed with ``health=True`` (it is what ``/livez`` and ``/readyz`` read).
        """
        if self._server is not None:
            raise RuntimeError(f"the {self.name} is already started")
        if self.health and pool is None:
            raise ValueError(f"the {self.name} serves /livez and /readyz: start(pool) needs the pool")
        server = self._bind()
        server.timeout = _POLL_INTERVAL
        self._port = server.server_port
        self.name = self._name()
        self._pool = pool
        self._server = server
        self._stopping = threading.Event()
        self._started_at = time.monotonic()
        self._thread = threading.Thread(
            target=self._serve,
            args=(server, self._stopping),
            name=self.thread_name,
            daemon=True,  # a forced exit must not wait for it; stop() joins it
        )
        self._thread.start()

    def _bind(self) -> _Server:
        where = _hostport(self.address or "*", self._port)
        try:
            infos = socket.getaddrinfo(
                self.address or None, self._port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )
            family, _, _, _, sockaddr = infos[0]
            return _Server((str(sockaddr[0]), self._port), family, self)
        except OSError as exc:
            raise self._bind_error(where, exc) from exc

    def _bind_error(self, where: str, exc: OSError) -> BindError:
        reason = exc.strerror or str(exc)
        if exc.errno == errno.EADDRINUSE:
            ports = []
            if self.metrics is not None:
                ports.append("--metrics-port or WORKERS['METRICS']['PORT']")
            if self.health:
                ports.append("--health-port or WORKERS['HEALTH']['PORT']")
            hint = f"another process listens on that port: stop it, or choose another port ({'; '.join(ports)})"
        elif exc.errno in (errno.EACCES, errno.EPERM):
            hint = "ports below 1024 need privileges: choose a port >= 1024"
        else:
            addresses = []
            if self.metrics is not None:
                addresses.append("--metrics-address or WORKERS['METRICS']['ADDRESS']")
            if self.health:
                addresses.append("WORKERS['HEALTH']['ADDRESS']")
            hint = f"check the address ({'; '.join(addresses)}): an address of this host, and the port"
        error = BindError(f"cannot serve {', '.join(self.paths)} on {where}: {reason}; {hint}")
        error.errno = exc.errno
        return error

    def _serve(self, server: _Server, stopping: threading.Event) -> None:
        while not stopping.is_set():
            try:
                server.handle_request()  # accepts one connection (its thread answers), or times out
            except OSError:
                if not stopping.is_set():
                    raise

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, close the socket, join the threads (within ``timeout`` seconds); never raises."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        deadline = time.monotonic() + timeout
        self._stopping.set()
        thread.join(max(0.0, deadline - time.monotonic()))
        server.server_close()
        dropped = server.join_requests(deadline)
        self._server = self._thread = self._pool = None
        if thread.is_alive():
            logger.warning("the %s did not stop within %g seconds", self.name, timeout)
        if dropped:
            logger.warning("the %s dropped %d connection(s) still open after %g seconds", self.name, dropped, timeout)

    # -- the answers ---------------------------------------------------------------------------

    def livez(self) -> tuple[HTTPStatus, dict[str, Any]]:
        """200 while the main thread lives and the pool's state can be read."""
        pool = self._pool
        assert pool is not None
        main_alive = threading.main_thread().is_alive()
        executions = pool.executions()  # takes the pool's lock: a deadlock makes the probe time out
        body = {
            "status": "alive" if main_alive else "dead",
            "pid": os.getpid(),
            "uptime": round(time.monotonic() - self._started_at, 3),
            "workers": len(executions),
            "stopping": pool.stopping,
        }
        return (HTTPStatus.OK if main_alive else HTTPStatus.SERVICE_UNAVAILABLE), body

    def readyz(self) -> tuple[HTTPStatus, dict[str, Any]]:
        """The pool's health report: 200 healthy, 503 unhealthy."""
        pool = self._pool
        assert pool is not None
        report = pool_report(pool)
        return (HTTPStatus.OK if report.healthy else HTTPStatus.SERVICE_UNAVAILABLE), report.as_json()

    def __enter__(self) -> HttpServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "serving" if self._server is not None else "stopped"
        return f"<HttpServer {self.url} ({', '.join(self.paths)}) {state}>"
