"""The database down, locked or too slow: workers never wait, events are kept, drops are counted.

- An unreachable database (an alias that cannot connect) and a locked one (a transaction of the
  test holds the tables): workers run at full speed, every listener call returns at once, and
  everything is written once the database is back.
- Overflow: a tiny buffer while the database is unreachable keeps the newest events, counts the
  dropped ones (node row, metric, log) and writes a marker event when the database returns.
- A real outage: a PostgreSQL server of the test's own (never the machine's shared one) is
  stopped for 10 seconds while a worker keeps failing every 0.2 s; afterwards every event is in
  the database.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import re
import statistics
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from django.db import connection, transaction
from django.utils import timezone
from prometheus_client import CollectorRegistry

from django_workers import Worker, WorkerContext
from django_workers.core.events import LifecycleEvent, ReportedEvent
from django_workers.metrics import WorkerMetrics
from django_workers.models import Execution, ExecutionEvent, Node
from tests.history.conftest import Counting, PrivateDatabase, Scene, SwitchableDatabase
from tests.support import wait_for


class Failing(Worker):
    """Fails at once, or after ``every`` seconds (interruptible)."""

    def __init__(self, name: str = "failing", every: float = 0.0) -> None:
        self.name = name
        self.every = every

    def run(self, ctx: WorkerContext) -> None:
        if self.every and ctx.sleep(self.every):
            return
        raise RuntimeError(f"failure {ctx.attempt}")


def stored_triples(alias: str = "default") -> list[tuple[str, str, datetime]]:
    events = ExecutionEvent.objects.using(alias).filter(execution__isnull=False).order_by("timestamp", "id")
    return [(str(event.execution_id), event.message, event.timestamp) for event in events]


def by_execution(triples: list[tuple[str, str, datetime]]) -> dict[str, list[tuple[str, datetime]]]:
    """Per execution, its events in order (events of different workers interleave freely)."""
    grouped: dict[str, list[tuple[str, datetime]]] = {}
    for execution_id, message, timestamp in triples:
        grouped.setdefault(execution_id, []).append((message, timestamp))
    return grouped


def test_a_worker_never_waits_on_an_unreachable_database(switchable: SwitchableDatabase, scene: Scene) -> None:
    switchable.break_()
    counting = Counting()
    durations: list[float] = []
    recorder = scene.recorder(scene.pool(), database=switchable.alias, buffer_size=1_000_000)

    def timed(event: LifecycleEvent) -> None:
        began = time.perf_counter()
        recorder(event)
        durations.append(time.perf_counter() - began)

    pool = scene.pool(Failing(), max_executions_attempts=0, listeners=[counting, timed])
    pool.start()
    wait_for(lambda: counting.attempts >= 2_000, timeout=20)  # thousands of attempts, database or not
    assert not recorder.flush(0.2)  # nothing can be written
    pool.stop(5)
    assert recorder.dropped == 0

    # The listener is a deque append and a rare Event.set(): never a wait on the database.
    assert statistics.median(durations) < 50e-6, statistics.median(durations)
    assert sorted(durations)[int(len(durations) * 0.99)] < 5e-3  # generous: a thread switch may fall inside

    switchable.repair()
    assert recorder.flush(30)
    assert by_execution(stored_triples()) == by_execution(counting.triples())
    assert Execution.objects.count() == counting.attempts


@pytest.fixture
def lock_history_tables(transactional_db: None) -> Iterator[Any]:
    """A context manager holding the history tables locked by a transaction of the test's thread."""

    @contextlib.contextmanager
    def locked() -> Iterator[None]:
        with transaction.atomic():
            if connection.vendor == "postgresql":
                with connection.cursor() as cursor:
                    tables = ", ".join(
                        connection.ops.quote_name(model._meta.db_table) for model in (Node, Execution, ExecutionEvent)
                    )
                    cursor.execute(f"LOCK TABLE {tables} IN ACCESS EXCLUSIVE MODE")
            else:  # SQLite: an open write transaction locks the database for other writers
                Node.objects.create(
                    hostname="locker", pid=1, started_at=timezone.now(), last_heartbeat=timezone.now(), version="x"
                )
            yield

    yield locked


def test_a_locked_database_slows_the_writer_only(lock_history_tables: Any, scene: Scene) -> None:
    counting = Counting()
    pool = scene.pool(Failing(), max_executions_attempts=0, listeners=[counting])
    recorder = scene.recorder(pool, buffer_size=1_000_000)
    assert recorder.flush(10)  # the node is registered
    with lock_history_tables():
        pool.start()
        wait_for(lambda: counting.attempts >= 1_000, timeout=20)
        assert not recorder.flush(0.3)  # the writer is blocked (PostgreSQL) or retrying (SQLite)
        pool.stop(5)
    assert recorder.flush(30)
    assert by_execution(stored_triples()) == by_execution(counting.triples())
    assert recorder.dropped == 0


class Everything:
    """Every lifecycle event, in publication order."""

    def __init__(self) -> None:
        self.events: list[LifecycleEvent] = []

    def __call__(self, event: LifecycleEvent) -> None:
        self.events.append(event)


def test_overflow_drops_the_oldest_counts_them_and_writes_a_marker(
    switchable: SwitchableDatabase, scene: Scene, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="django_workers")
    switchable.break_()
    metrics = WorkerMetrics()
    registry = CollectorRegistry()
    metrics.register(registry)
    everything = Everything()
    pool = scene.pool(Failing("overflowing"), max_executions_attempts=10, listeners=[everything])
    recorder = scene.recorder(pool, database=switchable.alias, buffer_size=5, metrics=metrics)
    pool.start()
    assert pool.wait(10)

    # The buffer keeps the newest 5 lifecycle events: those that are reported events get stored.
    reported = [event for event in everything.events if isinstance(event, ReportedEvent)]
    kept = [event for event in everything.events[-5:] if isinstance(event, ReportedEvent)]
    assert len(reported) == 30
    dropped = len(reported) - len(kept)
    assert recorder.dropped == dropped
    wait_for(lambda: registry.get_sample_value("worker_recorder_dropped_events_total") == dropped, timeout=10)
    # The writer thread counts the drops, then logs them: wait for the line rather than race it.
    wait_for(lambda: "dropping the oldest events" in caplog.text, timeout=10, what="the overflow warning")

    switchable.repair()
    assert recorder.flush(30)
    expected = [(e.execution_id, e.record.message, e.record.timestamp) for e in kept]
    assert stored_triples() == expected  # the newest ones, in order
    assert expected[-1][1] == "max execution attempts reached"
    marker = ExecutionEvent.objects.get(execution__isnull=True)
    assert marker.level == "WARNING"
    # Why, measured: how fast events came, and that writes failed meanwhile (not "or too slow").
    assert re.fullmatch(
        rf"dropped {dropped} event\(s\), the oldest: the history buffer of 5 events was full at [\d.]+ events/s "
        rf"while writes to database 'history_switch' failed \(OperationalError: .+\)",
        marker.message,
    ), marker.message
    assert marker.node_id == recorder.node_id
    assert Node.objects.get(pk=recorder.node_id).dropped_events == dropped
    assert registry.get_sample_value("worker_recorder_dropped_events_total") == dropped
    assert f"{dropped} event(s) were dropped" in caplog.text


def test_stop_gives_up_at_its_deadline_when_the_database_stays_unreachable(
    switchable: SwitchableDatabase, scene: Scene, caplog: pytest.LogCaptureFixture
) -> None:
    switchable.break_()
    counting = Counting()
    pool = scene.pool(Failing(), max_executions_attempts=3, listeners=[counting])
    recorder = scene.recorder(pool, database=switchable.alias)
    pool.start()
    assert pool.wait(10)
    began = time.monotonic()
    recorder.stop(0.5)
    assert time.monotonic() - began < 2.0
    assert "stopped with 9 event(s) not stored and the node not marked stopped" in caplog.text


# -- a real outage of a PostgreSQL server ---------------------------------------------------------------

OUTAGE = 10.0


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_real_outage_of_postgresql_loses_no_event(private_database: PrivateDatabase, scene: Scene) -> None:
    server, alias = private_database.server, private_database.alias
    counting = Counting()
    pool = scene.pool(Failing("ticking", every=0.2), max_executions_attempts=0, listeners=[counting])
    recorder = scene.recorder(pool, database=alias, heartbeat_interval=1.0, buffer_size=100_000)
    pool.start()
    wait_for(lambda: counting.attempts >= 3, timeout=10)
    assert recorder.flush(10)

    samples: list[int] = []
    server.stop("fast")
    assert not server.ready()
    outage_began = timezone.now()
    deadline = time.monotonic() + OUTAGE
    while time.monotonic() < deadline:
        samples.append(counting.attempts)
        time.sleep(1.0)  # the outage itself is the subject: its length is fixed
    samples.append(counting.attempts)
    outage_ended = timezone.now()
    assert not server.ready()
    server.start()

    # Workers were unaffected: the attempt count kept growing, second after second.
    assert all(later > earlier for earlier, later in itertools.pairwise(samples)), samples
    assert samples[-1] - samples[0] >= 0.5 * OUTAGE / 0.2

    assert recorder.flush(30)
    pool.stop(5)
    recorder.stop(10)
    assert recorder.dropped == 0
    produced = counting.triples()
    during = [t for t in produced if outage_began <= t[2] <= outage_ended]
    assert len(during) >= 3 * (samples[-1] - samples[0]) - 3
    assert by_execution(stored_triples(alias)) == by_execution(produced)  # every event, the outage's included
    assert Execution.objects.using(alias).count() == counting.attempts
    assert not ExecutionEvent.objects.using(alias).filter(execution__isnull=True).exists()  # nothing dropped
