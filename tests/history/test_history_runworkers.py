"""History of a real ``runworkers`` process: every attempt and event stored, heartbeats, ``kill -9``.

Each test gets a migrated database of its own (tests/history/conftest.py: ``process_database``)
and reads it through an extra alias while the subprocess writes it. The events stored are
compared with the ones the process logged (its logging listener writes every event's message,
tagged with the worker and the execution id).
"""

from __future__ import annotations

import re
import signal
import time
from datetime import datetime, timedelta
from typing import Any

import pytest

from django_workers.models import Execution, ExecutionEvent, Node
from tests.history.conftest import ProcessDatabase, history_workers
from tests.support import RunworkersProcess, StartRunworkers, W, wait_for

pytestmark = pytest.mark.slow

EVENT = re.compile(
    r"\[(?P<worker>\S+) (?P<execution>[0-9a-f-]{36})\] "
    r"(?P<message>(deferring execution attempt|starting execution attempt|stopping execution attempt|"
    r"restarting after|max execution attempts reached|did not stop within|no heartbeat for).*)$"
)


def logged_events(process: RunworkersProcess) -> dict[str, list[str]]:
    """Per execution id, the event messages the process logged, in order."""
    by_id: dict[str, list[str]] = {}
    for line in process.lines["stderr"]:
        match = EVENT.search(line)
        if match:
            message = re.sub(r" \(in \d+\.\d+ seconds\)$", "", match["message"])  # restarts log their delay
            by_id.setdefault(match["execution"], []).append(message)
    return by_id


def stored_events(alias: str, node: Node | None = None) -> dict[str, list[str]]:
    events = ExecutionEvent.objects.using(alias).filter(execution__isnull=False)
    if node is not None:
        events = events.filter(node=node)
    by_id: dict[str, list[str]] = {}
    for event in events.order_by("timestamp", "id"):
        by_id.setdefault(str(event.execution_id), []).append(event.message)
    return by_id


def node_of(alias: str, process: RunworkersProcess) -> Node | None:
    return Node.objects.using(alias).filter(pid=process.pid).first()


def test_every_attempt_and_event_of_a_runworkers_process_is_stored(
    start: StartRunworkers, process_database: ProcessDatabase
) -> None:
    alias = process_database.alias
    workers = history_workers([f"{W}.Failing", f"{W}.OneShot", f"{W}.Sleeper"])
    process = start(workers=workers, env=process_database.env)
    process.expect(r"history on")
    process.expect(r"\[failing .* max execution attempts reached")
    process.expect(r"sleeper is running")

    # The node row, and its heartbeat advancing (every 0.2 s, from the database's clock).
    wait_for(lambda: node_of(alias, process) is not None, interval=0.05, what="the node row")
    node = node_of(alias, process)
    assert node is not None
    first = node.last_heartbeat
    wait_for(
        lambda: Node.objects.using(alias).get(pk=node.pk).last_heartbeat > first,
        interval=0.05,
        what="a newer heartbeat",
    )
    assert node.stopped_at is None
    assert node.workers == ["failing", "one-shot", "sleeper"]

    process.send(signal.SIGTERM)
    assert process.wait() == 0
    node.refresh_from_db(using=alias)
    assert node.stopped_at is not None
    assert node.last_heartbeat >= first
    assert node.dropped_events == 0

    logged = logged_events(process)
    assert len(logged) == 5  # failing x 3, one-shot, sleeper
    assert stored_events(alias) == logged  # every event of every attempt, same order
    rows = {str(row.id): row for row in Execution.objects.using(alias).all()}
    assert set(rows) == set(logged)
    failing = sorted((row for row in rows.values() if row.worker == "failing"), key=lambda row: row.attempt)
    assert [(row.attempt, row.max_attempts, row.status) for row in failing] == [(1, 3, "error")] * 1 + [
        (2, 3, "error"),
        (3, 3, "error"),
    ]
    for row in failing:
        assert row.error == "failing on purpose"
        assert "RuntimeError: failing on purpose" in row.traceback
        assert row.node_id == node.pk
    statuses = {row.worker: row.status for row in rows.values() if row.worker != "failing"}
    assert statuses == {"one-shot": "success", "sleeper": "success"}
    levels = list(
        ExecutionEvent.objects.using(alias)
        .filter(execution=failing[2])
        .order_by("timestamp", "id")
        .values_list("level", flat=True)
    )
    assert levels == ["INFO", "ERROR", "ERROR"]  # starting, stopping with error, max attempts reached


def test_after_a_kill_9_the_next_start_closes_the_orphaned_executions(
    start: StartRunworkers, process_database: ProcessDatabase
) -> None:
    alias = process_database.alias
    workers = history_workers([f"{W}.Sleeper"], HEARTBEAT_INTERVAL=0.2, ORPHAN_GRACE=1.0)
    killed = start(workers=workers, env=process_database.env)
    killed.expect(r"sleeper is running")

    def running_row() -> Any:
        return Execution.objects.using(alias).filter(worker="sleeper", status="running").first()

    wait_for(lambda: running_row() is not None, interval=0.05, what="the running execution row")
    orphan = running_row()
    lost = node_of(alias, killed)
    assert lost is not None

    killed.kill()  # SIGKILL: no flush, no stop, the row says running
    assert Execution.objects.using(alias).get(pk=orphan.pk).status == "running"

    survivor = start(workers=workers, env=process_database.env)
    survivor.expect(r"sleeper is running")
    wait_for(
        lambda: Execution.objects.using(alias).get(pk=orphan.pk).status == "lost",
        timeout=15,
        interval=0.05,
        what="the orphaned execution closed",
    )
    orphan.refresh_from_db(using=alias)
    lost.refresh_from_db(using=alias)
    seen = lost.last_heartbeat.strftime("%Y-%m-%d %H:%M:%S")
    message = f"node {lost.hostname}:{killed.pid} was lost (no heartbeat since {seen} UTC)"
    assert orphan.error == message
    assert orphan.finished_at == lost.last_heartbeat
    assert orphan.duration is not None and orphan.duration >= 0
    closing = ExecutionEvent.objects.using(alias).filter(execution=orphan).order_by("timestamp", "id").last()
    assert closing is not None
    assert (closing.level, closing.message) == ("ERROR", message)
    assert lost.stopped_at is None  # killed: it never stopped
    survivor.expect(r"1 execution\(s\) of lost node\(s\) closed as lost")

    survivor.send(signal.SIGTERM)
    assert survivor.wait() == 0
    current = node_of(alias, survivor)
    assert current is not None and current.stopped_at is not None
    assert current.last_heartbeat - current.started_at >= timedelta(0)
    assert stored_events(alias, current) == logged_events(survivor)
    mine = Execution.objects.using(alias).filter(node=current)
    assert [(row.worker, row.status) for row in mine] == [("sleeper", "success")]


def test_at_the_stop_timeout_the_history_closes_the_stuck_attempt_and_the_node(
    start: StartRunworkers, process_database: ProcessDatabase
) -> None:
    """Exit 3 leaves no history open: the recorder has its reserved slice of the stop timeout.

    STOP_TIMEOUT 2: the workers get 1.5 seconds, the recorder's last flush the other 0.5.
    """
    alias = process_database.alias
    workers = history_workers([f"{W}.Stuck", f"{W}.Sleeper"], HEARTBEAT_INTERVAL=1.0, ORPHAN_GRACE=3.0)
    workers["STOP_TIMEOUT"] = 2
    process = start(workers=workers, env=process_database.env)
    process.expect(r"stuck is running and will ignore cancellation")
    process.expect(r"sleeper is running")
    wait_for(
        lambda: Execution.objects.using(alias).filter(status="running").count() == 2,
        interval=0.05,
        what="the two running executions stored",
    )

    began = time.monotonic()
    process.send(signal.SIGTERM)
    assert process.wait() == 3
    assert time.monotonic() - began < 2 + 5  # the timeout, plus generous start-up noise

    node = node_of(alias, process)
    assert node is not None
    assert node.stopped_at is not None
    rows = {row.worker: row for row in Execution.objects.using(alias).filter(node=node)}
    assert set(rows) == {"stuck", "sleeper"}
    stuck, sleeper = rows["stuck"], rows["sleeper"]
    closing = f"node {node.hostname}:{process.pid} stopped while the attempt was still running"
    assert (stuck.status, stuck.error) == ("lost", closing)
    assert stuck.finished_at is not None and stuck.duration is not None
    events = ExecutionEvent.objects.using(alias).filter(execution=stuck).order_by("timestamp", "id")
    assert [(event.level, event.message) for event in events] == [
        ("INFO", "starting execution attempt 1/3"),
        ("ERROR", "did not stop within 1.5 seconds"),
        ("ERROR", closing),
    ]
    assert sleeper.status == "success"
    assert stored_events(alias, node)[str(sleeper.id)] == logged_events(process)[str(sleeper.id)]

    assert "not stored" not in process.stderr  # the recorder wrote everything, the node included
    # Within the stop timeout, as the process's own clock saw it (its log lines are timestamped).
    stopping = process.expect(r"^(\S+ \S+) .*received SIGTERM: stopping 2 worker\(s\) gracefully within 2 seconds")
    exiting = process.expect(
        r"^(\S+ \S+) .*1 worker\(s\) did not stop within 1\.5 seconds: stuck; exiting with status 3 "
    )
    assert stopping is not None and exiting is not None
    assert _logged_at(exiting[1]) - _logged_at(stopping[1]) <= timedelta(seconds=2)


def _logged_at(stamp: str) -> datetime:
    """The time of a runworkers log line (``2026-12-03 11:58:20,563``)."""
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f")
