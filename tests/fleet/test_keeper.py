"""The lease keeper in one process: nodes (a pool and a keeper each) share the lease table.

On SQLite and on PostgreSQL (the suite's second pass). The timings are short (a lease of 1.2 s)
so that expiry happens within a test; every run of the singleton is recorded with its node, its
fence and its monotonic start and end, and checked for overlap. The several-process faults
(SIGKILL, SIGSTOP, partitions, PgBouncer) are in test_fleet_processes.py.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.db import OperationalError

from django_workers import WorkerContext, WorkerPool, WorkerStatus
from django_workers.fleet import FOLLOWER, LEADER, STUCK, LeaseKeeper, current, leases
from tests.support import FnWorker, collect_logs, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

TTL, RENEW, MARGIN, STOP = 1.2, 0.2, 0.1, 0.3


@dataclass
class Run:
    node: str
    fence: int | None
    start: float
    end: float | None = None


@dataclass
class Oracle:
    runs: list[Run] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def overlaps(self) -> list[tuple[Run, Run]]:
        with self.lock:
            runs = sorted(self.runs, key=lambda run: run.start)
        found = []
        for i, first in enumerate(runs):
            for second in runs[i + 1 :]:
                if first.node != second.node and (first.end is None or second.start < first.end):
                    found.append((first, second))
        return found

    def fences(self) -> list[int | None]:
        with self.lock:
            return [run.fence for run in sorted(self.runs, key=lambda run: run.start)]


class Node:
    """A pool with one singleton worker ``relay`` and a keeper holding its lease."""

    def __init__(self, label: str, oracle: Oracle, body: Callable[[WorkerContext], None] | None = None) -> None:
        self.label = label
        self.oracle = oracle
        self.holder = uuid.uuid4()
        self.pool = WorkerPool(stop_timeout=STOP, log=True)
        self.pool.register(FnWorker("relay", body or self.run), singleton=True)
        self.keeper = LeaseKeeper(self.holder, ttl=TTL, renew=RENEW, margin=MARGIN, stop_timeout=STOP)
        self.stopped = False

    def run(self, ctx: WorkerContext) -> None:
        run = Run(self.label, ctx.fence, time.monotonic())
        with self.oracle.lock:
            self.oracle.runs.append(run)
        try:
            ctx.sleep(float("inf"))
        finally:
            run.end = time.monotonic()

    def start(self) -> Node:
        self.keeper.start(self.pool)
        self.pool.start()
        return self

    def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            self.pool.stop()
            self.keeper.stop(5.0)

    @property
    def role(self) -> str:
        return self.keeper.seats()[0].role

    @property
    def status(self) -> WorkerStatus:
        return self.pool.execution("relay").status


class Stubborn:
    """A worker body that ignores its cancellation until the test opens the gate (30 s at most)."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.began = threading.Event()

    def __call__(self, ctx: WorkerContext) -> None:
        self.began.set()
        self.gate.wait(30)


@pytest.fixture
def nodes() -> Iterator[Callable[..., Node]]:
    made: list[Node] = []

    def make(label: str, oracle: Oracle, body: Callable[[WorkerContext], None] | None = None) -> Node:
        node = Node(label, oracle, body)
        made.append(node)
        return node.start()

    yield make
    for node in made:
        node.stop()


def leader_of(*candidates: Node) -> Node:
    wait_for(lambda: any(node.role == LEADER for node in candidates), what="a leader")
    (leader,) = [node for node in candidates if node.role == LEADER]
    return leader


def test_one_node_runs_the_singleton_and_a_graceful_stop_hands_it_over_at_once(nodes: Callable[..., Node]) -> None:
    oracle = Oracle()
    a, b = nodes("a", oracle), nodes("b", oracle)
    first = leader_of(a, b)
    other = b if first is a else a
    wait_for(lambda: first.status is WorkerStatus.RUNNING)
    assert other.role == FOLLOWER and other.status is WorkerStatus.STANDBY
    assert first.pool.execution("relay").fence == 1
    row = current("relay")
    assert row is not None and (row.holder, row.fence) == (first.holder, 1)

    stopped_at = time.monotonic()
    first.stop()
    row = current("relay")
    assert row is not None and row.holder is None, "the lease was released once the worker returned"
    wait_for(lambda: len(oracle.runs) == 2, what="the follower's takeover")
    takeover = oracle.runs[-1].start - stopped_at
    assert takeover < TTL, f"released, not waited out: took over in {takeover:.3f} s"
    assert oracle.fences() == [1, 2]
    assert oracle.overlaps() == []


def test_a_leader_that_cannot_renew_cancels_its_worker_before_the_lease_expires(
    nodes: Callable[..., Node], monkeypatch: pytest.MonkeyPatch
) -> None:
    oracle = Oracle()
    a = nodes("a", oracle)
    wait_for(lambda: a.status is WorkerStatus.RUNNING)
    real_renew = leases.renew

    def renew(grant: leases.Grant, ttl: float, **kwargs: Any) -> leases.Grant | None:
        if grant.holder == a.holder:
            raise OperationalError("the database is unreachable (simulated)")
        return real_renew(grant, ttl, **kwargs)

    real_release, real_acquire = leases.release, leases.acquire

    def acquire(name: str, holder: uuid.UUID, ttl: float, **kwargs: Any) -> leases.Grant | None:
        if holder == a.holder:
            raise OperationalError("the database is unreachable (simulated)")
        return real_acquire(name, holder, ttl, **kwargs)

    def release(grant: leases.Grant, **kwargs: Any) -> bool:
        if grant.holder == a.holder:
            raise OperationalError("the database is unreachable (simulated)")
        return real_release(grant, **kwargs)

    with collect_logs() as logs:
        monkeypatch.setattr(leases, "renew", renew)
        monkeypatch.setattr(leases, "release", release)  # a is cut off: it cannot release either,
        monkeypatch.setattr(leases, "acquire", acquire)  # nor take the lease again
        nodes("b", oracle)
        wait_for(lambda: a.role != LEADER, what="the leader giving up")
        wait_for(lambda: len(oracle.runs) == 2, what="the takeover")
    assert a.status is WorkerStatus.STANDBY
    assert oracle.overlaps() == [], "a's worker returned before b's began"
    assert oracle.fences() == [1, 2]
    first, second = oracle.runs
    assert first.end is not None and second.start - first.end > MARGIN, "b waited out the lease"
    messages = [record.getMessage() for record in logs.records]
    assert sum("could not " in message for message in messages) == 1, "logged once until the database answers"
    assert any(message.startswith("lost the lease of relay (not renewed within") for message in messages)
    assert a.pool.execution("relay").has_event(f"lease lost: not renewed within {TTL - MARGIN - STOP:g} seconds")


def test_a_renewal_the_database_refuses_loses_the_lease_at_once(nodes: Callable[..., Node]) -> None:
    oracle = Oracle()
    a = nodes("a", oracle)
    wait_for(lambda: a.status is WorkerStatus.RUNNING)
    intruder = uuid.uuid4()
    leases.Lease.objects.filter(name="relay").update(holder=intruder, fence=5)  # taken over behind its back
    wait_for(lambda: a.status is WorkerStatus.STANDBY, timeout=RENEW * 10)
    assert a.pool.execution("relay").has_event("lease lost: another node holds it")
    wait_for(lambda: a.role == FOLLOWER, what="a done with the lease (its release tried)")
    row = current("relay")
    assert row is not None and (row.holder, row.fence) == (intruder, 5), "a released nothing it no longer held"


def test_a_worker_that_does_not_return_is_stuck_and_its_node_never_campaigns_meanwhile(
    nodes: Callable[..., Node], monkeypatch: pytest.MonkeyPatch
) -> None:
    oracle = Oracle()
    stubborn = Stubborn()
    gate, began = stubborn.gate, stubborn.began
    try:
        a = nodes("a", oracle, stubborn)
        assert began.wait(5)
        intruder = uuid.uuid4()
        leases.Lease.objects.filter(name="relay").update(holder=intruder, fence=5)
        wait_for(lambda: a.role == STUCK, what="the stuck report")
        execution = a.pool.execution("relay")
        assert execution.stuck and execution.status is WorkerStatus.RUNNING
        leases.Lease.objects.filter(name="relay").update(holder=None)  # free: a stuck node must not take it
        acquired: list[object] = []
        real_acquire = leases.acquire
        monkeypatch.setattr(leases, "acquire", lambda *args, **kw: acquired.append(args) or real_acquire(*args, **kw))
        time.sleep(RENEW * 3)  # several campaign periods: none may campaign while the run is alive
        assert acquired == []
        assert a.role == STUCK
    finally:
        gate.set()
    wait_for(lambda: a.role == LEADER, what="the campaign once the stuck run returned")
    assert a.pool.execution("relay").fence == 6


def test_an_operators_pause_on_the_leader_hands_the_worker_over(nodes: Callable[..., Node]) -> None:
    oracle = Oracle()
    a = nodes("a", oracle)
    wait_for(lambda: a.status is WorkerStatus.RUNNING)
    b = nodes("b", oracle)
    wait_for(lambda: b.role == FOLLOWER and b.status is WorkerStatus.STANDBY)
    a.pool.pause("relay", by="alice")
    wait_for(lambda: len(oracle.runs) == 2, what="the handover")
    # a releases the lease, then records its role: b may start in between.
    wait_for(lambda: a.status is WorkerStatus.PAUSED and a.role == FOLLOWER, what="a paused and a follower")
    assert oracle.fences() == [1, 2]
    assert oracle.overlaps() == []
    b.pool.pause("relay", by="alice")
    wait_for(lambda: b.role == FOLLOWER)
    time.sleep(RENEW * 3)  # paused everywhere: nobody campaigns, nothing runs
    assert a.role == b.role == FOLLOWER
    assert len(oracle.runs) == 2


def test_at_stop_a_lease_whose_worker_did_not_return_is_left_to_expire(nodes: Callable[..., Node]) -> None:
    oracle = Oracle()
    stubborn = Stubborn()
    gate, began = stubborn.gate, stubborn.began
    a = nodes("a", oracle, stubborn)
    assert began.wait(5)
    try:
        with collect_logs() as logs:
            assert a.pool.stop(0.1) == ["relay"]
            a.keeper.stop(5.0)
            a.stopped = True
        row = current("relay")
        assert row is not None and row.holder == a.holder, "not released: the worker still runs"
        assert any("left to expire" in record.getMessage() for record in logs.records)
    finally:
        gate.set()
        wait_for(lambda: a.status is not WorkerStatus.RUNNING)


def test_a_follower_keeps_campaigning_through_a_database_outage(
    nodes: Callable[..., Node], monkeypatch: pytest.MonkeyPatch
) -> None:
    oracle = Oracle()
    failures = [3]
    real_acquire = leases.acquire

    def acquire(*args: Any, **kwargs: Any) -> leases.Grant | None:
        if failures[0]:
            failures[0] -= 1
            raise OperationalError("server closed the connection unexpectedly (simulated)")
        return real_acquire(*args, **kwargs)

    monkeypatch.setattr(leases, "acquire", acquire)
    with collect_logs() as logs:
        a = nodes("a", oracle)
        wait_for(lambda: a.status is WorkerStatus.RUNNING)
    messages = [record.getMessage() for record in logs.records]
    assert sum("could not take the lease of relay" in message for message in messages) == 1
    assert "the lease database answers again" in messages


def test_the_keeper_refuses_a_lease_that_cannot_cover_the_stop_timeout() -> None:
    with pytest.raises(ValueError, match="cannot cover its margin"):
        LeaseKeeper(uuid.uuid4(), ttl=10, renew=3, margin=1, stop_timeout=9)
    with pytest.raises(ValueError, match="renew interval"):
        LeaseKeeper(uuid.uuid4(), ttl=10, renew=10, margin=1, stop_timeout=1)


def test_a_lease_granted_after_its_trust_window_is_never_led_and_released(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An acquisition that returns too late (a slow statement, a pause after it) runs nothing under it."""
    oracle = Oracle()
    skew = [0.0]
    real_acquire = leases.acquire
    slow = [True]

    def acquire(*args: Any, **kwargs: Any) -> leases.Grant | None:
        grant = real_acquire(*args, **kwargs)
        if grant is not None and slow[0]:
            slow[0] = False
            skew[0] += TTL  # as if the statement had taken a whole TTL to come back
        return grant

    monkeypatch.setattr(leases, "acquire", acquire)
    node = Node("a", oracle)
    node.keeper = LeaseKeeper(
        node.holder, ttl=TTL, renew=RENEW, margin=MARGIN, stop_timeout=STOP, clock=lambda: time.monotonic() + skew[0]
    )
    node.start()
    try:
        wait_for(lambda: len(oracle.runs) == 1, what="a run under a trusted lease")
        assert oracle.fences() == [2], "the late grant (fence 1) was released, never led"
        execution = node.pool.execution("relay")
        assert not execution.has_event("lease acquired with fence 1")
    finally:
        node.stop()
