"""The health endpoint of a ``runworkers`` process: HTTP ``/livez`` and ``/readyz`` on a port of its own.

For worker pods, which have no web server: ``runworkers --health-port 8081`` (or
``WORKERS["HEALTH"]["PORT"]``) serves

- ``GET /livez``: 200 ``{"status": "alive", ...}`` while the process and its main loop are alive
  (the answer comes from the process, and reading the pool's state did not block);
- ``GET /readyz``: :class:`~django_workers.probe.WorkerProbe` on the process's pool, 200 when
  healthy, 503 when not (a worker unknown, exhausted or silent), with the JSON body
  ``{"status": "healthy"|"unhealthy", "workers": {name: status}, "message": "..."}``.

One thread serves the requests one at a time (a probe is tiny); it is started by
:meth:`HealthServer.start` and stopped and joined by :meth:`HealthServer.stop`, as a
:class:`~django_workers.services.ProcessService` of ``runworkers``. It never touches the database.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import socketserver
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, ClassVar

from .core.context import LOGGER_NAME
from .core.pool import WorkerPool
from .readiness import pool_report

__all__ = ["HealthServer"]

logger = logging.getLogger(LOGGER_NAME)

#: How often the serving thread looks at its stop signal while no request comes.
_POLL_INTERVAL = 0.2


class _HealthHTTPServer(HTTPServer):
    """The listening socket (IPv4 or IPv6 by the address) and a link to its :class:`HealthServer`."""

    def __init__(self, address: tuple[str, int], owner: HealthServer) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.owner = owner
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        """Bind, without the reverse DNS lookup that ``HTTPServer.server_bind`` does."""
        socketserver.TCPServer.server_bind(self)
        host, port = self.socket.getsockname()[:2]
        self.server_name = str(host)
        self.server_port = int(port)


class _Handler(BaseHTTPRequestHandler):
    server: _HealthHTTPServer
    #: A client that sends nothing is dropped after this many seconds.
    timeout = 2.0
    protocol_version = "HTTP/1.0"
    server_version = "django-worker-pool"
    error_content_type = "application/json"
    error_message_format = '{"status": "error", "code": %(code)d, "message": "%(message)s"}'

    routes: ClassVar[dict[str, str]] = {"/livez": "livez", "/readyz": "readyz"}

    def do_GET(self) -> None:
        """Answer ``/livez`` and ``/readyz``; 404 for anything else."""
        route = self.routes.get(self.path.split("?", 1)[0].rstrip("/") or "/")
        if route is None:
            self._send(HTTPStatus.NOT_FOUND, {"status": "error", "message": "not found: try /livez or /readyz"})
            return
        try:
            status, body = getattr(self.server.owner, route)()
        except Exception as exc:
            logger.exception("the health endpoint failed to answer %s", self.path)
            status, body = HTTPStatus.SERVICE_UNAVAILABLE, {"status": "error", "message": type(exc).__name__}
        self._send(status, body)

    def _send(self, status: HTTPStatus, body: dict[str, Any]) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        """Probes come every few seconds: log them at DEBUG only."""
        logger.debug("health endpoint: %s - %s", self.address_string(), format % args)


class HealthServer:
    """A :class:`~django_workers.services.ProcessService` serving ``/livez`` and ``/readyz``.

    ``port`` 0 binds an ephemeral port (see :attr:`port` after :meth:`start`). Binding fails in
    :meth:`start` (``OSError``, e.g. the port is in use), which makes ``runworkers`` exit with 1.
    """

    def __init__(self, port: int, address: str = "127.0.0.1") -> None:
        self.address = address
        self.port = port
        self.name = f"health endpoint on {self._url()}"
        self._pool: WorkerPool | None = None
        self._server: _HealthHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._started_at = 0.0

    def _url(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"http://{host}:{self.port}"

    # -- ProcessService ------------------------------------------------------------------------

    def start(self, pool: WorkerPool) -> None:
        """Bind the port and start the serving thread (``OSError`` when the port cannot be bound)."""
        if self._thread is not None:
            raise RuntimeError(f"{self.name} is already started")
        try:
            server = _HealthHTTPServer((self.address, self.port), self)
        except OSError as exc:
            error = OSError(
                f"the health endpoint cannot listen on {self._url()}: {exc.strerror or exc} "
                "(choose another port with --health-port or WORKERS['HEALTH']['PORT'])"
            )
            error.errno = exc.errno
            raise error from exc
        server.timeout = _POLL_INTERVAL
        self.port = server.server_port
        self.name = f"health endpoint on {self._url()} (/livez, /readyz)"
        self._pool = pool
        self._server = server
        self._started_at = time.monotonic()
        self._thread = threading.Thread(target=self._serve, name="runworkers:health", daemon=True)
        self._thread.start()

    def stop(self, timeout: float) -> None:
        """Stop serving, join the thread (within ``timeout``) and close the socket."""
        self._stop.set()
        thread, server = self._thread, self._server
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                logger.warning("%s did not stop within %g seconds", self.name, timeout)
        if server is not None:
            server.server_close()

    def _serve(self) -> None:
        server = self._server
        assert server is not None
        while not self._stop.is_set():
            server.handle_request()  # returns after one request, or after server.timeout

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
        """:class:`WorkerProbe` on the pool: 200 healthy, 503 unhealthy."""
        pool = self._pool
        assert pool is not None
        report = pool_report(pool)
        body = {
            "status": report.state.value,
            "workers": {item.worker: item.status for item in report.workers},
            "failing": {item.worker: item.problem for item in report.workers if not item.healthy},
            "message": report.message,
        }
        return (HTTPStatus.OK if report.healthy else HTTPStatus.SERVICE_UNAVAILABLE), body

    def __repr__(self) -> str:
        return f"<HealthServer {self._url()}>"
