"""Control of a real ``runworkers`` process: each path (submit(), the command, the admin) within the bound.

The subprocess runs on this session's test database (tests/control/conftest.py). On SQLite the
pickup polls every heartbeat interval (0.5 s here); on PostgreSQL the heartbeat is 30 s, so a
request applied in under a second can only have been woken by the NOTIFY. The test synchronises on
the lines the process logs and measures from the moment the request was committed.
"""

from __future__ import annotations

import re
import signal
import time
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client, override_settings
from django.urls import reverse

from django_workers.control import submit
from django_workers.models import ControlRequest, Execution, ExecutionEvent, Node
from tests.control.conftest import POSTGRESQL, W, control_workers
from tests.support import RunworkersProcess, StartRunworkers, wait_for

pytestmark = pytest.mark.slow

#: The heartbeat interval of the subprocesses, which is also the longest a request waits for its poll.
HEARTBEAT = 30.0 if POSTGRESQL else 0.5
#: What a test accepts between the commit of a request and its log line in the subprocess.
BOUND = 1.0 if POSTGRESQL else HEARTBEAT + 1.5


def start_node(runworkers: StartRunworkers, *workers: str, **top: Any) -> tuple[RunworkersProcess, Node]:
    """A runworkers process running ``workers``, once its node is recorded (and on PostgreSQL, listening)."""
    process = runworkers(workers=control_workers([f"{W}.{name}" for name in workers], heartbeat=HEARTBEAT, **top))
    process.expect(r"runworkers is running")
    if POSTGRESQL:
        process.expect(r"control requests: listening on PostgreSQL channel 'django_workers_control'")
    wait_for(lambda: Node.objects.filter(pid=process.pid).exists(), interval=0.05, what="the node row")
    return process, Node.objects.get(pid=process.pid)


def applied(process: RunworkersProcess, request: ControlRequest, began: float) -> float:
    """Wait for the process to log that it applied ``request``; the seconds since ``began``."""
    what = {"pause": "pause", "resume": "resume", "restart": "restart"}[request.action]
    process.expect(rf"\[{re.escape(request.worker)} [0-9a-f-]{{36}}\] control request #{request.pk}: {what} worker")
    latency = time.monotonic() - began
    print(f"\n{request.action} of {request.worker} via {request.requested_by}: picked up in {latency:.3f} s")
    assert latency < BOUND, f"picked up in {latency:.3f} s, more than {BOUND} s"
    return latency


def stored(message: str) -> bool:
    return ExecutionEvent.objects.filter(message=message).exists()


def test_submit_pauses_resumes_and_restarts_a_running_worker(runworkers: StartRunworkers, operator: User) -> None:
    process, _node = start_node(runworkers, "Sleeper")
    process.expect(r"sleeper is running")

    process.mark()
    began = time.monotonic()
    request = submit("pause", "sleeper", user=operator)
    applied(process, request, began)
    process.expect(r"\[sleeper [0-9a-f-]{36}\] paused by alice$")
    process.expect(r"sleeper noticed the cancellation")
    process.expect(r"execution paused until resumed")
    wait_for(lambda: stored("paused by alice"), interval=0.05, what="the pause stored as an event")

    process.mark()
    began = time.monotonic()
    request = submit("resume", "sleeper", user=operator)
    applied(process, request, began)
    process.expect(r"resumed by alice$")
    process.expect(r"starting execution attempt 1/2")
    process.expect(r"sleeper is running")

    process.mark()
    began = time.monotonic()
    request = submit("restart", "sleeper", requested_by="bob")
    applied(process, request, began)
    process.expect(r"restart requested by bob$")
    process.expect(r"sleeper noticed the cancellation")
    process.expect(r"starting execution attempt 1/2")
    wait_for(lambda: stored("restart requested by bob"), interval=0.05, what="the restart stored as an event")

    process.send(signal.SIGTERM)
    assert process.wait() == 0


def test_the_command_controls_one_node(runworkers: StartRunworkers, controlworkers: Any) -> None:
    process, node = start_node(runworkers, "Sleeper", "OneShot")
    process.expect(r"sleeper is running")
    workers = control_workers([f"{W}.Sleeper", f"{W}.OneShot"], heartbeat=HEARTBEAT)

    process.mark()
    result = controlworkers("pause", "sleeper", "--node", str(node.pk), workers=workers)
    began = time.monotonic()  # the request was committed before the command exited
    assert result.returncode == 0, result
    request = ControlRequest.objects.get()
    assert result.stdout.startswith(f"Recorded control request #{request.pk}: pause of worker 'sleeper' on node ")
    applied(process, request, began)
    process.expect(r"execution paused until resumed")

    process.mark()
    result = controlworkers("resume", "sleeper", "--node", f"{node.hostname}:{node.pid}", workers=workers)
    began = time.monotonic()
    assert result.returncode == 0, result
    applied(process, ControlRequest.objects.order_by("-id").first(), began)  # type: ignore[arg-type]
    process.expect(r"sleeper is running")

    process.send(signal.SIGTERM)
    assert process.wait() == 0


@pytest.mark.urls("tests.control.urls")
def test_the_admin_restarts_a_worker(runworkers: StartRunworkers, operator: User) -> None:
    process, node = start_node(runworkers, "Sleeper")
    process.expect(r"sleeper is running")
    client = Client()
    client.force_login(operator)

    process.mark()
    with override_settings(WORKERS=control_workers([f"{W}.Sleeper"], heartbeat=HEARTBEAT)):
        response = client.post(
            reverse("admin:django_workers_control"),
            {"action": "restart", "worker": "sleeper", "node": str(node.pk), "next": "/admin/"},
        )
    began = time.monotonic()
    assert response.status_code == 302
    applied(process, ControlRequest.objects.get(), began)
    process.expect(r"restart requested by alice$")
    process.expect(r"starting execution attempt 1/2")
    process.expect(r"sleeper is running")

    process.send(signal.SIGTERM)
    assert process.wait() == 0


def test_a_pause_on_every_node_survives_a_restart_of_runworkers(runworkers: StartRunworkers, operator: User) -> None:
    first, node = start_node(runworkers, "Sleeper", "OneShot")
    first.expect(r"sleeper is running")
    began = time.monotonic()
    applied(first, submit("pause", "sleeper", user=operator), began)
    first.expect(r"execution paused until resumed")
    first.send(signal.SIGTERM)
    assert first.wait() == 0

    second, _ = start_node(runworkers, "Sleeper", "OneShot")
    second.expect(r"control request #\d+: standing pause of worker 'sleeper' on every node, requested by alice")
    second.expect(r"one-shot done")  # the pool is running

    began = time.monotonic()
    applied(second, submit("resume", "sleeper", user=operator), began)
    second.expect(r"sleeper is running")
    # The sleeper's first attempt in this process is the one the resume started.
    lines = second.lines["stderr"]
    resumed = next(i for i, line in enumerate(lines) if re.search(r"\[sleeper \S+\] resumed by alice$", line))
    starts = [i for i, line in enumerate(lines) if re.search(r"\[sleeper \S+\] starting execution attempt", line)]
    assert starts and min(starts) > resumed, "\n".join(lines)

    # A pause addressed to one node holds for that process only.
    second_node = Node.objects.get(pid=second.pid)
    began = time.monotonic()
    applied(second, submit("pause", "sleeper", second_node, user=operator), began)
    second.send(signal.SIGTERM)
    assert second.wait() == 0
    third, _ = start_node(runworkers, "Sleeper", "OneShot")
    third.expect(r"sleeper is running")
    assert "standing pause" not in third.stderr
    third.send(signal.SIGTERM)
    assert third.wait() == 0
    assert node.pk != second_node.pk


def test_a_restart_runs_an_exhausted_worker_again_from_attempt_1(runworkers: StartRunworkers) -> None:
    process, node = start_node(runworkers, "Failing")
    process.expect(r"\[failing .* max execution attempts reached")

    process.mark()
    began = time.monotonic()
    applied(process, submit("restart", "failing", requested_by="carol"), began)
    process.expect(r"restart requested by carol$")
    process.expect(r"\[failing .* starting execution attempt 1/2")
    process.expect(r"\[failing .* starting execution attempt 2/2")
    process.expect(r"\[failing .* max execution attempts reached")
    wait_for(
        lambda: Execution.objects.filter(node=node, worker="failing", attempt=1).count() == 2,
        interval=0.05,
        what="two first attempts stored",
    )
    process.send(signal.SIGTERM)
    assert process.wait() == 0
