"""Health of a real ``runworkers`` subprocess: its /livez and /readyz, checkworkers, and the web check.

The subprocess runs the test project on this session's test database (tests/health/conftest.py);
the test synchronises on its log lines and polls its endpoints with deadlines.
"""

from __future__ import annotations

import signal
import socket
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.test import Client, override_settings

from tests.health.conftest import SETTINGS, WORKERS_CHECK, Completed, H, ready
from tests.support import RunworkersProcess, StartRunworkers, free_port, get_json, run_command, wait_for

pytestmark = pytest.mark.slow

ENDPOINT = r"started HTTP server on (http://127\.0\.0\.1:(\d+)) \(/livez, /readyz\)"


def endpoint(process: RunworkersProcess) -> str:
    match = process.expect(ENDPOINT)
    assert match is not None
    return match.group(1)


def poll(url: str, status: int, timeout: float = 15.0) -> dict[str, Any]:
    """GET ``url`` until it answers ``status``; its body."""
    answers: list[tuple[int, dict[str, Any]]] = []
    wait_for(
        lambda: answers.append(get_json(url)) or answers[-1][0] == status,
        timeout,
        interval=0.05,
        what=f"{url} answering {status}",
    )
    return answers[-1][1]


def test_livez_and_readyz_of_a_real_runworkers(runworkers: StartRunworkers, tmp_path: Path) -> None:
    trigger = tmp_path / "fail"
    workers = {
        "MAX_EXECUTIONS_ATTEMPTS": 2,
        "RESTART_BACKOFF": {"INITIAL": 0.1, "MAXIMUM": 0.1},
        "WORKERS": [f"{H}.Steady", {"CLASS": f"{H}.FailsOnTrigger", "OPTIONS": {"trigger": str(trigger)}}],
    }
    process = runworkers("--health-port", "0", workers=workers)
    try:
        base = endpoint(process)
        process.expect(r"fails-on-trigger attempt 1 is running")
        body = poll(f"{base}/readyz", 200)
        assert body == {
            "status": "healthy",
            "workers": {"steady": "running", "fails-on-trigger": "running"},
            "failing": {},
            "message": "steady: running, fails-on-trigger: running",
        }
        status, live = get_json(f"{base}/livez")
        assert (status, live["status"], live["pid"], live["workers"]) == (200, "alive", process.pid, 2)

        trigger.touch()
        process.expect(r"max execution attempts reached")
        body = poll(f"{base}/readyz", 503)
        assert body["status"] == "unhealthy"
        assert body["failing"] == {"fails-on-trigger": "attempts exhausted"}
        assert body["message"] == "steady: running, fails-on-trigger: error"
        assert get_json(f"{base}/livez")[0] == 200

        process.send(signal.SIGTERM)
        assert process.wait() == 0
        with socket.socket() as probe, pytest.raises(ConnectionRefusedError):
            probe.connect(("127.0.0.1", int(base.rsplit(":", 1)[1])))
    finally:
        process.kill()


def test_a_silent_worker_makes_readyz_503(runworkers: StartRunworkers, tmp_path: Path) -> None:
    trigger = tmp_path / "quiet"
    workers = {
        "HEALTH": {"PORT": 0},  # the settings key, this time
        "WORKERS": [
            {"CLASS": f"{H}.SilentOnTrigger", "OPTIONS": {"trigger": str(trigger)}, "MAX_SILENCE": 0.5},
        ],
    }
    process = runworkers(workers=workers)
    try:
        base = endpoint(process)
        process.expect(r"silent-on-trigger attempt 1 is running")
        poll(f"{base}/readyz", 200)
        trigger.touch()
        process.expect(r"no heartbeat for 0\.5 seconds")
        body = poll(f"{base}/readyz", 503)
        assert body["workers"] == {"silent-on-trigger": "running"}
        assert body["failing"] == {"silent-on-trigger": "silent (no heartbeat for 0.5 seconds)"}
        assert body["message"] == "silent-on-trigger: running (silent)"
    finally:
        process.kill()


def test_a_port_in_use_makes_runworkers_exit_with_1(runworkers: StartRunworkers) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = runworkers("--health-port", str(port), workers={"WORKERS": [f"{H}.Steady"]})
        try:
            assert process.wait() == 1
        finally:
            process.kill()
    assert (
        f"CommandError: cannot start runworkers: cannot serve /livez, /readyz on "
        f"127.0.0.1:{port}: Address already in use" in process.stderr
    )
    assert "steady is running" not in process.stderr  # the pool never started
    assert "Traceback" not in process.stderr


def test_an_invalid_health_port_is_a_configuration_error(runworkers: StartRunworkers) -> None:
    process = runworkers("--health-port", "http", workers={"WORKERS": [f"{H}.Steady"]})
    try:
        assert process.wait() == 1
    finally:
        process.kill()
    assert "--health-port must be a TCP port number from 0 to 65535 (0: any free port), got 'http'" in process.stderr


def test_one_port_given_to_metrics_and_health_serves_both(runworkers: StartRunworkers) -> None:
    port = free_port()
    process = runworkers("--metrics-port", str(port), "--health-port", str(port), workers={"WORKERS": [f"{H}.Steady"]})
    try:
        process.expect(rf"started HTTP server on http://127\.0\.0\.1:{port} \(/metrics, /livez, /readyz\)")
        process.expect(r"steady is running")
        base = f"http://127.0.0.1:{port}"
        assert poll(f"{base}/readyz", 200)["workers"] == {"steady": "running"}
        with urllib.request.urlopen(f"{base}/metrics", timeout=5) as response:
            assert b'worker_executions_total{status="started",worker="steady"}' in response.read()
        process.send(signal.SIGTERM)
        assert process.wait() == 0
        assert process.stderr.count("started HTTP server") == 1  # one server, one port
    finally:
        process.kill()


# -- history: the web check and checkworkers read what a real runworkers recorded ---------------------

HISTORY = {"ENABLED": True, "HEARTBEAT_INTERVAL": 0.5}


def history_workers(trigger: Path) -> dict[str, Any]:
    return {
        "HISTORY": HISTORY,
        "MAX_EXECUTIONS_ATTEMPTS": 2,
        "RESTART_BACKOFF": {"INITIAL": 0.1, "MAXIMUM": 0.1},
        "WORKERS": [f"{H}.Steady", {"CLASS": f"{H}.FailsOnTrigger", "OPTIONS": {"trigger": str(trigger)}}],
    }


def poll_ready(client: Client, status: int, timeout: float = 20.0) -> dict[str, str]:
    """GET the test project's readiness URL until it answers ``status``; its body."""
    answers: list[tuple[int, dict[str, str]]] = []
    wait_for(
        lambda: answers.append(ready(client)) or answers[-1][0] == status,
        timeout,
        interval=0.05,
        what=f"/health/ready/ answering {status} (last answer: {answers[-1:]})",
    )
    return answers[-1][1]


def test_the_web_check_follows_a_real_runworkers(runworkers: StartRunworkers, client: Client, tmp_path: Path) -> None:
    trigger = tmp_path / "fail"
    process = runworkers(workers=history_workers(trigger))
    node = f"{socket.gethostname()}:{process.pid}"
    try:
        with override_settings(WORKERS={"HISTORY": HISTORY, "WORKERS": []}):
            process.expect(r"fails-on-trigger attempt 1 is running")
            assert poll_ready(client, 200) == {"Database(alias='default')": "OK", WORKERS_CHECK: "OK"}

            trigger.touch()
            process.expect(r"max execution attempts reached")
            body = poll_ready(client, 500)
            assert body[WORKERS_CHECK] == (
                f"Unavailable: failing workers: fails-on-trigger on {node} (attempts exhausted, attempt 2/2)"
            )
    finally:
        process.kill()


def test_the_web_check_fails_once_a_killed_runworkers_goes_stale(
    runworkers: StartRunworkers, client: Client, tmp_path: Path
) -> None:
    process = runworkers(workers=history_workers(tmp_path / "never"))
    node = f"{socket.gethostname()}:{process.pid}"
    try:
        with override_settings(WORKERS={"HISTORY": HISTORY, "WORKERS": []}):
            process.expect(r"steady is running")
            poll_ready(client, 200)
            process.send(signal.SIGKILL)
            assert process.wait() == -signal.SIGKILL
            body = poll_ready(client, 500)  # within 1.5 s: three heartbeat intervals
            assert body[WORKERS_CHECK].startswith(
                f"Unavailable: no live runworkers process: the last heartbeat, of {node}, is "
            )
            assert body[WORKERS_CHECK].endswith("old (stale after 1.5 s)")
    finally:
        process.kill()


def test_checkworkers_exit_codes_against_a_real_runworkers(
    runworkers: StartRunworkers, checkworkers: Callable[..., Completed], tmp_path: Path
) -> None:
    trigger = tmp_path / "fail"
    workers = history_workers(trigger)
    process = runworkers("--health-port", "0", workers=workers)
    node = f"{socket.gethostname()}:{process.pid}"
    try:
        readyz = endpoint(process) + "/readyz"
        process.expect(r"fails-on-trigger attempt 1 is running")
        results: list[Completed] = []
        wait_for(
            lambda: results.append(checkworkers(workers=workers)) or results[-1].returncode == 0,
            30,
            interval=0.05,
            what="checkworkers exiting with 0",
        )
        healthy = results[-1]
        assert healthy.stdout.splitlines()[:2] == [
            f"{node}  steady            running   1/2          ok",
            f"{node}  fails-on-trigger  running   1/2          ok",
        ]
        assert healthy.stdout.splitlines()[2].startswith(f"healthy: {node} (steady: running, fails-on-trigger: running")
        assert checkworkers("--node", workers=workers).returncode == 0
        assert checkworkers("--node", "another-host", workers=workers).returncode == 1
        assert checkworkers("--url", readyz, workers={"WORKERS": []}).returncode == 0

        trigger.touch()
        process.expect(r"max execution attempts reached")
        results.clear()
        wait_for(
            lambda: results.append(checkworkers(workers=workers)) or results[-1].returncode == 1,
            30,
            interval=0.05,
            what="checkworkers exiting with 1",
        )
        assert results[-1].stdout.splitlines()[-1] == (
            f"unhealthy: failing workers: fails-on-trigger on {node} (attempts exhausted, attempt 2/2)"
        )
        via_url = checkworkers("--url", readyz, workers={"WORKERS": []})
        assert via_url.returncode == 1
        assert via_url.stdout.splitlines()[-1] == "unhealthy: steady: running, fails-on-trigger: error"

        # Cannot tell: an unreachable database, the history off without --url, runworkers gone.
        unreachable = checkworkers("--database", "unreachable", workers=workers)
        assert (unreachable.returncode, unreachable.stdout) == (2, "")
        assert unreachable.stderr.startswith(
            "cannot read the worker history in database 'unreachable': OperationalError: "
        )
        history_off = checkworkers(workers={"WORKERS": []})
        assert history_off.returncode == 2
        assert "the history is disabled" in history_off.stderr
        process.kill()
        gone = checkworkers("--url", readyz, workers={"WORKERS": []})
        assert gone.returncode == 2
        assert gone.stderr.startswith(f"cannot tell: no answer from {readyz}: ")
    finally:
        process.kill()


def test_an_exhausted_worker_paused_by_an_operator_is_healthy_everywhere(
    runworkers: StartRunworkers, checkworkers: Callable[..., Completed], tmp_path: Path
) -> None:
    """Exhausted: unhealthy to /readyz and checkworkers; paused with controlworkers: healthy, and they say paused."""
    trigger = tmp_path / "fail"
    trigger.touch()
    workers = history_workers(trigger)
    process = runworkers("--health-port", "0", workers=workers)
    node = f"{socket.gethostname()}:{process.pid}"
    try:
        readyz = endpoint(process) + "/readyz"
        process.expect(r"max execution attempts reached")
        assert poll(readyz, 503)["failing"] == {"fails-on-trigger": "attempts exhausted"}

        paused = run_command(
            "controlworkers", "pause", "fails-on-trigger", tmp_path=tmp_path, settings=SETTINGS, workers=workers
        )
        assert paused.returncode == 0, paused.stderr
        process.expect(r"\[fails-on-trigger [0-9a-f-]+\] execution paused until resumed")

        body = poll(readyz, 200)
        assert body["message"] == "steady: running, fails-on-trigger: paused"
        assert body["failing"] == {}
        results: list[Completed] = []
        wait_for(
            lambda: results.append(checkworkers(workers=workers)) or results[-1].returncode == 0,
            30,
            interval=0.05,
            what="checkworkers exiting with 0 once the pause is stored",
        )
        assert f"{node}  fails-on-trigger  paused" in results[-1].stdout
        assert "fails-on-trigger: paused" in results[-1].stdout.splitlines()[-1]

        process.send(signal.SIGTERM)
        assert process.wait() == 0
    finally:
        process.kill()
