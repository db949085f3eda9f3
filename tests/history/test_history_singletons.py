"""The recorder keeps a singleton worker's role and fence in its state row (WorkerState.role, .fence).

Unit tests of StateLog build the lease events by hand; the others drive a real pool by hand
(``pool.lead``, ``pool.stand_by``, ``pool.mark_stuck``, as the keeper does) with a real recorder
writing to the database (SQLite, and PostgreSQL in its pass).
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from django_workers import WorkerContext, WorkerStatus
from django_workers.core.events import (
    AttemptFailed,
    AttemptStarted,
    WorkerControlled,
    WorkerLeaseChanged,
    WorkerPaused,
    WorkerStandby,
    WorkerStuck,
)
from django_workers.core.execution import Failure, WorkerExecution, WorkerExecutionEvent
from django_workers.history.states import STATE_COLUMNS, StateLog
from django_workers.models import WorkerState
from tests.history.conftest import Scene
from tests.support import FnWorker, wait_for

T0 = datetime(2026, 12, 3, 10, 0, 0, tzinfo=UTC)
RUNNING, STANDBY, ERROR, PAUSED = WorkerStatus.RUNNING, WorkerStatus.STANDBY, WorkerStatus.ERROR, WorkerStatus.PAUSED


def record(execution_id: str, message: str = "", seconds: float = 0) -> WorkerExecutionEvent:
    return WorkerExecutionEvent(execution_id, message, T0 + timedelta(seconds=seconds))


def lease(worker: str, execution_id: str, fence: int | None, status: WorkerStatus = STANDBY) -> WorkerLeaseChanged:
    text = f"lease acquired with fence {fence}" if fence is not None else "lease lost: renewal refused"
    return WorkerLeaseChanged(worker, execution_id, 0, 3, record(execution_id, text), status, fence, "renewal refused")


def standby(worker: str, execution_id: str, seconds: float = 0) -> WorkerStandby:
    return WorkerStandby(worker, execution_id, 1, 3, record(execution_id, "standing by", seconds), STANDBY)


def started(worker: str, execution_id: str, attempt: int = 1) -> AttemptStarted:
    return AttemptStarted(worker, execution_id, attempt, 3, record(execution_id, "start"), RUNNING)


def stuck(worker: str, execution_id: str) -> WorkerStuck:
    return WorkerStuck(worker, execution_id, 1, 3, record(execution_id, "did not return"), RUNNING, 25.0, "stack")


def failed(worker: str, execution_id: str) -> AttemptFailed:
    failure = Failure(RuntimeError("cancelled"), False)
    return AttemptFailed(worker, execution_id, 1, 3, record(execution_id, "failed"), ERROR, 0.5, failure)


def snapshot(name: str, **fields: object) -> WorkerExecution:
    values: dict[str, object] = {
        "id": str(uuid.uuid4()),
        "name": name,
        "status": WorkerStatus.UNKNOWN,
        "current_execution_attempt": 0,
        "max_executions_attempts": 3,
        "deferred_start_threshold": 0.0,
        "events": (),
        "singleton": True,
    }
    values.update(fields)
    return WorkerExecution(**values)  # type: ignore[arg-type]


def singleton_log(*names: str, singletons: tuple[str, ...] = ("relay",)) -> StateLog:
    executions = {name: snapshot(name, singleton=name in singletons) for name in names}
    return StateLog(lambda: list(names), lambda: executions)


# -- the state log -----------------------------------------------------------------------------------------


def test_the_state_columns_include_the_role_and_the_fence() -> None:
    assert {"role", "fence"} <= set(STATE_COLUMNS)
    assert STATE_COLUMNS[-1] == "updated_at"


def test_a_singleton_is_seeded_as_a_follower_and_other_workers_without_a_role() -> None:
    log = singleton_log("relay", "plain")
    assert [(state.worker, state.role, state.fence) for state in log.seed()] == [
        ("relay", "follower", None),
        ("plain", "", None),
    ]
    assert [state.role for state in StateLog(lambda: ["relay"]).seed()] == [""], "no snapshots: cannot tell"


def test_the_lease_events_set_the_role_and_the_fence() -> None:
    log = singleton_log("relay", "plain")
    log.seed()
    first = str(uuid.uuid4())
    state = log.apply([standby("relay", first)])["relay"]
    assert (state.status, state.role, state.fence) == ("standby", "follower", None)
    log.commit({"relay": state})

    state = log.apply([lease("relay", first, 7), started("relay", first)])["relay"]
    assert (state.status, state.role, state.fence) == ("running", "leader", 7)
    log.commit({"relay": state})

    state = log.apply([lease("relay", first, None, RUNNING)])["relay"]
    assert (state.status, state.role, state.fence) == ("running", "releasing", None), "cancelled, not returned"
    log.commit({"relay": state})

    state = log.apply([stuck("relay", first)])["relay"]
    assert (state.status, state.role, state.fence) == ("running", "stuck", None)
    log.commit({"relay": state})

    state = log.apply([failed("relay", first), standby("relay", first, 5)])["relay"]
    assert (state.status, state.role, state.fence) == ("standby", "follower", None)
    assert state.since == T0 + timedelta(seconds=5), "a follower since it stood by"


def test_a_worker_that_is_not_a_singleton_keeps_an_empty_role() -> None:
    log = singleton_log("relay", "plain")
    first = str(uuid.uuid4())
    state = log.apply([started("plain", first), failed("plain", first)])["plain"]
    assert (state.role, state.fence) == ("", None)


def test_the_first_event_of_a_singleton_not_seeded_yet_starts_from_follower() -> None:
    log = singleton_log("relay")
    log.seed()
    first = str(uuid.uuid4())
    control = WorkerControlled("relay", first, 0, 3, record(first, "paused"), STANDBY, "pause", "olga")
    assert log.apply([control])["relay"].role == "follower"


def test_a_stuck_run_that_returns_follows_even_without_a_standby() -> None:
    # A pool that is stopping publishes no standby: the row must not stay stuck (or releasing).
    log = singleton_log("relay")
    log.seed()
    first = str(uuid.uuid4())
    log.commit(log.apply([lease("relay", first, 3), started("relay", first), lease("relay", first, None, RUNNING)]))
    log.commit(log.apply([stuck("relay", first)]))
    state = log.apply([failed("relay", first)])["relay"]
    assert (state.status, state.role) == ("error", "follower")


def test_losing_the_lease_of_a_paused_singleton_follows_at_once() -> None:
    # Paused: nothing runs, nothing to release, and no standby follows while the pause stands.
    log = singleton_log("relay")
    log.seed()
    first = str(uuid.uuid4())
    paused = WorkerPaused("relay", first, 1, 3, record(first, "paused"), PAUSED)
    log.commit(log.apply([lease("relay", first, 4), paused]))
    state = log.apply([lease("relay", first, None, PAUSED)])["relay"]
    assert (state.status, state.role, state.fence) == ("paused", "follower", None)


def test_a_new_fence_replaces_the_old_one() -> None:
    log = singleton_log("relay")
    first = str(uuid.uuid4())
    log.commit(log.apply([lease("relay", first, 3)]))
    assert log.apply([lease("relay", first, 9, RUNNING)])["relay"].fence == 9


def test_a_heartbeat_corrects_the_role_from_the_snapshot() -> None:
    # The lease events were dropped (buffer full): the row is corrected at the next heartbeat.
    log = singleton_log("relay", "plain")
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    log.commit(log.apply([standby("relay", first), started("plain", second)]))
    leader = snapshot("relay", id=first, status=RUNNING, fence=12)
    plain = snapshot("plain", id=second, status=RUNNING, singleton=False)
    changed = log.reassert([], {"relay": leader, "plain": plain})
    assert list(changed) == ["relay"]
    assert (changed["relay"].role, changed["relay"].fence) == ("leader", 12)
    log.commit(changed)
    assert log.reassert([], {"relay": leader, "plain": plain}) == {}, "nothing to correct"
    cases = {
        "releasing": replace(leader, fence=None),
        "stuck": replace(leader, fence=None, stuck=True),
        "follower": replace(leader, fence=None, status=STANDBY),
    }
    for role, execution in cases.items():
        assert log.reassert([], {"relay": execution})["relay"].role == role


# -- with a real pool and recorder -------------------------------------------------------------------------


class Gate:
    """A worker body that runs until cancelled, or (``stubborn``) until its gate opens."""

    def __init__(self, stubborn: bool = False) -> None:
        self.stubborn = stubborn
        self.started = threading.Event()
        self.gate = threading.Event()

    def __call__(self, ctx: WorkerContext) -> None:
        self.started.set()
        if self.stubborn:
            self.gate.wait(30)
        else:
            ctx.sleep(float("inf"))


def row(recorder: object, worker: str) -> tuple[str, str, int | None]:
    state = WorkerState.objects.get(node_id=recorder.node_id, worker=worker)  # type: ignore[attr-defined]
    return state.status, state.role, state.fence


@pytest.mark.usefixtures("transactional_db")
def test_the_rows_follow_the_lease_of_a_real_pool(scene: Scene) -> None:
    body = Gate(stubborn=True)
    pool = scene.pool()
    pool.register(FnWorker("relay", body), singleton=True)
    pool.register(FnWorker("plain"))
    recorder = scene.recorder(pool)
    assert recorder.flush(10)
    assert row(recorder, "relay") == ("unknown", "follower", None), "seeded as a follower before any event"
    assert row(recorder, "plain") == ("unknown", "", None)

    pool.start()
    wait_for(lambda: pool.execution("relay").status is STANDBY)
    assert recorder.flush(10)
    assert row(recorder, "relay") == ("standby", "follower", None)

    pool.lead("relay", 5)
    assert body.started.wait(10)
    assert recorder.flush(10)
    assert row(recorder, "relay") == ("running", "leader", 5)

    pool.stand_by("relay", "renewal refused")
    assert recorder.flush(10)
    assert row(recorder, "relay") == ("running", "releasing", None)
    assert pool.mark_stuck("relay", 0.1)
    assert recorder.flush(10)
    assert row(recorder, "relay") == ("running", "stuck", None)

    body.gate.set()  # it returns at last
    wait_for(lambda: pool.execution("relay").status is STANDBY)
    # The report changes before the recorder hears of it: a flush right away may come first.
    wait_for(
        lambda: recorder.flush(10) and row(recorder, "relay") == ("standby", "follower", None),
        what="the standby row",
    )
    assert WorkerState.objects.get(node_id=recorder.node_id, worker="plain").role == ""


@pytest.mark.django_db(transaction=True)
def test_a_recorder_of_the_previous_release_can_still_write_its_rows() -> None:
    """During a rolling deploy the migration runs while old runworkers still insert states without the new columns."""
    from django.db import connection

    from django_workers.models import Node

    now = datetime.now(UTC)
    node = Node.objects.create(hostname="old-release", pid=1, started_at=now, last_heartbeat=now, version="0.4.0")
    table = connection.ops.quote_name(WorkerState._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (node_id, worker, position, status, attempt, max_attempts, last_error, "
            "exhausted, silent, paused, updated_at) VALUES (%s, 'relay', 0, 'running', 1, 1, '', %s, %s, %s, %s)",
            [
                Node._meta.pk.get_db_prep_value(node.pk, connection),
                False,
                False,
                False,
                connection.ops.adapt_datetimefield_value(now),
            ],
        )
    state = WorkerState.objects.get(node=node, worker="relay")
    assert (state.role, state.fence) == ("", None)
