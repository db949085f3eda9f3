"""The recorder with a real pool and the real database: one row per attempt, every event, the node.

``transactional_db``: the recorder writes from its own thread, so rows must be committed. Each
test compares the database with what the pool itself reports (its in-memory events, or a
listener that saw every event), message for message.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import traceback
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from prometheus_client import CollectorRegistry

import django_workers
from django_workers import Worker, WorkerContext
from django_workers.core.events import AttemptFailed
from django_workers.metrics import WorkerMetrics
from django_workers.models import Execution, ExecutionEvent, ExecutionStatus, Node
from tests.history.conftest import Counting, Scene
from tests.support import wait_for

pytestmark = pytest.mark.usefixtures("transactional_db")


class Flaky(Worker):
    """Fails until attempt ``succeed_at``; sync or async."""

    def __init__(self, name: str = "flaky", succeed_at: int = 3, kind: str = "sync") -> None:
        self.name = name
        self.succeed_at = succeed_at
        self.kind = kind

    def run(self, ctx: WorkerContext) -> Any:
        if self.kind == "async":
            return self._arun(ctx)
        return self._check(ctx)

    def _check(self, ctx: WorkerContext) -> None:
        if ctx.attempt < self.succeed_at:
            raise ValueError(f"boom {ctx.attempt}")

    async def _arun(self, ctx: WorkerContext) -> None:
        await asyncio.sleep(0)
        self._check(ctx)


class AsyncFlaky(Worker):
    name = "async-flaky"

    async def run(self, ctx: WorkerContext) -> None:
        await asyncio.sleep(0)
        if ctx.attempt < 2:
            raise ValueError(f"async boom {ctx.attempt}")


class Panicking(Worker):
    name = "panicking"

    def run(self, ctx: WorkerContext) -> None:
        raise SystemExit("bye")


class UntilCancelled(Worker):
    def __init__(self, name: str = "patient", started: threading.Event | None = None) -> None:
        self.name = name
        self.started = started

    def run(self, ctx: WorkerContext) -> None:
        if self.started is not None:
            self.started.set()
        while not ctx.sleep(60):
            pass


class IgnoresCancellation(Worker):
    """Keeps running after the stop until its gate opens (a stop time-out)."""

    name = "stubborn"

    def __init__(self, started: threading.Event, gate: threading.Event) -> None:
        self.started = started
        self.gate = gate

    def run(self, ctx: WorkerContext) -> None:
        self.started.set()
        self.gate.wait(30)


def stored(execution_id: str) -> list[tuple[str, str, Any]]:
    events = ExecutionEvent.objects.filter(execution_id=execution_id).order_by("timestamp", "id")
    return [(str(event.execution_id), event.message, event.timestamp) for event in events]


def stored_by_execution() -> dict[str, list[tuple[str, str]]]:
    by_id: dict[str, list[tuple[str, str]]] = {}
    for event in ExecutionEvent.objects.filter(execution__isnull=False).order_by("timestamp", "id"):
        by_id.setdefault(str(event.execution_id), []).append((event.level, event.message))
    return by_id


def reported_by_execution(counting: Counting) -> dict[str, list[str]]:
    by_id: dict[str, list[str]] = {}
    for event in counting.events:
        by_id.setdefault(event.execution_id, []).append(event.record.message)
    return by_id


def test_every_attempt_and_event_of_a_failing_then_succeeding_worker(scene: Scene) -> None:
    counting = Counting()
    pool = scene.pool(Flaky(), max_executions_attempts=3, deferred_start_threshold=0.05, listeners=[counting])
    recorder = scene.recorder(pool)
    pool.start()
    assert pool.wait(10)
    assert recorder.flush(10)

    report = pool.execution("flaky").events  # the in-memory report: every event, in order
    ids = list(dict.fromkeys(event.execution_id for event in report))
    assert len(ids) == 3
    rows = {str(row.id): row for row in Execution.objects.all()}
    assert set(rows) == set(ids)
    for number, execution_id in enumerate(ids, start=1):
        row = rows[execution_id]
        assert (row.worker, row.attempt, row.max_attempts) == ("flaky", number, 3)
        assert row.node_id == recorder.node_id
        assert row.started_at is not None and row.finished_at is not None
        assert row.duration is not None and 0 <= row.duration < 5
        if number < 3:
            assert row.status == ExecutionStatus.ERROR
            assert row.error == f"boom {number}"
            assert row.traceback.startswith("Traceback (most recent call last):")
            assert f"ValueError: boom {number}" in row.traceback
        else:
            assert (row.status, row.error, row.traceback) == (ExecutionStatus.SUCCESS, "", "")
        expected = [(e.execution_id, e.message, e.timestamp) for e in report if e.execution_id == execution_id]
        assert stored(execution_id) == expected  # same messages, same timestamps, same order

    first, _, third = ids
    assert [message for _, message, _ in stored(first)] == [
        "deferring execution attempt for 0.05 seconds",
        "starting execution attempt 1/3",
        "stopping execution attempt 1/3 with error: boom 1",
        "restarting after error",
    ]
    assert [message for _, message, _ in stored(third)] == [
        "starting execution attempt 3/3",
        "stopping execution attempt 3/3 with success",
    ]
    levels = stored_by_execution()
    assert [level for level, _ in levels[first]] == ["INFO", "INFO", "ERROR", "WARNING"]
    assert [level for level, _ in levels[third]] == ["INFO", "INFO"]
    assert ExecutionEvent.objects.count() == len(report) == len(counting.events) == 4 + 3 + 2
    assert rows[first].created_at == report[0].timestamp  # the deferral created the row


def test_attempts_exhausted_panic_and_async_workers(scene: Scene) -> None:
    counting = Counting()
    pool = scene.pool(Panicking(), AsyncFlaky(), Flaky("never", succeed_at=99), max_executions_attempts=2)
    pool.add_listener(counting)
    recorder = scene.recorder(pool)
    pool.start()
    assert pool.wait(10)
    assert recorder.flush(10)

    assert stored_by_execution() == {
        execution_id: [(level_of(message), message) for message in messages]
        for execution_id, messages in reported_by_execution(counting).items()
    }
    panics = Execution.objects.filter(worker="panicking").order_by("attempt")
    assert [row.status for row in panics] == ["error", "error"]
    assert panics[0].error == "SystemExit('bye')"
    assert "SystemExit: bye" in panics[0].traceback
    assert ExecutionEvent.objects.filter(
        execution=panics[0], message="stopping execution attempt 1/2 with recovered panic: SystemExit('bye')"
    ).exists()
    assert ExecutionEvent.objects.filter(execution=panics[0], message="restarting after panic recovery").exists()
    last = ExecutionEvent.objects.filter(execution=panics[1]).order_by("timestamp", "id").last()
    assert last is not None and (last.level, last.message) == ("ERROR", "max execution attempts reached")
    assert [row.status for row in Execution.objects.filter(worker="async-flaky").order_by("attempt")] == [
        "error",
        "success",
    ]
    assert Execution.objects.filter(worker="never").count() == 2


def level_of(message: str) -> str:
    if message.startswith(("restarting after",)):
        return "WARNING"
    if "with error" in message or "recovered panic" in message or message == "max execution attempts reached":
        return "ERROR"
    return "INFO"


def test_a_stop_ends_running_attempts_in_success_and_marks_the_node_stopped(scene: Scene) -> None:
    started = threading.Event()
    pool = scene.pool(UntilCancelled(started=started), max_executions_attempts=0)
    recorder = scene.recorder(pool)
    pool.start()
    assert started.wait(5)
    assert recorder.flush(10)
    row = Execution.objects.get()
    assert (row.status, row.finished_at, row.attempt, row.max_attempts) == ("running", None, 1, 0)
    node = Node.objects.get()
    assert node.stopped_at is None

    pool.stop(5)
    recorder.stop(10)
    row.refresh_from_db()
    assert row.status == "success"
    assert [message for _, message, _ in stored(str(row.id))] == [
        "starting execution attempt 1/unlimited",
        "stopping execution attempt 1/unlimited with success",
    ]
    node.refresh_from_db()
    assert node.stopped_at is not None
    assert node.last_heartbeat >= node.started_at - timedelta(seconds=1)
    assert (node.hostname, node.pid, node.version) == (socket.gethostname(), recorder.pid, django_workers.__version__)
    assert node.workers == ["patient"]
    assert node.dropped_events == 0


def test_an_attempt_still_running_at_the_stop_is_closed_with_the_node(scene: Scene) -> None:
    started, gate = threading.Event(), threading.Event()
    scene.gates.append(gate)
    pool = scene.pool(IgnoresCancellation(started, gate))
    recorder = scene.recorder(pool)
    pool.start()
    assert started.wait(5)
    assert pool.stop(timeout=0.1) == ["stubborn"]
    recorder.stop(10)
    gate.set()
    row = Execution.objects.get()
    assert row.status == "lost", "the process exits under it: not a failure of the worker"
    node = f"{recorder.hostname}:{recorder.pid}"
    assert row.error == f"node {node} stopped while the attempt was still running"
    assert row.finished_at is not None
    assert [(level, message) for level, message in stored_by_execution()[str(row.id)]] == [
        ("INFO", "starting execution attempt 1/1"),
        ("ERROR", "did not stop within 0.1 seconds"),
        ("ERROR", f"node {node} stopped while the attempt was still running"),
    ]
    assert Node.objects.get().stopped_at is not None


def test_a_worker_stopped_while_deferred_keeps_a_closed_deferred_row(scene: Scene) -> None:
    pool = scene.pool(Flaky("later"), deferred_start_threshold=30)
    recorder = scene.recorder(pool)
    pool.start()
    assert recorder.flush(10)
    row = Execution.objects.get()
    assert (row.status, row.attempt, row.started_at, row.finished_at) == ("deferred", 1, None, None)
    pool.stop(5)
    recorder.stop(10)
    row.refresh_from_db()
    assert row.status == "deferred"
    assert row.finished_at is not None  # closed: never reported as lost
    assert [message for _, message, _ in stored(str(row.id))] == ["deferring execution attempt for 30 seconds"]


def test_the_node_heartbeat_advances_with_the_database_clock(scene: Scene) -> None:
    metrics = WorkerMetrics()
    registry = CollectorRegistry()
    metrics.register(registry)
    pool = scene.pool(UntilCancelled(), metrics=metrics)
    recorder = scene.recorder(pool, heartbeat_interval=0.1, metrics=pool.metrics)
    pool.start()
    wait_for(lambda: Node.objects.filter(pk=recorder.node_id).exists(), timeout=10)
    first = Node.objects.get().last_heartbeat
    wait_for(lambda: Node.objects.get().last_heartbeat > first, timeout=10)
    second = Node.objects.get().last_heartbeat
    assert timedelta(0) < second - first < timedelta(seconds=5)
    assert abs(second - timezone.now()) < timedelta(seconds=30)  # the database's clock, same host
    # The metric follows the heartbeats, with the database's timestamps.
    wait_for(lambda: (registry.get_sample_value("worker_last_heartbeat_timestamp_seconds") or 0) >= second.timestamp())


def test_on_start_the_open_attempts_of_a_lost_node_are_closed_as_lost(scene: Scene) -> None:
    now = timezone.now()
    lost = Node.objects.create(
        hostname="gone-host",
        pid=4242,
        started_at=now - timedelta(minutes=10),
        last_heartbeat=now - timedelta(minutes=5),
        version="0.0.1",
    )
    alive = Node.objects.create(
        hostname="alive-host", pid=7, started_at=now, last_heartbeat=now + timedelta(hours=1), version="0.0.1"
    )

    def execution(node: Node, status: str, **fields: Any) -> Execution:
        return Execution.objects.create(
            id=uuid.uuid4(),
            node=node,
            worker=fields.pop("worker", "w"),
            attempt=1,
            max_attempts=0,
            status=status,
            created_at=now - timedelta(minutes=9),
            **fields,
        )

    running = execution(lost, "running", started_at=now - timedelta(minutes=9))
    deferred = execution(lost, "deferred", worker="d")
    done = execution(lost, "success", worker="s", finished_at=now - timedelta(minutes=8))
    other = execution(alive, "running", worker="o")

    pool = scene.pool(UntilCancelled())
    recorder = scene.recorder(pool, heartbeat_interval=0.5)
    pool.start()
    wait_for(lambda: Execution.objects.get(pk=running.pk).status == "lost", timeout=10)

    message = f"node gone-host:4242 was lost (no heartbeat since {lost.last_heartbeat:%Y-%m-%d %H:%M:%S} UTC)"
    for row in (running, deferred):
        row.refresh_from_db()
        assert (row.status, row.error, row.finished_at) == ("lost", message, lost.last_heartbeat)
        event = ExecutionEvent.objects.get(execution=row)
        assert (event.level, event.message) == ("ERROR", message)
    running.refresh_from_db()
    assert running.duration == pytest.approx(240, abs=1)  # until the lost node's last heartbeat
    for row, status in ((done, "success"), (other, "running")):
        row.refresh_from_db()
        assert row.status == status
        assert not ExecutionEvent.objects.filter(execution=row).exists()
    pool.stop(5)
    recorder.stop(10)
    assert Node.objects.get(pk=lost.pk).stopped_at is None  # it never stopped: the admin shows it stale


def test_the_traceback_is_formatted_by_the_writer_not_the_worker(scene: Scene) -> None:
    formatted_in: list[str] = []

    class Spy(ValueError):
        @property
        def __traceback__(self) -> Any:  # read by traceback.format_exception
            formatted_in.append(threading.current_thread().name)
            return super().__traceback__

    class RaisesSpy(Worker):
        name = "spy"

        def run(self, ctx: WorkerContext) -> None:
            raise Spy("spied")

    pool = scene.pool(RaisesSpy())
    recorder = scene.recorder(pool)
    pool.start()
    assert pool.wait(10)
    assert recorder.flush(10)
    assert "spied" in Execution.objects.get().traceback
    assert formatted_in and set(formatted_in) == {"django_workers:history"}


def test_the_recorder_touches_no_database_before_its_thread_runs() -> None:
    from django_workers.history import HistoryRecorder

    recorder = HistoryRecorder("no-such-alias")  # constructing it needs no database, nor a valid alias
    assert recorder.flush(0.1) is False  # not started
    recorder.stop(1)  # a no-op before start()


def test_the_tracebacks_of_a_crash_loop_are_exact(scene: Scene) -> None:
    """Alike tracebacks are formatted once: the stored text is still each attempt's own."""

    class Chained(Worker):
        name = "chained"

        def run(self, ctx: WorkerContext) -> None:
            try:
                {}["missing"]
            except KeyError as exc:
                raise RuntimeError(f"outer {ctx.attempt % 2}") from exc

    counting = Counting()
    pool = scene.pool(Chained(), max_executions_attempts=4, listeners=[counting])
    recorder = scene.recorder(pool)
    pool.start()
    assert pool.wait(10)
    assert recorder.flush(10)
    failures = [event for event in counting.events if isinstance(event, AttemptFailed)]
    assert len(failures) == 4
    for event in failures:
        row = Execution.objects.get(pk=event.execution_id)
        assert row.traceback == "".join(traceback.format_exception(event.failure.exception))
        assert row.error == f"outer {event.attempt % 2}"
        assert "The above exception was the direct cause of the following exception" in row.traceback
