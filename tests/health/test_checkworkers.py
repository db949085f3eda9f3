"""``manage.py checkworkers``: exit 0 healthy, 1 unhealthy, 2 cannot tell; one line per worker and host."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.test import override_settings

from django_workers.core import Worker, WorkerContext, WorkerPool
from django_workers.http import HttpServer
from django_workers.models import ExecutionStatus, Node
from tests.support import free_port, wait_for

HISTORY_ON: dict[str, Any] = {"HISTORY": {"ENABLED": True}, "WORKERS": []}


def checkworkers(*args: str, workers: dict[str, Any] | None = HISTORY_ON) -> tuple[int, str, str]:
    stdout, stderr = StringIO(), StringIO()
    code = 0
    with override_settings(WORKERS=workers):
        try:
            call_command("checkworkers", *args, stdout=stdout, stderr=stderr)
        except SystemExit as exc:
            code = int(exc.code or 0)
    return code, stdout.getvalue(), stderr.getvalue()


@pytest.mark.django_db
def test_healthy_prints_one_line_per_worker_and_host(make_node: Callable[..., Node], make_execution: Any) -> None:
    a = make_node(hostname="host-a", workers=["alpha", "beta"])
    make_execution(a, "alpha")
    make_execution(a, "beta", attempt=2, status=ExecutionStatus.SUCCESS)
    b = make_node(hostname="host-b", workers=["alpha"])
    make_execution(b, "alpha", max_attempts=0)
    code, out, err = checkworkers()
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[:3] == [
        f"{a}  alpha  running   1/3          ok",
        f"{a}  beta   success   2/3          ok",
        f"{b}  alpha  running   1/unlimited  ok",
    ]
    assert lines[3].startswith(f"healthy: {a} (alpha: running, beta: success; heartbeat ")
    assert len(lines) == 4


@pytest.mark.django_db
def test_unhealthy_names_the_failing_workers(make_node: Callable[..., Node], make_execution: Any) -> None:
    node = make_node(workers=["alpha", "beta"])
    make_execution(node, "alpha")
    make_execution(node, "beta", attempt=3, status=ExecutionStatus.ERROR)
    code, out, err = checkworkers()
    assert (code, err) == (1, "")
    assert out.splitlines() == [
        f"{node}  alpha  running   1/3          ok",
        f"{node}  beta   error     3/3          FAILING: attempts exhausted",
        f"unhealthy: failing workers: beta on {node} (attempts exhausted, attempt 3/3)",
    ]


@pytest.mark.django_db
def test_no_live_node_is_unhealthy(make_node: Callable[..., Node], now: datetime) -> None:
    node = make_node(last_heartbeat=now - timedelta(minutes=10))
    code, out, _ = checkworkers()
    assert code == 1
    assert out.startswith(f"unhealthy: no live runworkers process: the last heartbeat, of {node}, is ")


@pytest.mark.django_db
def test_node_restricts_to_this_host_by_default(make_node: Callable[..., Node], now: datetime) -> None:
    make_node(hostname="elsewhere")
    assert checkworkers()[0] == 0
    code, out, _ = checkworkers("--node")
    assert code == 1
    assert f"no runworkers process on host {socket.gethostname()!r} has recorded itself" in out
    make_node(hostname=socket.gethostname())
    assert checkworkers("--node")[0] == 0
    assert checkworkers("--node", "elsewhere")[0] == 0
    assert checkworkers("--node", "nowhere")[0] == 1


@pytest.mark.django_db
def test_stale_after_is_an_option(make_node: Callable[..., Node], now: datetime) -> None:
    make_node(last_heartbeat=now - timedelta(seconds=20))
    assert checkworkers()[0] == 0  # within 3 x 10 s
    assert checkworkers("--stale-after", "5")[0] == 1


@pytest.mark.django_db
def test_quiet_verbosity_prints_only_what_cannot_be_told(make_node: Callable[..., Node]) -> None:
    make_node()
    assert checkworkers("-v", "0") == (0, "", "")


def test_history_disabled_cannot_tell() -> None:
    code, out, err = checkworkers(workers={"WORKERS": []})
    assert (code, out) == (2, "")
    assert err.strip() == (
        "cannot tell: the history is disabled (WORKERS['HISTORY']['ENABLED'] is False); enable the history, "
        "or ask runworkers itself (runworkers --health-port, checkworkers --url)"
    )


def test_an_invalid_history_section_cannot_tell() -> None:
    code, out, err = checkworkers(workers={"HISTORY": {"ENABLED": True, "DATABASE": 42}, "WORKERS": []})
    assert (code, out) == (2, "")
    assert err.startswith("cannot tell: ")


@pytest.mark.django_db
def test_invalid_worker_settings_do_not_hide_the_history(make_node: Callable[..., Node]) -> None:
    # Only WORKERS["HISTORY"] is read: the probe answers whatever else is wrong (the checks say that).
    make_node()
    invalid = {"HISTORY": {"ENABLED": True}, "WORKERS": [{"OPTIONS": {}}, "no.such.Worker"]}
    code, out, err = checkworkers(workers=invalid)
    assert (code, err) == (0, "")
    assert out.splitlines()[-1].startswith("healthy: ")


def test_an_unknown_database_cannot_tell() -> None:
    code, _, err = checkworkers("--database", "elsewhere")
    assert code == 2
    assert err.strip() == "cannot tell: 'elsewhere' is not a key of settings.DATABASES"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--stale-after", "soon"), "--stale-after must be a number of seconds > 0, got 'soon'"),
        (("--url", "http://127.0.0.1:1/readyz", "--timeout", "0"), "--timeout must be a number of seconds > 0"),
        (("--url", "http://127.0.0.1:1/readyz", "--node"), "--url asks a runworkers process directly"),
    ],
)
def test_usage_errors_exit_with_2(args: tuple[str, ...], message: str) -> None:
    with override_settings(WORKERS=HISTORY_ON), pytest.raises(CommandError, match=message) as raised:
        call_command("checkworkers", *args)
    assert raised.value.returncode == 2


# -- --url ------------------------------------------------------------------------------------------


class Waiting(Worker):
    def __init__(self, name: str) -> None:
        self.name = name

    def run(self, ctx: WorkerContext) -> None:
        while not ctx.sleep(60):
            pass


class Failing(Worker):
    name = "failing"

    def run(self, ctx: WorkerContext) -> None:
        raise RuntimeError("boom")


@pytest.fixture
def endpoint() -> Iterator[Callable[..., str]]:
    servers: list[tuple[WorkerPool, HttpServer]] = []

    def serve(*workers: Worker) -> str:
        pool = WorkerPool()
        for worker in workers:
            pool.register(worker)
        server = HttpServer(0, health=True)
        server.start(pool)
        servers.append((pool, server))
        pool.start()
        wait_for(lambda: all(e.status not in ("unknown", "deferred") for e in pool.executions().values()))
        return f"http://127.0.0.1:{server.port}/readyz"

    yield serve
    for pool, server in servers:
        pool.stop(5.0)
        server.stop(5.0)


def test_url_healthy(endpoint: Callable[..., str]) -> None:
    url = endpoint(Waiting("a"), Waiting("b"))
    assert checkworkers("--url", url, workers={"WORKERS": []}) == (
        0,
        "a  running   -            ok\nb  running   -            ok\nhealthy: a: running, b: running\n",
        "",
    )


def test_url_unhealthy(endpoint: Callable[..., str]) -> None:
    url = endpoint(Waiting("a"), Failing())
    code, out, _ = checkworkers("--url", url, workers={"WORKERS": []})
    assert code == 1
    assert out.splitlines() == [
        "a        running   -            ok",
        "failing  error     -            FAILING: attempts exhausted",
        "unhealthy: a: running, failing: error",
    ]


def test_url_unreachable_cannot_tell() -> None:
    port = free_port()
    code, out, err = checkworkers("--url", f"http://127.0.0.1:{port}/readyz", workers={"WORKERS": []})
    assert (code, out) == (2, "")
    assert err.startswith(f"cannot tell: no answer from http://127.0.0.1:{port}/readyz: ")
    assert "refused" in err


def test_url_that_is_not_a_health_endpoint_cannot_tell(endpoint: Callable[..., str]) -> None:
    url = endpoint(Waiting("a")).replace("/readyz", "/nothing")
    code, _, err = checkworkers("--url", url, workers={"WORKERS": []})
    assert code == 2
    assert err.startswith(f"cannot tell: {url} answered 404: ")
