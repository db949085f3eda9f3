"""Chaos on a real PostgreSQL server: the history stays true while its connections die and the server restarts.

Crash-looping workers run under history on a server of the test's own
(:mod:`tests.history.pgserver`: never the machine's shared server). Meanwhile the writer's
connections are terminated (``pg_terminate_backend``), several times, and the server is stopped
and started again, long enough for the buffer to overflow. Afterwards the history's invariants
hold (:func:`tests.history.truth.check_history`): every stored event is one the pool reported,
every stored attempt has a truthful end or is ``unknown``, and the counts reconcile with the
pool's own counters (stored + dropped = reported; the node and the markers say how many were dropped).
"""

from __future__ import annotations

import threading

import pytest
from prometheus_client import CollectorRegistry

from django_workers import Backoff, Worker, WorkerContext
from django_workers.metrics import WorkerMetrics
from django_workers.models import Execution, ExecutionEvent, Node
from tests.history.conftest import Counting, PrivateDatabase, Scene
from tests.history.truth import check_history, closings
from tests.support import collect_logs, wait_for

pytestmark = pytest.mark.slow


class Crashing(Worker):
    """Runs a few milliseconds, then fails: a crash loop."""

    def __init__(self, name: str) -> None:
        self.name = name

    def run(self, ctx: WorkerContext) -> None:
        if not ctx.sleep(0.005):
            raise RuntimeError(f"{self.name} crashed in attempt {ctx.attempt}")


class Steady(Worker):
    """Runs until the stop (its attempt spans the whole chaos)."""

    name = "steady"

    def run(self, ctx: WorkerContext) -> None:
        while not ctx.sleep(60):
            pass


class Stuck(Worker):
    """Ignores the stop until the test lets it go."""

    name = "stuck"

    def __init__(self, gate: threading.Event) -> None:
        self.gate = gate

    def run(self, ctx: WorkerContext) -> None:
        self.gate.wait(60)


@pytest.mark.timeout(240)
def test_terminated_connections_and_a_server_restart_leave_a_true_history(
    private_database: PrivateDatabase, scene: Scene
) -> None:
    server, alias = private_database.server, private_database.alias
    gate = threading.Event()
    scene.gates.append(gate)
    counting = Counting()
    metrics = WorkerMetrics()
    registry = CollectorRegistry()
    metrics.register(registry)
    pool = scene.pool(
        *(Crashing(f"crash-{index}") for index in range(8)),
        max_executions_attempts=0,
        restart_backoff=Backoff(initial=0.01, maximum=0.01, jitter=0),
        listeners=[counting],
        metrics=metrics,
    )
    pool.register(Steady(), max_executions_attempts=1)
    pool.register(Stuck(gate), max_executions_attempts=1)
    recorder = scene.recorder(pool, database=alias, buffer_size=2_000, heartbeat_interval=0.5)
    pool.start()
    wait_for(lambda: counting.attempts >= 100, timeout=30, what="the crash loops under way")
    assert recorder.flush(30)

    # The writer's connection is killed again and again: it reconnects.
    for _ in range(3):
        assert recorder.flush(30)
        terminated = server.terminate_connections(private_database.name)
        assert terminated >= 1  # the writer keeps its connection open between batches
        before = counting.attempts
        wait_for(lambda before=before: counting.attempts >= before + 50, timeout=30, what="more attempts")
    assert recorder.flush(30)

    # The server restarts; down until the writer saw its writes fail and the buffer overflowed.
    with collect_logs() as logs:
        server.stop("fast")
        wait_for(lambda: logs.matching("cannot write to database 'history_private'"), timeout=30, what="writes failing")
        dropped = recorder.dropped
        wait_for(lambda: recorder.dropped > dropped, timeout=60, interval=0.05, what="the buffer overflowing")
    server.start()
    assert recorder.flush(60)
    before = counting.attempts
    wait_for(lambda: counting.attempts >= before + 50, timeout=30, what="more attempts after the restart")

    assert pool.stop(1.0) == ["stuck"]
    recorder.stop(30)

    statuses = check_history(alias, recorder, counting, registry)
    assert statuses["error"] > 0
    node = Node.objects.using(alias).get(pk=recorder.node_id)
    assert node.stopped_at is not None
    markers = ExecutionEvent.objects.using(alias).filter(node=node, execution__isnull=True)
    assert any("while writes to database 'history_private' failed" in marker.message for marker in markers), [
        marker.message for marker in markers
    ]
    # The two long attempts: the steady one stopped with success, the stuck one was still running.
    steady = Execution.objects.using(alias).get(node=node, worker="steady")
    assert steady.status == "success"
    stuck = Execution.objects.using(alias).get(node=node, worker="stuck")
    assert (stuck.status, stuck.error) == ("lost", closings(recorder)[1])
