"""Attempts whose process was lost are closed as ``lost``, not ``error`` (SQLite and PostgreSQL).

:func:`close_orphans` closes the open attempts of nodes whose heartbeat is older than the grace
period; :meth:`NodeRow.finalize` closes those still running when their node stops (they did not
stop within the stop timeout). Either way the attempt did not end by itself: ``lost``, with an
event (and an error text) naming the node as ``host:pid``. The end-to-end paths (a ``kill -9``,
an exit 3) are in ``test_history_runworkers.py`` and ``test_history_recorder.py``.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from django_workers.health.reports import history_report
from django_workers.history.nodes import NodeRow, close_orphans
from django_workers.history.tallies import period_start
from django_workers.models import Execution, ExecutionEvent, ExecutionStatus, ExecutionTally, Node, WorkerState

pytestmark = pytest.mark.django_db


def make_node(hostname: str, pid: int, silence: timedelta, **fields: Any) -> Node:
    now = timezone.now()
    return Node.objects.create(
        hostname=hostname,
        pid=pid,
        started_at=now - timedelta(hours=1),
        last_heartbeat=now - silence,
        version="0.0.1",
        **fields,
    )


def make_execution(node: Node, status: str, worker: str = "w", **fields: Any) -> Execution:
    now = timezone.now()
    values: dict[str, Any] = {
        "id": uuid.uuid4(),
        "node": node,
        "worker": worker,
        "attempt": 1,
        "max_attempts": 1,
        "status": status,
        "created_at": now - timedelta(minutes=30),
        "started_at": now - timedelta(minutes=30) if status != ExecutionStatus.DEFERRED else None,
    }
    values.update(fields)
    return Execution.objects.create(**values)


def closing_events(execution: Execution) -> list[tuple[str, str]]:
    return list(
        ExecutionEvent.objects.filter(execution=execution).order_by("timestamp", "id").values_list("level", "message")
    )


def test_close_orphans_closes_the_open_attempts_of_a_lost_node_as_lost() -> None:
    lost = make_node("gone-host", 4242, silence=timedelta(minutes=5))
    alive = make_node("alive-host", 7, silence=timedelta(0))
    running = make_execution(lost, ExecutionStatus.RUNNING)
    deferred = make_execution(lost, ExecutionStatus.DEFERRED, worker="d")
    state = WorkerState.objects.create(
        node=lost, worker="w", status=ExecutionStatus.RUNNING, execution_id=running.pk, updated_at=timezone.now()
    )
    failed = make_execution(
        lost, ExecutionStatus.ERROR, worker="f", finished_at=timezone.now() - timedelta(minutes=20), error="boom"
    )
    elsewhere = make_execution(alive, ExecutionStatus.RUNNING, worker="o")

    assert close_orphans("default", timezone.now() - timedelta(minutes=1)) == 2

    seen = f"{lost.last_heartbeat:%Y-%m-%d %H:%M:%S}"
    message = f"node gone-host:4242 was lost (no heartbeat since {seen} UTC)"
    for row in (running, deferred):
        row.refresh_from_db()
        assert (row.status, row.error, row.finished_at) == ("lost", message, lost.last_heartbeat)
        assert closing_events(row) == [("ERROR", message)]
    running.refresh_from_db()
    assert running.duration == pytest.approx(25 * 60, abs=2)  # until the last heartbeat
    deferred.refresh_from_db()
    assert deferred.duration is None  # it never started
    state.refresh_from_db()
    assert (state.status, state.since) == ("lost", lost.last_heartbeat), "the worker's state says so too"
    for row, status, error in ((failed, "error", "boom"), (elsewhere, "running", "")):
        row.refresh_from_db()
        assert (row.status, row.error) == (status, error)
        assert closing_events(row) == []
    # Once: another node sweeping later closes nothing more.
    assert close_orphans("default", timezone.now() - timedelta(minutes=1)) == 0
    assert ExecutionEvent.objects.count() == 2
    # Counted once as lost in the period of the last heartbeat, for the overview's timelines.
    tallies = ExecutionTally.objects.filter(node=lost).order_by("worker")
    assert [(row.worker, row.period_start, row.lost, row.failed) for row in tallies] == [
        ("d", period_start(lost.last_heartbeat), 1, 0),
        ("w", period_start(lost.last_heartbeat), 1, 0),
    ]


def test_close_orphans_spares_the_node_that_sweeps_and_fresh_nodes() -> None:
    own = make_node("me", 1, silence=timedelta(minutes=5))
    fresh = make_node("fresh", 2, silence=timedelta(seconds=10))
    mine = make_execution(own, ExecutionStatus.RUNNING)
    theirs = make_execution(fresh, ExecutionStatus.RUNNING)
    assert close_orphans("default", timezone.now() - timedelta(minutes=1), keep_node=own.pk) == 0
    assert {row.status for row in Execution.objects.filter(pk__in=(mine.pk, theirs.pk))} == {"running"}


def test_a_node_stopping_with_attempts_still_running_closes_them_as_lost() -> None:
    node = make_node("stopping-host", 99, silence=timedelta(0))
    stuck = make_execution(node, ExecutionStatus.RUNNING)
    waiting = make_execution(node, ExecutionStatus.DEFERRED, worker="later")
    dropped = make_execution(node, ExecutionStatus.RUNNING, worker="dropped")
    row = NodeRow("default", node.pk, node.hostname, node.pid, heartbeat_interval=1.0, orphan_grace=3.0)

    row.finalize(lambda execution_id: execution_id == dropped.pk)

    stuck.refresh_from_db()
    message = "node stopping-host:99 stopped while the attempt was still running"
    assert (stuck.status, stuck.error) == ("lost", message)
    assert stuck.finished_at is not None and stuck.duration is not None
    assert closing_events(stuck) == [("ERROR", message)]
    # Not lost: a deferred attempt never ran (closed as deferred), an end among dropped events is unknown.
    waiting.refresh_from_db()
    assert (waiting.status, waiting.error) == ("deferred", "")
    assert waiting.finished_at is not None
    dropped.refresh_from_db()
    assert (dropped.status, dropped.finished_at) == ("unknown", None)
    tallies = ExecutionTally.objects.filter(node=node)
    assert [(row.worker, row.lost) for row in tallies] == [("w", 1)], "only the attempt that was running"
    node.refresh_from_db()
    assert node.stopped_at is not None


def test_a_lost_attempt_does_not_make_a_live_node_unhealthy() -> None:
    """Lost is not a worker's failure: only an exhausted ``error`` is (the one health rule); here attempt 1/1."""
    node = make_node("back-host", 5, silence=timedelta(0), workers=["w"])
    make_execution(node, ExecutionStatus.LOST, error="node back-host:5 was lost (no heartbeat since ...)")
    report = history_report(stale_after=30.0)
    assert report.state == "healthy", report.message
    assert [(item.worker, item.status, item.healthy) for item in report.workers] == [("w", "lost", True)]
