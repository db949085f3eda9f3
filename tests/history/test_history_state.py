"""The recorder keeps each worker's state (WorkerState) and the tallies per period (ExecutionTally).

With a real pool and the real database (SQLite, and PostgreSQL in its pass): the rows agree with
what the pool reports; the unit tests of StateLog and the tally statements build events by hand.
"""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from django_workers import Worker, WorkerContext
from django_workers.core.events import (
    AttemptFailed,
    AttemptStarted,
    WorkerControlled,
    WorkerDeferred,
    WorkerPaused,
    WorkerRestarting,
)
from django_workers.core.execution import Failure, WorkerExecutionEvent, WorkerStatus
from django_workers.history import prune_step
from django_workers.history import states as history_states
from django_workers.history.states import StateLog
from django_workers.history.tallies import add_tallies, count_lost, period_start, tally_events
from django_workers.models import TALLY_PERIOD, ExecutionStatus, ExecutionTally, Node, WorkerState
from tests.history.conftest import Scene
from tests.history.test_history_recorder import Flaky, UntilCancelled
from tests.support import wait_for

pytestmark = pytest.mark.usefixtures("transactional_db")

T0 = datetime(2026, 12, 3, 10, 0, 0, tzinfo=UTC)


def make_node(**fields: object) -> Node:
    values: dict[str, object] = {
        "hostname": "host-a",
        "pid": 1,
        "started_at": T0,
        "last_heartbeat": T0,
        "version": "0.1.0",
    }
    values.update(fields)
    return Node.objects.create(**values)


def tally_sums(**filters: object) -> dict[str, tuple[int, int, int, int, int]]:
    sums: dict[str, list[int]] = {}
    for row in ExecutionTally.objects.filter(**filters):
        total = sums.setdefault(row.worker, [0] * 5)
        for i, value in enumerate((row.started, row.succeeded, row.failed, row.lost, row.restarted)):
            total[i] += value
    return {worker: tuple(values) for worker, values in sums.items()}  # type: ignore[misc]


# -- with a real pool ----------------------------------------------------------------------------------


def test_states_and_tallies_follow_a_failing_then_succeeding_worker(scene: Scene) -> None:
    pool = scene.pool(Flaky(), Flaky("never", succeed_at=99), max_executions_attempts=3)
    recorder = scene.recorder(pool)
    pool.start()
    assert pool.wait(10)
    assert recorder.flush(10)

    flaky, never = pool.execution("flaky"), pool.execution("never")
    states = {state.worker: state for state in WorkerState.objects.filter(node_id=recorder.node_id)}
    assert set(states) == {"flaky", "never"}
    assert [states["flaky"].position, states["never"].position] == [0, 1]

    state = states["flaky"]
    assert (state.status, state.attempt, state.max_attempts) == ("success", 3, 3)
    assert str(state.execution_id) == flaky.id
    assert state.last_error == "boom 2"
    second = [event.execution_id for event in flaky.events if event.message.startswith("stopping execution attempt 2")]
    assert [str(state.last_error_execution_id)] == second
    assert not state.exhausted and not state.silent and not state.paused
    assert state.since == flaky.events[-1].timestamp  # success since the attempt's end

    state = states["never"]
    assert (state.status, state.attempt, state.exhausted, state.last_error) == ("error", 3, True, "boom 3")
    assert str(state.last_error_execution_id) == never.id

    # started, succeeded, failed, lost, restarted
    assert tally_sums(node_id=recorder.node_id) == {"flaky": (3, 1, 2, 0, 2), "never": (3, 0, 3, 0, 2)}
    for row in ExecutionTally.objects.all():
        assert row.period_start.timestamp() % TALLY_PERIOD == 0


def test_registered_workers_get_an_unknown_state_when_the_node_starts(scene: Scene) -> None:
    started = threading.Event()
    pool = scene.pool(UntilCancelled("first", started), UntilCancelled("second"), UntilCancelled("third"))
    recorder = scene.recorder(pool)  # the pool is not started: no event yet
    assert recorder.flush(10)
    rows = list(WorkerState.objects.filter(node_id=recorder.node_id).order_by("position"))
    assert [(row.worker, row.position, row.status, row.attempt) for row in rows] == [
        ("first", 0, "unknown", 0),
        ("second", 1, "unknown", 0),
        ("third", 2, "unknown", 0),
    ]
    assert all(row.since is None and row.execution_id is None for row in rows)
    assert not ExecutionTally.objects.exists()

    pool.start()
    assert started.wait(10)
    assert recorder.flush(10)
    first = WorkerState.objects.get(node_id=recorder.node_id, worker="first")
    wait = pool.execution("first")
    assert (first.status, first.attempt, str(first.execution_id)) == ("running", 1, wait.id)


def test_a_node_deleted_takes_its_states_and_tallies_with_it(scene: Scene) -> None:
    pool = scene.pool(Flaky("once", succeed_at=1))
    recorder = scene.recorder(pool)
    pool.start()
    assert pool.wait(10)
    assert recorder.flush(10)
    assert WorkerState.objects.filter(node_id=recorder.node_id).exists()
    assert ExecutionTally.objects.filter(node_id=recorder.node_id).exists()
    other = make_node()
    WorkerState.objects.create(node=other, worker="x", status="running", updated_at=T0)
    ExecutionTally.objects.create(node=other, worker="x", period_start=T0, started=1)
    assert ExecutionTally.objects.filter(node=other).exists()
    other_id = other.pk
    other.delete()
    assert not WorkerState.objects.filter(node_id=other_id).exists()
    assert not ExecutionTally.objects.filter(node_id=other_id).exists()
    assert WorkerState.objects.filter(node_id=recorder.node_id).count() == 1
    assert ExecutionTally.objects.filter(node_id=recorder.node_id).exists(), "another node's stay"


def test_a_node_taken_for_lost_while_alive_shows_its_workers_running_again_after_a_heartbeat(
    scene: Scene,
) -> None:
    started = threading.Event()
    pool = scene.pool(UntilCancelled("patient", started))
    recorder = scene.recorder(pool, heartbeat_interval=0.05)
    pool.start()
    assert started.wait(10)
    assert recorder.flush(10)
    execution_id = uuid.UUID(pool.execution("patient").id)
    before = WorkerState.objects.get(node_id=recorder.node_id, worker="patient")
    assert (before.status, before.execution_id) == ("running", execution_id)
    # Another node saw no heartbeat within the grace period (this one stalled) and swept it.
    with transaction.atomic():
        count_lost("default", recorder.node_id, [("patient", execution_id, datetime.now(UTC))])
        swept = WorkerState.objects.get(node_id=recorder.node_id, worker="patient")
        assert swept.status == ExecutionStatus.LOST
    # The worker runs on without an event; the next heartbeat says so again.
    wait_for(
        lambda: WorkerState.objects.get(node_id=recorder.node_id, worker="patient").status == "running",
        what="the state running again after a heartbeat",
    )
    state = WorkerState.objects.get(node_id=recorder.node_id, worker="patient")
    assert (state.execution_id, state.attempt, state.since) == (execution_id, 1, before.since)
    assert pool.execution("patient").status == "running"
    assert tally_sums(node_id=recorder.node_id)["patient"][3] == 1, "the sweep's count stays"


class GoesQuiet(Worker):
    """Runs without heart-beating until ``speak`` is set, then heart-beats until cancelled."""

    name = "quiet"

    def __init__(self) -> None:
        self.speak = threading.Event()

    def run(self, ctx: WorkerContext) -> None:
        while not self.speak.is_set():
            if ctx.sleep(0.01):
                return
        while not ctx.sleep(0.01):
            ctx.heartbeat()


def test_a_silent_worker_is_no_longer_silent_once_it_heart_beats_again(scene: Scene) -> None:
    worker = GoesQuiet()
    scene.gates.append(worker.speak)
    pool = scene.pool()
    pool.register(worker, max_silence=0.2)
    recorder = scene.recorder(pool, heartbeat_interval=0.05)
    pool.start()

    def silent() -> bool | None:
        rows = WorkerState.objects.filter(node_id=recorder.node_id, worker="quiet", status="running")
        return rows.values_list("silent", flat=True).first()

    wait_for(lambda: silent() is True, what="the state silent")
    assert pool.execution("quiet").silent
    first = WorkerState.objects.get(node_id=recorder.node_id, worker="quiet")
    worker.speak.set()
    wait_for(lambda: not pool.execution("quiet").silent, what="the pool's snapshot no longer silent")
    wait_for(lambda: silent() is False, what="the state no longer silent after a heartbeat")
    after = WorkerState.objects.get(node_id=recorder.node_id, worker="quiet")
    assert (after.status, after.attempt, after.execution_id) == ("running", 1, first.execution_id)
    assert after.since == first.since, "only the silent fact changed"


# -- the state log: only what changed is written -----------------------------------------------------------


def record(message: str, when: datetime = T0, execution_id: str = "") -> WorkerExecutionEvent:
    return WorkerExecutionEvent(execution_id or str(uuid.uuid4()), message, when)


def started(worker: str, attempt: int, execution_id: str, when: datetime = T0) -> AttemptStarted:
    return AttemptStarted(worker, execution_id, attempt, 3, record("start", when, execution_id), WorkerStatus.RUNNING)


def failed(worker: str, attempt: int, execution_id: str, message: str, when: datetime = T0) -> AttemptFailed:
    return AttemptFailed(
        worker,
        execution_id,
        attempt,
        3,
        record("failed", when, execution_id),
        WorkerStatus.ERROR,
        0.1,
        Failure(ValueError(message), False),
    )


def test_the_state_log_reports_only_the_states_a_batch_changed() -> None:
    log = StateLog(lambda: ["a", "b"])
    first = str(uuid.uuid4())
    touched = log.apply([started("a", 1, first), failed("a", 1, first, "boom")])
    assert list(touched) == ["a"]
    assert (touched["a"].status, touched["a"].last_error, touched["a"].position) == ("error", "boom", 0)
    log.commit(touched)
    restarting = WorkerRestarting("a", first, 1, 3, record("restarting", T0, first), WorkerStatus.ERROR, 0.0, 1, False)
    assert log.apply([restarting]) == {}, "a restart decided changes nothing the state shows"
    assert [state.worker for state in log.seed()] == ["a", "b"]


def test_pause_resume_and_restart_requests_show_in_the_state() -> None:
    log = StateLog(lambda: ["a"])
    first = str(uuid.uuid4())
    exhausted_failure = failed("a", 3, first, "last")
    log.commit(log.apply([started("a", 3, first), exhausted_failure]))
    controlled = WorkerControlled(
        "a", first, 3, 3, record("paused by alice", T0, first), WorkerStatus.ERROR, "pause", "alice"
    )
    state = log.apply([controlled])["a"]
    assert state.paused and state.status == "error"
    log.commit({"a": state})
    paused = WorkerPaused("a", first, 3, 3, record("paused", T0 + timedelta(seconds=1), first), WorkerStatus.PAUSED)
    state = log.apply([paused])["a"]
    assert (state.status, state.paused, state.since) == ("paused", True, T0 + timedelta(seconds=1))
    log.commit({"a": state})
    resume = WorkerControlled("a", first, 3, 3, record("resumed", T0, first), WorkerStatus.PAUSED, "resume", "")
    second = str(uuid.uuid4())
    state = log.apply([resume, started("a", 1, second, T0 + timedelta(seconds=2))])["a"]
    assert (state.status, state.paused, state.attempt, str(state.execution_id)) == ("running", False, 1, second)
    assert state.last_error == "last", "the last error stays until another one"


def test_a_worker_paused_before_it_started_keeps_attempt_0() -> None:
    log = StateLog(lambda: ["a"])
    first = str(uuid.uuid4())
    pause = WorkerControlled("a", first, 0, 3, record("paused by alice", T0, first), WorkerStatus.UNKNOWN, "pause", "")
    paused = WorkerPaused("a", first, 0, 3, record("paused", T0, first), WorkerStatus.PAUSED)
    state = log.apply([pause, paused])["a"]
    assert (state.status, state.paused, state.attempt) == ("paused", True, 0)
    log.commit({"a": state})
    resume = WorkerControlled("a", first, 0, 3, record("resumed", T0, first), WorkerStatus.PAUSED, "resume", "")
    assert log.apply([resume])["a"].attempt == 0
    state = log.apply([resume, started("a", 1, str(uuid.uuid4()))])["a"]
    assert (state.status, state.attempt) == ("running", 1)


def test_a_deferred_first_attempt_is_attempt_1() -> None:
    log = StateLog(lambda: ["a"])
    first = str(uuid.uuid4())
    deferred = WorkerDeferred("a", first, 0, 3, record("deferring", T0, first), WorkerStatus.DEFERRED, 5.0)
    state = log.apply([deferred])["a"]
    assert (state.status, state.attempt) == ("deferred", 1)


def test_the_last_error_is_stored_as_its_first_line() -> None:
    log = StateLog(lambda: ["a"])
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    state = log.apply([started("a", 1, first), failed("a", 1, first, "\n  boom: it broke  \nTraceback\n  more")])["a"]
    assert state.last_error == "boom: it broke"
    log.commit({"a": state})
    state = log.apply([started("a", 2, second), failed("a", 2, second, "x" * 5000 + "\nsecond")])["a"]
    assert state.last_error.startswith("x" * history_states.LAST_ERROR_LIMIT)
    assert state.last_error.endswith("[4,000 more characters cut]") and "second" not in state.last_error


# -- the tallies: one statement per batch, adding ----------------------------------------------------------


def test_tallies_are_added_with_one_statement_per_batch() -> None:
    node = make_node()
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    later = T0 + timedelta(seconds=TALLY_PERIOD + 1)
    events = [
        started("a", 1, first),
        failed("a", 1, first, "boom", T0 + timedelta(seconds=2)),
        WorkerRestarting("a", first, 1, 3, record("r", T0 + timedelta(seconds=2)), WorkerStatus.ERROR, 0.0, 1, False),
        started("a", 2, second, later),
        started("b", 1, str(uuid.uuid4()), later),
    ]
    tallies = tally_events(events)
    assert tallies == {
        ("a", T0): [1, 0, 1, 0, 1],
        ("a", period_start(later)): [1, 0, 0, 0, 0],
        ("b", period_start(later)): [1, 0, 0, 0, 0],
    }
    with CaptureQueriesContext(connection) as captured, transaction.atomic():
        add_tallies("default", node.pk, tallies)
    statements = [query["sql"] for query in captured.captured_queries if "executiontally" in query["sql"]]
    assert len(statements) == 1, statements
    add_tallies("default", node.pk, tally_events(events[:2]))  # a later batch adds to the same rows
    rows = {
        (row.worker, row.period_start): (row.started, row.succeeded, row.failed, row.lost, row.restarted)
        for row in ExecutionTally.objects.filter(node=node)
    }
    assert rows == {
        ("a", T0): (2, 0, 2, 0, 1),
        ("a", period_start(later)): (1, 0, 0, 0, 0),
        ("b", period_start(later)): (1, 0, 0, 0, 0),
    }


def test_period_start_is_a_multiple_of_the_period() -> None:
    assert period_start(T0 + timedelta(seconds=299, microseconds=999)) == T0
    assert period_start(T0 + timedelta(seconds=300)) == T0 + timedelta(seconds=300)
    assert period_start(T0 - timedelta(microseconds=1)) == T0 - timedelta(seconds=300)


def test_count_lost_counts_the_attempts_and_marks_the_current_one_lost() -> None:
    node = make_node()
    lost_id, other_id = uuid.uuid4(), uuid.uuid4()
    WorkerState.objects.create(node=node, worker="a", status="running", execution_id=lost_id, updated_at=T0)
    WorkerState.objects.create(node=node, worker="b", status="running", execution_id=other_id, updated_at=T0)
    WorkerState.objects.create(node=node, worker="c", status="success", execution_id=uuid.uuid4(), updated_at=T0)
    with transaction.atomic():
        count_lost("default", node.pk, [("a", lost_id, T0), ("c", uuid.uuid4(), T0 + timedelta(seconds=1))])
    assert tally_sums(node=node) == {"a": (0, 0, 0, 1, 0), "c": (0, 0, 0, 1, 0)}
    states = {state.worker: state for state in WorkerState.objects.filter(node=node)}
    assert (states["a"].status, states["a"].since) == (ExecutionStatus.LOST, T0)
    assert states["b"].status == "running", "another attempt is not touched"
    assert states["c"].status == "success", "a state that moved on is not touched"
    count_lost("default", node.pk, [])  # nothing closed: nothing written
    assert tally_sums(node=node)["a"] == (0, 0, 0, 1, 0)


def test_pruning_deletes_tallies_older_than_the_cutoff() -> None:
    node = make_node(last_heartbeat=datetime.now(UTC))
    old, recent = T0 - timedelta(days=10), T0
    for start in (old, old + timedelta(seconds=TALLY_PERIOD), recent):
        ExecutionTally.objects.create(node=node, worker="a", period_start=start, started=1)
    counts = prune_step("default", T0 - timedelta(days=1), batch_size=100)
    assert counts.tallies == 2 and counts.total == 2
    assert list(ExecutionTally.objects.values_list("period_start", flat=True)) == [recent]
