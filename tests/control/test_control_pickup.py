"""The pickup in process: standing pauses before the start, requests applied in order, gaps, outages, LISTEN.

A real pool (workers that wait until cancelled) and a real :class:`ControlPickup` on the test database
(``transactional_db``: the pickup reads from its own thread). Rows are inserted with the ORM or ``submit()``;
``poll_now()`` stands for a notification where the time to pick up is not the subject.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection, connections
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from django_workers.control import ControlPickup, submit
from django_workers.control.listen import KEEPALIVES, Listener, listen_unavailable
from django_workers.control.pickup import GAP_LOOKBACK
from django_workers.core import WorkerPool, WorkerStatus
from django_workers.models import ControlRequest, Node
from tests.control.conftest import POSTGRESQL, W, needs_postgresql
from tests.history.conftest import SwitchableDatabase
from tests.support import FnWorker, Harness, collect_logs, wait_for

HISTORY_ON = {"HISTORY": {"ENABLED": True}, "WORKERS": [f"{W}.Sleeper"]}


def waiting(name: str) -> FnWorker:
    return FnWorker(name, lambda ctx: ctx.sleep(float("inf")))


def request(action: str, worker: str, node: Any = None, **fields: Any) -> ControlRequest:
    return ControlRequest.objects.create(
        action=action, worker=worker, node=node, requested_by="tester", requested_at=timezone.now(), **fields
    )


def attempts(pool: WorkerPool, name: str) -> int:
    return sum(1 for event in pool.execution(name).events if event.message.startswith("starting execution attempt"))


class Pickups:
    """Pickups of one test, stopped at teardown before the pools (as runworkers does)."""

    def __init__(self) -> None:
        self.started: list[ControlPickup] = []

    def start(self, pool: WorkerPool, node_id: uuid.UUID | None = None, **kwargs: Any) -> ControlPickup:
        kwargs.setdefault("poll_interval", 30.0)
        pickup = ControlPickup(kwargs.pop("database", "default"), node_id or uuid.uuid4(), **kwargs)
        pickup.start(pool)
        self.started.append(pickup)
        return pickup

    def stop(self) -> None:
        for pickup in self.started:
            pickup.stop(5.0)


@pytest.fixture
def pickups(transactional_db: None, harness: Harness) -> Iterator[Pickups]:
    """The test database (committed rows: the pickup reads from its thread); the pickups stop before the pools."""
    p = Pickups()
    try:
        yield p
    finally:
        p.stop()


def test_a_standing_pause_on_every_node_keeps_the_worker_from_starting(harness: Harness, pickups: Pickups) -> None:
    this_node = uuid.uuid4()
    other = Node.objects.create(
        hostname="other", pid=1, started_at=timezone.now(), last_heartbeat=timezone.now(), version="0", workers=["c"]
    )
    standing = request("pause", "a")  # every node: a stays paused
    request("pause", "b")
    request("resume", "b")  # the latest wins: b runs
    request("pause", "c", node=other)  # another node's pause is not this node's business
    request("restart", "d")  # an old restart is history, not state
    pool = harness.pool(waiting("a"), waiting("b"), waiting("c"), waiting("d"))
    with collect_logs() as logs:
        pickup = pickups.start(pool, this_node)
    assert pickup.cursor == ControlRequest.objects.order_by("-id").values_list("id", flat=True).first()
    execution = pool.execution("a")
    assert execution.paused and execution.status is WorkerStatus.PAUSED
    assert "paused by tester" in [event.message for event in execution.events]
    assert [name for name in "bcd" if pool.execution(name).paused] == []
    assert (
        len(
            logs.matching(
                f"control request #{standing.pk}: standing pause of worker 'a' on every node, requested by tester"
            )
        )
        == 1
    )

    pool.start()
    wait_for(lambda: all(attempts(pool, name) == 1 for name in "bcd"), what="b, c and d running")
    assert attempts(pool, "a") == 0
    assert pool.execution("a").status is WorkerStatus.PAUSED


def test_requests_to_this_node_or_every_node_are_applied_in_order(harness: Harness, pickups: Pickups) -> None:
    this_node, other_node = uuid.uuid4(), uuid.uuid4()
    for node_id, host in ((this_node, "this"), (other_node, "other")):
        Node.objects.create(
            id=node_id, hostname=host, pid=1, started_at=timezone.now(), last_heartbeat=timezone.now(),
            version="0", workers=["a", "b"],
        )  # fmt: skip
    pool = harness.pool(waiting("a"), waiting("b"), max_executions_attempts=3)
    pickup = pickups.start(pool, this_node)
    pool.start()
    wait_for(lambda: attempts(pool, "a") == 1 and attempts(pool, "b") == 1, what="a and b running")

    with collect_logs() as logs:
        pause_other = request("pause", "a", node=Node.objects.get(pk=other_node))
        pause = request("pause", "a", node=Node.objects.get(pk=this_node))
        restart = request("restart", "b")
        pickup.poll_now()
        wait_for(lambda: pool.execution("a").status is WorkerStatus.PAUSED, what="a paused")
        wait_for(lambda: attempts(pool, "b") == 2, what="b restarted")
        wait_for(lambda: pickup.cursor == restart.pk, what="the cursor past the restart")  # set after applying
    assert not logs.matching(f"control request #{pause_other.pk}")
    lines = [r.getMessage() for r in logs.records if r.getMessage().startswith("control request #")]
    assert lines == [
        f"control request #{pause.pk}: pause worker 'a' on this node, requested by tester at "
        f"{pause.requested_at:%Y-%m-%d %H:%M:%S %Z}",
        f"control request #{restart.pk}: restart worker 'b' on every node, requested by tester at "
        f"{restart.requested_at:%Y-%m-%d %H:%M:%S %Z}",
    ]
    record = logs.matching(f"control request #{restart.pk}")[0]
    assert record.levelno == logging.INFO
    assert record.worker == "b"  # type: ignore[attr-defined]
    assert record.workerExecutionID  # type: ignore[attr-defined]
    b = pool.execution("b")
    assert b.current_execution_attempt == 1  # a fresh run
    assert "restart requested by tester" in [event.message for event in b.events]

    resume = request("resume", "a")
    pickup.poll_now()
    wait_for(lambda: attempts(pool, "a") == 2, what="a resumed")
    wait_for(lambda: pickup.cursor == resume.pk, what="the cursor past the resume")


def test_an_id_the_cursor_skipped_is_applied_when_its_row_turns_up(harness: Harness, pickups: Pickups) -> None:
    """Ids are handed out at the insert and seen at the commit: a later id may be seen first."""
    pool = harness.pool(waiting("a"), waiting("b"))
    pickup = pickups.start(pool)
    pool.start()
    base = pickup.cursor
    assert base is not None
    request("pause", "b", id=base + 2)  # committed first
    pickup.poll_now()
    wait_for(lambda: pool.execution("b").paused, what="b paused")
    wait_for(lambda: pickup.cursor == base + 2, what="the cursor moved")  # set after applying
    request("pause", "a", id=base + 1)  # the earlier insert commits now
    pickup.poll_now()
    wait_for(lambda: pool.execution("a").paused, what="a paused by the request the cursor had skipped")


def test_a_restart_on_every_node_lifts_a_standing_pause(harness: Harness, pickups: Pickups) -> None:
    """A restart clears a pause in the pool: the next runworkers started must agree, not pause again."""
    this_node = uuid.uuid4()
    request("pause", "a")
    request("restart", "a")  # every node: a runs again, here and on every node started later
    request("pause", "b")
    request("restart", "b")
    request("pause", "b")  # the latest of the three decides: b stays paused
    pool = harness.pool(waiting("a"), waiting("b"))
    with collect_logs() as logs:
        pickups.start(pool, this_node)
    assert not pool.execution("a").paused
    assert pool.execution("b").paused
    assert not logs.matching("standing pause of worker 'a'")
    pool.start()
    wait_for(lambda: attempts(pool, "a") == 1, what="a running")
    assert pool.execution("a").status is WorkerStatus.RUNNING
    assert attempts(pool, "b") == 0


#: Per worker of the mixed case: its requests, oldest first, as (action, where: "every" | "this" | "other" node).
MIXED: dict[str, list[tuple[str, str]]] = {
    "w00": [("pause", "every")],
    "w01": [("pause", "this")],
    "w02": [("pause", "other")],  # another node's business
    "w03": [("pause", "every"), ("resume", "this")],  # this node's newer resume wins
    "w04": [("pause", "this"), ("resume", "every")],
    "w05": [("resume", "every"), ("pause", "this")],
    "w06": [("pause", "every"), ("restart", "every")],  # a restart lifts a pause
    "w07": [("restart", "every"), ("pause", "every")],
    "w08": [("pause", "every"), ("resume", "other")],
    "w09": [("pause", "this"), ("restart", "other")],
    "w10": [("pause", "every"), ("resume", "every"), ("pause", "this"), ("resume", "other")],
    "w11": [("restart", "this")],
    "w12": [("pause", "every"), ("explode", "every")],  # not a decision: the pause still stands
    "gone": [("pause", "every")],  # not in the pool
}


def counting_sync(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The SQL of each start-up read (``_sync``, run by the pickup's thread on its own connection)."""
    reads: list[list[str]] = []
    sync = ControlPickup._sync

    def counted(self: ControlPickup) -> None:
        with CaptureQueriesContext(connections[self.database]) as captured:
            sync(self)
        reads.append([query["sql"] for query in captured.captured_queries])

    monkeypatch.setattr(ControlPickup, "_sync", counted)
    return reads


def test_the_start_reads_the_standing_state_in_queries_that_do_not_grow_with_the_workers(
    harness: Harness, pickups: Pickups, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One read for every worker, with the rules of the per-worker reads: the newest decision wins."""
    this_node, other_node = uuid.uuid4(), uuid.uuid4()
    nodes: dict[str, Node | None] = {"every": None}
    for node_id, where in ((this_node, "this"), (other_node, "other")):
        nodes[where] = Node.objects.create(
            id=node_id, hostname=where, pid=1, started_at=timezone.now(), last_heartbeat=timezone.now(),
            version="0", workers=[],
        )  # fmt: skip
    # Round-robin, so that the ids of the workers interleave: the n-th request of each, then the n+1-th.
    decided: dict[str, tuple[int, str]] = {}
    deciding_node: dict[str, str] = {}
    for step in range(max(len(steps) for steps in MIXED.values())):
        for name, steps in MIXED.items():
            if step < len(steps):
                action, where = steps[step]
                row = request(action, name, node=nodes[where])
                if where != "other" and action != "explode":
                    decided[name] = (row.pk, action)
                    deciding_node[name] = "this node" if where == "this" else "every node"
    paused = {name for name, (_, action) in decided.items() if action == "pause" and name != "gone"}
    assert paused == {"w00", "w01", "w05", "w07", "w08", "w09", "w10", "w12"}
    reads = counting_sync(monkeypatch)

    one = harness.pool(waiting("w00"))
    pickups.start(one, this_node)
    assert one.execution("w00").paused

    names = [f"w{i:02}" for i in range(20)]
    pool = harness.pool(*(waiting(name) for name in names))
    with collect_logs() as logs:
        pickup = pickups.start(pool, this_node)
    assert [name for name in names if pool.execution(name).paused] == sorted(paused)
    assert pickup._decided == {name: decided[name] for name in names if name in decided}  # what late ones meet
    lines = [r.getMessage().split(", requested by")[0] for r in logs.records if "standing pause" in r.getMessage()]
    assert lines == [
        f"control request #{decided[name][0]}: standing pause of worker {name!r} on {deciding_node[name]}"
        for name in sorted(paused)
    ]
    assert len(reads) == 2
    assert len(reads[0]) == len(reads[1]) == 3, reads  # the cursor, the ids below it, the standing state


def insert_at(offset: int, action: str, worker: str, base: int) -> ControlRequest:
    """A request with id ``base + offset``: an insert whose id was handed out before it committed."""
    return request(action, worker, id=base + offset)


def newest_id() -> int:
    return ControlRequest.objects.order_by("-id").values_list("id", flat=True).first() or 0


def test_an_id_below_the_cursor_at_start_that_commits_later_is_applied(harness: Harness, pickups: Pickups) -> None:
    """The cursor read at start may pass ids whose inserts have not committed yet: they are looked for."""
    base = newest_id()
    insert_at(5, "restart", "b", base)  # committed before the start; ids base+1..base+4 are not (yet)
    pool = harness.pool(waiting("a"), waiting("b"))
    pickup = pickups.start(pool)
    assert pickup.cursor == base + 5
    pool.start()
    wait_for(lambda: attempts(pool, "a") == 1, what="a running")
    late = insert_at(3, "pause", "a", base)  # its transaction commits after the start's read
    pickup.poll_now()
    wait_for(lambda: pool.execution("a").paused, what="a paused by the request below the start's cursor")
    assert pickup.cursor == base + 5
    assert late.pk < pickup.cursor


def test_only_the_recent_ids_below_the_start_cursor_are_looked_for(harness: Harness, pickups: Pickups) -> None:
    base = newest_id()
    insert_at(GAP_LOOKBACK + 10, "restart", "b", base)
    pool = harness.pool(waiting("a"), waiting("b"))
    pickup = pickups.start(pool)
    assert sorted(pickup._missing) == list(range(base + 11, base + GAP_LOOKBACK + 10))


def test_a_request_that_turns_up_late_does_not_undo_a_newer_decision(harness: Harness, pickups: Pickups) -> None:
    pool = harness.pool(waiting("a"), waiting("b"), waiting("c"))
    pickup = pickups.start(pool)
    pool.start()
    wait_for(lambda: all(attempts(pool, name) == 1 for name in "abc"), what="a, b and c running")
    base = pickup.cursor
    assert base is not None

    insert_at(2, "pause", "a", base)
    insert_at(5, "pause", "b", base)
    insert_at(7, "restart", "c", base)
    pickup.poll_now()
    # paused is set by the request; the status once the attempt has ended.
    wait_for(lambda: all(pool.execution(name).paused for name in "ab"), what="a and b paused")
    wait_for(lambda: all(pool.execution(name).status is WorkerStatus.PAUSED for name in "ab"), what="a and b ended")
    wait_for(lambda: attempts(pool, "c") == 2, what="c restarted")

    with collect_logs() as logs:
        insert_at(1, "resume", "a", base)  # older than the pause of a: in id order, the pause decides
        insert_at(4, "restart", "b", base)  # older than the pause of b: it must not lift it
        insert_at(6, "restart", "c", base)  # older than a restart: nothing newer forbids it
        pickup.poll_now()
        wait_for(lambda: attempts(pool, "c") == 3, what="the late restart of c applied")
        wait_for(lambda: len(logs.matching("skipped")) == 2, what="the late resume and restart skipped")
    assert logs.matching(
        f"control request #{base + 1}: resume of worker 'a' skipped: it turned up late, after the newer request "
        f"#{base + 2} (pause), which decides",
        logging.INFO,
    )
    assert logs.matching(
        f"control request #{base + 4}: restart of worker 'b' skipped: it turned up late, and would lift the newer "
        f"pause #{base + 5}",
        logging.INFO,
    )
    for name in "ab":
        assert pool.execution(name).status is WorkerStatus.PAUSED
        assert attempts(pool, name) == 1


def test_a_late_request_older_than_the_standing_state_is_skipped(harness: Harness, pickups: Pickups) -> None:
    base = newest_id()
    insert_at(2, "pause", "a", base)  # the standing state; base+1 is not committed yet
    pool = harness.pool(waiting("a"))
    pickup = pickups.start(pool)
    assert pool.execution("a").paused
    with collect_logs() as logs:
        insert_at(1, "resume", "a", base)
        pickup.poll_now()
        wait_for(lambda: logs.matching(f"control request #{base + 1}: resume of worker 'a' skipped"), what="skipped")
    assert pool.execution("a").paused


def test_a_request_for_a_worker_this_node_does_not_run(harness: Harness, pickups: Pickups) -> None:
    this_node = uuid.uuid4()
    Node.objects.create(
        id=this_node, hostname="this", pid=1, started_at=timezone.now(), last_heartbeat=timezone.now(),
        version="0", workers=["elsewhere"],
    )  # fmt: skip
    pool = harness.pool(waiting("a"))
    pickup = pickups.start(pool, this_node)
    pool.start()
    with collect_logs() as logs:
        every = request("pause", "elsewhere")
        mine = request("pause", "elsewhere", node=Node.objects.get(pk=this_node))
        broken = request("explode", "a")  # inserted by hand: never retried, never blocks the next ones
        after = request("pause", "a")
        pickup.poll_now()
        wait_for(lambda: pool.execution("a").paused, what="a paused")
    assert logs.matching(f"control request #{every.pk}: this node does not run worker 'elsewhere'", logging.DEBUG)
    assert logs.matching(f"control request #{mine.pk}: this node does not run worker 'elsewhere'", logging.WARNING)
    assert logs.matching(f"control request #{broken.pk}: unknown action 'explode'; ignored", logging.WARNING)
    wait_for(lambda: pickup.cursor == after.pk, what="the cursor moved")  # set after applying


def test_a_request_after_the_pool_stopped_is_not_applied(harness: Harness, pickups: Pickups) -> None:
    pool = harness.pool(waiting("a"))
    pickup = pickups.start(pool)
    pool.start()
    assert pool.stop(5) == []
    with collect_logs() as logs:
        late = request("restart", "a")
        pickup.poll_now()
        wait_for(lambda: pickup.cursor == late.pk, what="the request read")
    assert logs.matching(f"control request #{late.pk}: not applied, the pool is stopping")
    assert attempts(pool, "a") == 1


def test_a_database_that_does_not_answer_at_start_delays_the_standing_pauses_not_the_workers(
    switchable: SwitchableDatabase, transactional_db: None, harness: Harness, pickups: Pickups
) -> None:
    request("pause", "a")
    switchable.break_()
    pool = harness.pool(waiting("a"), waiting("b"))
    with collect_logs() as logs:
        began = time.monotonic()
        pickup = pickups.start(pool, database=switchable.alias, poll_interval=0.1, startup_wait=0.3, listen=False)
        waited = time.monotonic() - began
        assert 0.3 <= waited < 3
        assert logs.matching("control requests: the database did not answer within 0.3 s; the workers start now")
        wait_for(lambda: logs.matching("control requests: reading them from database 'history_switch' failed"))
    pool.start()
    wait_for(lambda: attempts(pool, "a") == 1 and attempts(pool, "b") == 1, what="both running")
    assert pickup.cursor is None

    with collect_logs() as logs:
        switchable.repair()
        wait_for(lambda: pool.execution("a").status is WorkerStatus.PAUSED, what="the standing pause applied")
        wait_for(lambda: logs.matching("control requests: reading them from database 'history_switch' again"))
    assert pool.execution("b").status is WorkerStatus.RUNNING


def test_stop_leaves_a_hung_read_behind_instead_of_eating_the_stop_budget(
    harness: Harness, pickups: Pickups, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool = harness.pool(waiting("a"))
    pickup = pickups.start(pool)
    reading, release = threading.Event(), threading.Event()

    def hung_read() -> None:  # a database read that does not answer
        reading.set()
        release.wait(30)

    monkeypatch.setattr(pickup, "_poll", hung_read)
    pickup.poll_now()
    assert reading.wait(5)
    try:
        with collect_logs() as logs:
            began = time.monotonic()
            pickup.stop(20.0)
            took = time.monotonic() - began
        assert took < 3, f"stop() took {took:.1f} s"
        assert logs.matching("control requests: the pickup thread did not stop in time", logging.WARNING)
    finally:
        release.set()
    thread = pickup._thread
    assert thread is not None
    thread.join(5)
    assert not thread.is_alive()


class StuckListener:
    """A listener whose thread would not end (stuck in a connection)."""

    def stop(self, timeout: float) -> bool:
        assert timeout <= 1.0
        return False


def test_stop_warns_when_the_listen_thread_does_not_end(harness: Harness, pickups: Pickups) -> None:
    pickup = pickups.start(harness.pool(waiting("a")), listen=False)
    pickup._listener = StuckListener()  # type: ignore[assignment]
    with collect_logs() as logs:
        pickup.stop(10.0)
    assert logs.matching("control requests: the LISTEN thread did not stop in time", logging.WARNING)


@needs_postgresql
def test_the_listen_connection_has_tcp_keepalives(transactional_db: None) -> None:
    """A connection that died silently is noticed by the kernel's keepalives, then reconnected."""
    listener = Listener("default", lambda: None)
    connection_ = listener._connect()
    try:
        parameters = connection_.info.get_parameters()
        assert {key: parameters.get(key) for key in KEEPALIVES} == {key: str(v) for key, v in KEEPALIVES.items()}
    finally:
        connection_.close()


def test_the_listener_is_for_postgresql_only(transactional_db: None) -> None:
    reason = listen_unavailable("default")
    if POSTGRESQL:
        assert reason is None
    else:
        assert reason == "database 'default' is sqlite, not PostgreSQL"
        with pytest.raises(ValueError, match="cannot LISTEN for control requests: database 'default' is sqlite"):
            ControlPickup("default", uuid.uuid4(), poll_interval=1, listen=True).start(WorkerPool())


@needs_postgresql
@override_settings(WORKERS=HISTORY_ON)
def test_on_postgresql_a_notification_wakes_the_pickup_and_the_listener_survives_its_connection(
    harness: Harness, pickups: Pickups
) -> None:
    this_node = uuid.uuid4()
    Node.objects.create(
        id=this_node, hostname="this", pid=1, started_at=timezone.now(), last_heartbeat=timezone.now(),
        version="0", workers=["a"],
    )  # fmt: skip
    pool = harness.pool(waiting("a"), max_executions_attempts=1)
    with collect_logs() as logs:
        pickup = pickups.start(pool, this_node, poll_interval=60.0)
        wait_for(lambda: logs.matching("control requests: listening on PostgreSQL channel 'django_workers_control'"))
    pool.start()
    wait_for(lambda: attempts(pool, "a") == 1, what="a running")

    began = time.monotonic()
    submit("restart", "a", this_node, requested_by="notified")
    wait_for(lambda: attempts(pool, "a") == 2, timeout=5, what="a restarted")
    latency = time.monotonic() - began
    assert latency < 1.0, f"picked up in {latency:.3f} s: only a notification explains less than the 60 s poll"

    # The database drops the LISTEN connection: the listener reconnects (and polls once, for what it missed).
    with collect_logs() as logs, connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND query LIKE 'LISTEN%%' AND pid <> pg_backend_pid()"
        )
        assert cursor.fetchall() == [(True,)]
        wait_for(lambda: logs.matching("control requests: LISTEN on database 'default' failed"), what="the loss")
        wait_for(lambda: logs.matching("control requests: listening again on PostgreSQL channel"), what="reconnected")
    began = time.monotonic()
    submit("restart", "a", this_node, requested_by="notified")
    wait_for(lambda: attempts(pool, "a") == 3, timeout=5, what="a restarted again")
    assert time.monotonic() - began < 1.0
    wait_for(
        lambda: pickup.cursor == ControlRequest.objects.order_by("-id").values_list("id", flat=True).first(),
        what="the cursor moved",
    )  # set after applying
    connections.close_all()
