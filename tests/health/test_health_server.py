"""The /livez and /readyz endpoint of runworkers, in process: a real socket and a real pool."""

from __future__ import annotations

import errno
import json
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from django_workers.core import Backoff, Worker, WorkerContext, WorkerPool
from django_workers.health_server import HealthServer
from tests.conftest import wait_for


class FnWorker(Worker):
    def __init__(self, name: str, fn: Callable[[WorkerContext], Any]) -> None:
        self.name = name
        self.fn = fn

    def run(self, ctx: WorkerContext) -> Any:
        return self.fn(ctx)


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


def get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


@pytest.fixture
def serve() -> Iterator[Callable[..., tuple[WorkerPool, HealthServer]]]:
    """Starts a HealthServer (port 0) for a pool; both are stopped at teardown."""
    running: list[tuple[WorkerPool, HealthServer]] = []

    def start(*workers: Worker, start_pool: bool = True, **pool_options: Any) -> tuple[WorkerPool, HealthServer]:
        pool = WorkerPool(restart_backoff=Backoff(initial=0), **pool_options)
        for worker in workers:
            pool.register(worker)
        server = HealthServer(0)
        server.start(pool)
        running.append((pool, server))
        if start_pool:
            pool.start()
        return pool, server

    yield start
    for pool, server in running:
        assert pool.stop(5.0) == []
        server.stop(5.0)


def url(server: HealthServer, path: str) -> str:
    return f"http://127.0.0.1:{server.port}{path}"


def test_livez_and_readyz_of_a_healthy_pool(serve: Callable[..., tuple[WorkerPool, HealthServer]]) -> None:
    pool, server = serve(FnWorker("a", wait_cancelled), FnWorker("b", wait_cancelled))
    assert server.port > 0
    assert server.name == f"health endpoint on http://127.0.0.1:{server.port} (/livez, /readyz)"
    wait_for(lambda: all(e.status == "running" for e in pool.executions().values()))
    status, body = get(url(server, "/livez"))
    assert status == 200
    assert body["status"] == "alive"
    assert (body["workers"], body["stopping"]) == (2, False)
    status, body = get(url(server, "/readyz"))
    assert (status, body) == (
        200,
        {
            "status": "healthy",
            "workers": {"a": "running", "b": "running"},
            "failing": {},
            "message": "a: running, b: running",
        },
    )


def test_readyz_is_503_before_the_pool_starts(serve: Callable[..., tuple[WorkerPool, HealthServer]]) -> None:
    _, server = serve(FnWorker("a", wait_cancelled), start_pool=False)
    status, body = get(url(server, "/readyz"))
    assert status == 503
    assert body == {
        "status": "unhealthy",
        "workers": {"a": "unknown"},
        "failing": {"a": "not started"},
        "message": "a: unknown",
    }
    assert get(url(server, "/livez"))[0] == 200


def test_readyz_is_503_once_a_worker_exhausted_its_attempts(
    serve: Callable[..., tuple[WorkerPool, HealthServer]],
) -> None:
    pool, server = serve(FnWorker("ok", wait_cancelled), FnWorker("bad", fail), max_executions_attempts=2)
    wait_for(lambda: pool.execution("bad").has_event("max execution attempts reached"))
    status, body = get(url(server, "/readyz"))
    assert status == 503
    assert body["status"] == "unhealthy"
    assert body["workers"] == {"ok": "running", "bad": "error"}
    assert body["failing"] == {"bad": "attempts exhausted"}
    assert body["message"] == "ok: running, bad: error"
    assert get(url(server, "/livez"))[0] == 200  # alive all the same: restarting the pod will not help


def test_readyz_is_503_while_a_worker_is_silent(serve: Callable[..., tuple[WorkerPool, HealthServer]]) -> None:
    gate = threading.Event()
    pool = WorkerPool(restart_backoff=Backoff(initial=0))
    pool.register(FnWorker("quiet", heartbeat_until(gate)), max_silence=0.2)
    server = HealthServer(0)
    server.start(pool)
    pool.start()
    try:
        wait_for(lambda: pool.execution("quiet").status == "running")
        assert get(url(server, "/readyz"))[0] == 200
        gate.set()
        wait_for(lambda: pool.execution("quiet").silent)
        status, body = get(url(server, "/readyz"))
        assert status == 503
        assert body["failing"] == {"quiet": "silent (no heartbeat for 0.2 seconds)"}
        assert body["message"] == "quiet: running (silent)"
    finally:
        pool.stop(5.0)
        server.stop(5.0)


def test_other_paths_are_404(serve: Callable[..., tuple[WorkerPool, HealthServer]]) -> None:
    _, server = serve()
    status, body = get(url(server, "/metrics"))
    assert status == 404
    assert body["status"] == "error"
    assert get(url(server, "/readyz/?verbose=1"))[0] == 200  # a trailing slash and a query are fine


def test_a_port_in_use_fails_the_start_with_a_clear_message() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = HealthServer(port)
        with pytest.raises(
            OSError, match=rf"^the health endpoint cannot listen on http://127.0.0.1:{port}: "
        ) as raised:
            server.start(WorkerPool())
        assert raised.value.errno == errno.EADDRINUSE
        server.stop(1.0)  # nothing to stop: no error


def test_stop_joins_the_thread_and_closes_the_socket() -> None:
    server = HealthServer(0)
    server.start(WorkerPool())
    port = server.port
    assert [t.name for t in threading.enumerate()].count("runworkers:health") == 1
    server.stop(5.0)
    assert "runworkers:health" not in [t.name for t in threading.enumerate()]
    with socket.socket() as probe, pytest.raises(ConnectionRefusedError):
        probe.connect(("127.0.0.1", port))


def test_a_silent_client_does_not_block_other_probes_for_ever(
    serve: Callable[..., tuple[WorkerPool, HealthServer]],
) -> None:
    _, server = serve()
    with socket.create_connection(("127.0.0.1", server.port)):  # connects, sends nothing
        assert get(url(server, "/livez"))[0] == 200  # answered once the silent client timed out


def test_ipv6_addresses_are_served_when_the_host_has_ipv6() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this host")
    server = HealthServer(0, "::1")
    try:
        server.start(WorkerPool())
    except OSError as exc:
        pytest.skip(f"cannot bind ::1 here: {exc}")
    try:
        assert server.name.startswith("health endpoint on http://[::1]:")
        assert get(f"http://[::1]:{server.port}/livez")[0] == 200
    finally:
        server.stop(5.0)
