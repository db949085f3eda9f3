"""The one HTTP server of a runworkers process (/metrics, /livez, /readyz), in process: real sockets, real pools."""

from __future__ import annotations

import errno
import gzip
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from django_workers.core import Backoff, Worker, WorkerContext, WorkerPool
from django_workers.http import BindError, HttpServer
from django_workers.metrics import WorkerMetrics
from django_workers.settings.values import parse_port
from tests.observability.conftest import scrape
from tests.support import FnWorker, get_json, get_raw, wait_for


def wait_cancelled(ctx: WorkerContext) -> None:
    while not ctx.sleep(60):
        pass


def heartbeat_until(gate: threading.Event) -> Callable[[WorkerContext], None]:
    def body(ctx: WorkerContext) -> None:
        while not ctx.sleep(0.02):
            if not gate.is_set():
                ctx.heartbeat()

    return body


def fail(ctx: WorkerContext) -> None:
    raise RuntimeError("boom")


@pytest.fixture
def serve() -> Iterator[Callable[..., tuple[WorkerPool, HttpServer]]]:
    """Starts an HttpServer (port 0, /livez and /readyz unless told) for a pool; both stopped at teardown."""
    running: list[tuple[WorkerPool, HttpServer]] = []

    def start(
        *workers: Worker,
        start_pool: bool = True,
        metrics: CollectorRegistry | None = None,
        health: bool = True,
        **pool_options: Any,
    ) -> tuple[WorkerPool, HttpServer]:
        pool = WorkerPool(restart_backoff=Backoff(initial=0), **pool_options)
        for worker in workers:
            pool.register(worker)
        server = HttpServer(0, metrics=metrics, health=health)
        server.start(pool)
        running.append((pool, server))
        if start_pool:
            pool.start()
        return pool, server

    yield start
    for pool, server in running:
        assert pool.stop(5.0) == []
        server.stop(5.0)


def url(server: HttpServer, path: str) -> str:
    return f"{server.url}{path}"


# -- /livez and /readyz --------------------------------------------------------------------------------


def test_livez_and_readyz_of_a_healthy_pool(serve: Callable[..., tuple[WorkerPool, HttpServer]]) -> None:
    pool, server = serve(FnWorker("a", wait_cancelled), FnWorker("b", wait_cancelled))
    assert server.port > 0
    assert server.url == f"http://127.0.0.1:{server.port}"
    assert server.name == f"HTTP server on http://127.0.0.1:{server.port} (/livez, /readyz)"
    wait_for(lambda: all(e.status == "running" for e in pool.executions().values()))
    status, body = get_json(url(server, "/livez"))
    assert status == 200
    assert body["status"] == "alive"
    assert (body["workers"], body["stopping"]) == (2, False)
    status, body = get_json(url(server, "/readyz"))
    assert (status, body) == (
        200,
        {
            "status": "healthy",
            "workers": {"a": "running", "b": "running"},
            "failing": {},
            "message": "a: running, b: running",
        },
    )


def test_readyz_is_503_before_the_pool_starts(serve: Callable[..., tuple[WorkerPool, HttpServer]]) -> None:
    _, server = serve(FnWorker("a", wait_cancelled), start_pool=False)
    status, body = get_json(url(server, "/readyz"))
    assert status == 503
    assert body == {
        "status": "unhealthy",
        "workers": {"a": "unknown"},
        "failing": {"a": "not started"},
        "message": "a: unknown",
    }
    assert get_json(url(server, "/livez"))[0] == 200


def test_readyz_is_503_once_a_worker_exhausted_its_attempts(
    serve: Callable[..., tuple[WorkerPool, HttpServer]],
) -> None:
    pool, server = serve(FnWorker("ok", wait_cancelled), FnWorker("bad", fail), max_executions_attempts=2)
    wait_for(lambda: pool.execution("bad").exhausted)
    status, body = get_json(url(server, "/readyz"))
    assert status == 503
    assert body["status"] == "unhealthy"
    assert body["workers"] == {"ok": "running", "bad": "error"}
    assert body["failing"] == {"bad": "attempts exhausted"}
    assert body["message"] == "ok: running, bad: error"
    assert get_json(url(server, "/livez"))[0] == 200  # alive all the same: restarting the pod will not help


def test_readyz_is_503_while_a_worker_is_silent(serve: Callable[..., tuple[WorkerPool, HttpServer]]) -> None:
    gate = threading.Event()
    pool = WorkerPool(restart_backoff=Backoff(initial=0))
    pool.register(FnWorker("quiet", heartbeat_until(gate)), max_silence=0.2)
    server = HttpServer(0, health=True)
    server.start(pool)
    pool.start()
    try:
        wait_for(lambda: pool.execution("quiet").status == "running")
        assert get_json(url(server, "/readyz"))[0] == 200
        gate.set()
        wait_for(lambda: pool.execution("quiet").silent)
        status, body = get_json(url(server, "/readyz"))
        assert status == 503
        assert body["failing"] == {"quiet": "silent (no heartbeat for 0.2 seconds)"}
        assert body["message"] == "quiet: running (silent)"
    finally:
        pool.stop(5.0)
        server.stop(5.0)


def test_other_paths_are_404_with_a_json_body_naming_the_served_ones(
    serve: Callable[..., tuple[WorkerPool, HttpServer]],
) -> None:
    _, server = serve()
    for path in ("/metrics", "/", "/anything"):
        status, body = get_json(url(server, path))
        assert status == 404, path
        assert body == {"status": "error", "message": "not found: try /livez, /readyz"}
    assert get_json(url(server, "/readyz/?verbose=1"))[0] == 200  # a trailing slash and a query are fine


def test_a_health_server_needs_the_pool() -> None:
    server = HttpServer(0, health=True)
    with pytest.raises(ValueError, match=r"start\(pool\) needs the pool"):
        server.start()
    with pytest.raises(ValueError, match=r"serves /metrics .*, /livez and /readyz"):
        HttpServer(0)


# -- /metrics -------------------------------------------------------------------------------------------


def test_metrics_are_served_from_a_registry_and_the_server_stops_cleanly() -> None:
    registry = CollectorRegistry()
    WorkerMetrics(namespace="endpoint_unit").register(registry)
    server = HttpServer(0, metrics=registry)
    server.start()
    try:
        assert server.port != 0
        assert server.name == f"HTTP server on http://127.0.0.1:{server.port} (/metrics)"
        samples = scrape(url(server, "/metrics"))
        assert ("endpoint_unit_worker_recorder_dropped_events_total", ()) in samples
        status, body = get_json(url(server, "/livez"))  # not served here
        assert (status, body["message"]) == (404, "not found: try /metrics")
    finally:
        server.stop(5.0)
    port = server.port  # the bound port, kept after the stop
    assert port != 0
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    server.stop(1.0)  # idempotent


def test_the_exposition_format_follows_the_accept_header_and_gzip_and_name_filters() -> None:
    registry = CollectorRegistry()
    metrics = WorkerMetrics(namespace="formats").register(registry)
    metrics.record_dropped(2)
    with HttpServer(0, metrics=registry) as server:
        status, headers, body = get_raw(url(server, "/metrics"))
        assert (status, headers["Content-Type"].split(";")[0]) == (200, "text/plain")
        assert b"# HELP formats_worker_executions_total Total number of workers executions" in body
        status, headers, body = get_raw(url(server, "/metrics"), Accept="application/openmetrics-text; version=1.0.0")
        assert headers["Content-Type"].startswith("application/openmetrics-text")
        assert body.endswith(b"# EOF\n")
        status, headers, body = get_raw(url(server, "/metrics"), Accept_Encoding="gzip")
        assert headers["Content-Encoding"] == "gzip"
        assert b"formats_worker_recorder_dropped_events_total 2.0" in gzip.decompress(body)
        status, headers, body = get_raw(url(server, "/metrics?name[]=formats_worker_recorder_dropped_events_total"))
        assert b"formats_worker_recorder_dropped_events_total 2.0" in body
        assert b"formats_worker_executions" not in body


def test_one_port_serves_metrics_and_health_together(serve: Callable[..., tuple[WorkerPool, HttpServer]]) -> None:
    registry = CollectorRegistry()
    metrics = WorkerMetrics(namespace="together").register(registry)
    pool, server = serve(FnWorker("a", wait_cancelled), metrics=registry, listeners=[metrics])
    assert server.paths == ("/metrics", "/livez", "/readyz")
    assert server.name == f"HTTP server on http://127.0.0.1:{server.port} (/metrics, /livez, /readyz)"
    wait_for(lambda: pool.execution("a").status == "running")
    assert get_json(url(server, "/readyz")) == (
        200,
        {"status": "healthy", "workers": {"a": "running"}, "failing": {}, "message": "a: running"},
    )
    assert get_json(url(server, "/livez"))[0] == 200
    samples = scrape(url(server, "/metrics"))
    assert samples[("together_workers_running", (("worker", "a"),))] == 1
    status, body = get_json(url(server, "/nothing"))
    assert (status, body["message"]) == (404, "not found: try /metrics, /livez, /readyz")


# -- binding, threads, stopping -------------------------------------------------------------------------


def test_a_port_in_use_fails_the_start_with_a_clear_message() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = HttpServer(port, health=True)
        with pytest.raises(BindError, match=rf"^cannot serve /livez, /readyz on 127\.0\.0\.1:{port}: ") as raised:
            server.start(WorkerPool())
        assert raised.value.errno == errno.EADDRINUSE
        assert isinstance(raised.value, OSError)
        assert "another process listens on that port" in str(raised.value)
        assert "--health-port or WORKERS['HEALTH']['PORT']" in str(raised.value)
        server.stop(1.0)  # nothing to stop: no error
        metrics_server = HttpServer(port, metrics=CollectorRegistry())
        with pytest.raises(
            BindError, match=rf"cannot serve /metrics on 127\.0\.0\.1:{port}: Address already in use"
        ) as raised:
            metrics_server.start()
        assert "--metrics-port or WORKERS['METRICS']['PORT']" in str(raised.value)
        assert "--health-port" not in str(raised.value)
    metrics_server.stop(1.0)  # nothing to stop


def test_an_address_of_another_host_fails_the_start_with_a_clear_message() -> None:
    server = HttpServer(0, "192.0.2.1", metrics=CollectorRegistry())  # TEST-NET-1: never this host's
    with pytest.raises(BindError, match=r"cannot serve /metrics on 192\.0\.2\.1:0: .*; check the address") as raised:
        server.start()
    assert "--metrics-address or WORKERS['METRICS']['ADDRESS']" in str(raised.value)
    assert raised.value.errno == errno.EADDRNOTAVAIL


def test_stop_joins_the_threads_and_closes_the_socket() -> None:
    server = HttpServer(0, health=True)
    server.start(WorkerPool())
    port = server.port
    assert [t.name for t in threading.enumerate()].count(f"http-server:{port}") == 1
    assert get_json(url(server, "/livez"))[0] == 200
    server.stop(5.0)
    assert not [t.name for t in threading.enumerate() if t.name.startswith(f"http-server:{port}")]
    with socket.socket() as probe, pytest.raises(ConnectionRefusedError):
        probe.connect(("127.0.0.1", port))


def test_a_silent_client_does_not_block_other_requests(serve: Callable[..., tuple[WorkerPool, HttpServer]]) -> None:
    _, server = serve()
    with socket.create_connection(("127.0.0.1", server.port)):  # connects, sends nothing
        began = time.monotonic()
        assert get_json(url(server, "/livez"))[0] == 200
        assert time.monotonic() - began < 2  # answered at once, by a thread of its own


def test_stop_keeps_its_deadline_with_a_silent_client_connected() -> None:
    server = HttpServer(0, health=True)
    server.start(WorkerPool())
    port = server.port
    with socket.create_connection(("127.0.0.1", port)) as client:
        wait_for(lambda: f"http-server:{port}:request" in [t.name for t in threading.enumerate()])
        began = time.monotonic()
        server.stop(0.5)  # the client's thread would wait up to CLIENT_TIMEOUT: stop does not
        assert time.monotonic() - began < 2
        # The connection was dropped: its thread is gone, and the client reads the end of the stream.
        wait_for(lambda: f"http-server:{port}:request" not in [t.name for t in threading.enumerate()], timeout=2)
        client.settimeout(5)
        assert client.recv(1) == b""


def test_ipv6_addresses_are_served_when_the_host_has_ipv6() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this host")
    server = HttpServer(0, "::1", health=True)
    try:
        server.start(WorkerPool())
    except OSError as exc:
        pytest.skip(f"cannot bind ::1 here: {exc}")
    try:
        assert server.name.startswith("HTTP server on http://[::1]:")
        assert get_json(f"http://[::1]:{server.port}/livez")[0] == 200
    finally:
        server.stop(5.0)


# -- the one port parser ---------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["", "-1", "65536", "9100.5", "http", "+9100", "9_100", True, 3.0, None])
def test_parse_port_refuses_what_is_not_a_port(value: object) -> None:
    with pytest.raises(ValueError, match="--metrics-port must be a TCP port number from 0 to 65535"):
        parse_port(value, "--metrics-port")


def test_parse_port() -> None:
    assert parse_port(" 9100 ", "x") == 9100
    assert parse_port("0", "x") == 0
    assert parse_port(0, "x") == 0
    assert parse_port(65535, "x") == 65535
    with pytest.raises(ValueError, match=r"^--health-port must be .*, got 'http'$"):
        parse_port("http", "--health-port")


def test_readyz_is_200_for_a_follower_and_503_for_a_stuck_singleton() -> None:
    gate = threading.Event()
    began = threading.Event()

    def stubborn(ctx: WorkerContext) -> None:
        began.set()
        gate.wait(30)  # ignores the loss of its lease

    pool = WorkerPool(restart_backoff=Backoff(initial=0))
    pool.register(FnWorker("relay", stubborn), singleton=True)
    server = HttpServer(0, health=True)
    server.start(pool)
    pool.start()
    try:
        status, body = get_json(url(server, "/readyz"))
        assert (status, body["message"]) == (200, "relay: standby"), "another replica holds the lease: healthy"
        pool.lead("relay", 3)
        assert began.wait(5)
        pool.stand_by("relay", "another node holds it")
        assert pool.mark_stuck("relay", 1.0)
        status, body = get_json(url(server, "/readyz"))
        assert status == 503
        assert body["failing"] == {"relay": "stuck (still running after losing its lease)"}
        assert body["message"] == "relay: running (stuck)"
        gate.set()
        wait_for(lambda: pool.execution("relay").status == "standby")
        assert get_json(url(server, "/readyz"))[0] == 200
    finally:
        gate.set()
        pool.stop(5.0)
        server.stop(5.0)
