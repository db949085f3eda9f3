"""Dropped events are marked as dropped, never replaced by invented outcomes.

The database is healthy in these tests: the writer is only held back (a write that waits on the
test, as a slow database would) or outpaced by workers that keep the CPU busy. An attempt whose
end was among the dropped events is stored as ``unknown`` (no finish time, no duration), never
closed as "stopped while the attempt was still running"; the node-level marker says how fast
events arrived and what the writer did meanwhile, never that the database was unreachable.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from django_workers import Backoff, Worker, WorkerContext
from django_workers.core.events import WorkerFinished
from django_workers.history.attempts import END_UNKNOWN
from django_workers.history.writer import Writer
from django_workers.metrics import WorkerMetrics
from django_workers.models import Execution, ExecutionEvent, Node
from tests.core.conftest import EventLog
from tests.history.conftest import Counting, Scene
from tests.history.truth import check_history
from tests.support import wait_for

#: The marker of drops while the database was healthy: a rate, and what the writer stored meanwhile.
HEALTHY_MARKER = re.compile(
    r"^dropped (\d+) event\(s\), the oldest: the history buffer of (\d+) events was full at [\d.]+ events/s; "
    r"the writer stored [\d.]+ events/s(, giving way to workers that kept the CPU busy| into database '\w+')$"
)


class Gated(Worker):
    """Its first attempt starts, says so, waits for ``go`` and fails; later attempts fail at once."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.started = threading.Event()
        self.go = threading.Event()

    def run(self, ctx: WorkerContext) -> None:
        if ctx.attempt == 1:
            self.started.set()
            self.go.wait(30)
        raise RuntimeError(f"{self.name} failure {ctx.attempt}")


class HeldWriter:
    """Holds the recorder's writer in its next write, as a database that takes its time would."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.armed = False
        self.held = threading.Event()
        self.release = threading.Event()
        original = Writer._write

        def write(writer: Writer, *args: Any, **kwargs: Any) -> None:
            if self.armed:
                self.armed = False
                self.held.set()
                self.release.wait(30)
            original(writer, *args, **kwargs)

        monkeypatch.setattr(Writer, "_write", write)

    def hold(self) -> None:
        self.armed = True


@pytest.fixture
def held_writer(monkeypatch: pytest.MonkeyPatch) -> Iterator[HeldWriter]:
    held = HeldWriter(monkeypatch)
    try:
        yield held
    finally:
        held.release.set()


def test_an_attempt_whose_end_was_dropped_is_unknown_not_closed_as_stopped(
    transactional_db: None, held_writer: HeldWriter, scene: Scene
) -> None:
    lonely, crashy = Gated("lonely"), Gated("crashy")
    scene.gates += [lonely.go, crashy.go]
    counting = Counting()
    metrics = WorkerMetrics()
    registry = CollectorRegistry()
    metrics.register(registry)
    pool = scene.pool(listeners=[counting], metrics=metrics)
    pool.register(lonely, max_executions_attempts=1)
    pool.register(crashy, max_executions_attempts=10)
    recorder = scene.recorder(pool, buffer_size=5)
    # Subscribed after the recorder: once it has heard of lonely's end, so has the recorder's buffer.
    events = EventLog()
    pool.add_listener(events)
    pool.start()
    assert lonely.started.wait(5) and crashy.started.wait(5)
    assert recorder.flush(10)
    assert sorted(Execution.objects.values_list("worker", "status")) == [("crashy", "running"), ("lonely", "running")]

    # The writer is held in a write; meanwhile both first attempts end and crashy fails nine more
    # times: the buffer of 5 keeps the newest events only, both first attempts' ends are dropped.
    held_writer.hold()
    recorder.flush(0)  # a flush request: the writer takes it, and its write waits
    assert held_writer.held.wait(10)
    lonely.go.set()
    events.wait_until(lambda seen: any(isinstance(e, WorkerFinished) and e.worker == "lonely" for e in seen))
    assert pool.execution("lonely").status == "error"
    crashy.go.set()
    assert pool.wait(10)
    assert recorder.dropped > 0
    held_writer.release.set()
    assert recorder.flush(10)
    pool.stop(5)
    recorder.stop(10)

    # Stored: the first attempts (before the hold), then the newest 5 events: crashy's "restarting
    # after error" of attempt 9 and the whole of attempt 10.
    rows = {(row.worker, row.attempt): row for row in Execution.objects.all()}
    assert set(rows) == {("lonely", 1), ("crashy", 1), ("crashy", 9), ("crashy", 10)}
    for key in (("lonely", 1), ("crashy", 1)):
        row = rows[key]
        # Not "error": what it ended with was dropped. Neither a finish time nor a duration is invented.
        assert (row.status, row.finished_at, row.duration, row.error) == ("unknown", None, None, ""), key
        events = ExecutionEvent.objects.filter(execution=row).order_by("timestamp", "id")
        assert [(event.level, event.message) for event in events] == [
            ("INFO", f"starting execution attempt 1/{row.max_attempts}"),
            ("WARNING", END_UNKNOWN),
        ]
    # Attempt 9's end was dropped too, but its restart says how it ended: error, when unknown.
    assert (rows[("crashy", 9)].status, rows[("crashy", 9)].finished_at) == ("error", None)
    assert rows[("crashy", 10)].status == "error"
    assert rows[("crashy", 10)].error == "crashy failure 10"
    assert not Execution.objects.filter(error__contains="stopped while the attempt was still running").exists()

    marker = ExecutionEvent.objects.get(execution__isnull=True)
    match = HEALTHY_MARKER.match(marker.message)
    assert match, marker.message
    assert (int(match[1]), int(match[2])) == (recorder.dropped, 5)
    assert Node.objects.get().dropped_events == recorder.dropped
    check_history("default", recorder, counting, registry)


class CrashLooping(Worker):
    """Fails at once, every attempt."""

    def __init__(self, name: str) -> None:
        self.name = name

    def run(self, ctx: WorkerContext) -> None:
        raise RuntimeError("crash")


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_under_cpu_load_with_a_healthy_database_the_history_is_incomplete_never_wrong(
    transactional_db: None, scene: Scene
) -> None:
    """Many crash-looping workers keep the CPU busy; the writer gives way and the buffer overflows."""
    counting = Counting()
    metrics = WorkerMetrics()
    registry = CollectorRegistry()
    metrics.register(registry)
    pool = scene.pool(
        *(CrashLooping(f"crash-{index}") for index in range(200)),
        max_executions_attempts=0,
        restart_backoff=Backoff(initial=0.001, maximum=0.001, jitter=0),
        listeners=[counting],
        metrics=metrics,
    )
    recorder = scene.recorder(pool, buffer_size=300)
    pool.start()
    wait_for(lambda: recorder.dropped >= 3_000, timeout=60, interval=0.05, what="thousands of events dropped")
    assert pool.stop(10) == []
    recorder.stop(30)

    markers = list(ExecutionEvent.objects.filter(execution__isnull=True).values_list("message", flat=True))
    assert markers
    for message in markers:
        assert HEALTHY_MARKER.match(message), message
        assert "unreachable" not in message
    assert not Execution.objects.filter(error__contains="stopped while the attempt was still running").exists()
    check_history("default", recorder, counting, registry)
