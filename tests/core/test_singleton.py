"""Singleton workers in the engine: they run only while the pool holds a fence for them.

``pool.lead(name, fence)`` lets one run (``ctx.fence``), ``pool.stand_by(name, reason)`` cancels it
and holds it in ``standby``, ``pool.mark_stuck`` reports one that did not return in time. Who holds
the lease is the keeper's business (tests/fleet); here the pool is driven by hand.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Callable

import pytest

from django_workers import WorkerContext, WorkerPool, WorkerStatus
from django_workers.core.events import LifecycleEvent, WorkerLeaseChanged, WorkerStandby, WorkerStuck
from django_workers.health.rule import STUCK, WorkerProbe, problem
from tests.core.conftest import EventLog
from tests.support import AsyncFnWorker, FnWorker, Harness, collect_logs, wait_for

STANDBY_MESSAGE = "execution standing by until this node holds the lease"


def _status(pool: WorkerPool, name: str, status: WorkerStatus) -> Callable[[], bool]:
    return lambda: pool.execution(name).status is status


class Fences:
    """A worker body that records the fence of each attempt and runs until cancelled."""

    def __init__(self) -> None:
        self.seen: list[int | None] = []
        self.started = threading.Event()

    def __call__(self, ctx: WorkerContext) -> None:
        self.seen.append(ctx.fence)
        self.started.set()
        ctx.sleep(float("inf"))


def test_a_singleton_stands_by_until_it_is_given_a_fence(harness: Harness) -> None:
    body = Fences()
    pool = harness.pool()
    pool.register(FnWorker("relay", body), singleton=True)
    pool.register(FnWorker("plain", body))
    pool.start()
    wait_for(lambda: len(body.seen) == 1)
    assert body.seen == [None], "a worker that is not a singleton has no fence"
    execution = pool.execution("relay")
    assert execution.status is WorkerStatus.STANDBY
    assert (execution.singleton, execution.fence, execution.stuck) == (True, None, False)
    assert [event.message for event in execution.events] == [STANDBY_MESSAGE]
    assert execution.id, "a worker standing by from the start has an execution id"
    result = WorkerProbe(pool).check()
    assert result.success, "standing by is healthy"
    assert "relay: standby" in result.message

    body.started.clear()
    pool.lead("relay", 7)
    assert body.started.wait(5)
    assert body.seen == [None, 7]
    execution = pool.execution("relay")
    assert (execution.status, execution.fence, execution.current_execution_attempt) == (WorkerStatus.RUNNING, 7, 1)
    assert execution.has_event("lease acquired with fence 7")


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_losing_the_lease_cancels_the_attempt_and_the_worker_stands_by(harness: Harness, kind: str) -> None:
    ended = threading.Event()
    fences: list[int | None] = []

    def body(ctx: WorkerContext) -> None:
        fences.append(ctx.fence)
        ctx.sleep(float("inf"))
        ended.set()

    async def async_body(ctx: WorkerContext) -> None:
        fences.append(ctx.fence)
        try:
            await ctx.asleep(float("inf"))
        finally:
            ended.set()

    worker = FnWorker("relay", body) if kind == "sync" else AsyncFnWorker("relay", async_body)
    events = EventLog()
    pool = harness.pool(listeners=[events])
    pool.register(worker, singleton=True)
    pool.lead("relay", 3)  # before start(): it starts with the pool
    pool.start()
    wait_for(_status(pool, "relay", WorkerStatus.RUNNING))
    wait_for(lambda: fences == [3])

    pool.stand_by("relay", "another node holds it")
    assert ended.wait(5), "the attempt was cancelled"
    wait_for(_status(pool, "relay", WorkerStatus.STANDBY))
    # The report changes first, then the listeners hear of it: wait for the event too.
    events.wait_until(lambda seen: any(isinstance(event, WorkerStandby) for event in seen))
    messages = [event.message for event in pool.execution("relay").events]
    assert messages[-3:] == [
        "lease lost: another node holds it",
        "stopping execution attempt 1/1 with success",
        STANDBY_MESSAGE,
    ]
    assert pool.execution("relay").fence is None
    changes = events.of(WorkerLeaseChanged)
    assert [(event.fence, event.reason) for event in changes] == [(3, ""), (None, "another node holds it")]
    assert len(events.of(WorkerStandby)) == 1, "standing by before the lease is not"

    pool.lead("relay", 4)
    wait_for(lambda: fences == [3, 4])
    assert pool.execution("relay").current_execution_attempt == 1, "a new lease begins a fresh run"


def test_an_operator_cannot_run_a_singleton_without_its_lease(harness: Harness) -> None:
    body = Fences()
    pool = harness.pool()
    pool.register(FnWorker("relay", body), singleton=True)
    pool.start()
    wait_for(_status(pool, "relay", WorkerStatus.STANDBY))
    pool.restart("relay", by="alice")
    pool.pause("relay", by="alice")
    pool.resume("relay", by="alice")
    assert pool.execution("relay").status is WorkerStatus.STANDBY
    assert body.seen == []

    pool.pause("relay", by="alice")
    pool.lead("relay", 5)
    assert pool.execution("relay").status is WorkerStatus.PAUSED, "the operator's pause stands"
    assert pool.execution("relay").fence == 5
    assert body.seen == []
    pool.resume("relay", by="alice")
    assert body.started.wait(5)
    assert body.seen == [5]


def test_losing_the_lease_while_paused_keeps_the_pause(harness: Harness) -> None:
    body = Fences()
    pool = harness.pool()
    pool.register(FnWorker("relay", body), singleton=True)
    pool.lead("relay", 1)
    pool.start()
    assert body.started.wait(5)
    pool.pause("relay", by="alice")
    wait_for(_status(pool, "relay", WorkerStatus.PAUSED))
    pool.stand_by("relay", "handed over")
    assert pool.execution("relay").status is WorkerStatus.PAUSED
    pool.resume("relay", by="alice")
    wait_for(_status(pool, "relay", WorkerStatus.STANDBY))
    assert body.seen == [1], "resumed without the lease: it stands by"


def test_a_new_fence_restarts_a_running_attempt_under_it(harness: Harness) -> None:
    body = Fences()
    pool = harness.pool()
    pool.register(FnWorker("relay", body), singleton=True)
    pool.lead("relay", 1)
    pool.start()
    wait_for(lambda: body.seen == [1])
    pool.lead("relay", 2)
    wait_for(lambda: body.seen == [1, 2])
    assert pool.execution("relay").status is WorkerStatus.RUNNING
    pool.lead("relay", 2)  # the same fence again: nothing happens
    assert body.seen == [1, 2]


def test_a_worker_that_ignores_the_loss_is_reported_stuck_until_it_returns(harness: Harness) -> None:
    gate = harness.gate()
    began = threading.Event()

    def stubborn(ctx: WorkerContext) -> None:
        began.set()
        gate.wait()

    events: list[LifecycleEvent] = []
    pool = harness.pool(listeners=[events.append])
    pool.register(FnWorker("relay", stubborn), singleton=True)
    pool.register(FnWorker("other", lambda ctx: ctx.sleep(float("inf"))))
    pool.lead("relay", 9)
    pool.start()
    assert began.wait(5)
    assert not pool.mark_stuck("relay", 1.0), "a worker that holds its lease is not stuck"
    pool.stand_by("relay", "not renewed in time")
    assert pool.mark_stuck("relay", 1.0)
    assert not pool.mark_stuck("relay", 1.0), "reported once"
    execution = pool.execution("relay")
    assert (execution.status, execution.stuck) == (WorkerStatus.RUNNING, True)
    assert execution.has_event("did not return within 1 seconds of losing its lease")
    stuck = [event for event in events if isinstance(event, WorkerStuck)]
    assert len(stuck) == 1 and "stubborn" in stuck[0].stack, "the stack shows where it hangs"
    result = WorkerProbe(pool).check()
    assert not result.success
    assert result.message == "relay: running (stuck), other: running"
    assert problem(pool.execution("relay"), stopping=False) == STUCK

    gate.set()
    wait_for(_status(pool, "relay", WorkerStatus.STANDBY))
    assert not pool.execution("relay").stuck
    assert WorkerProbe(pool).check().success
    assert not pool.mark_stuck("relay", 1.0), "it returned: nothing to report"


def test_a_singleton_registered_after_start_stands_by(harness: Harness) -> None:
    body = Fences()
    pool = harness.pool()
    pool.start()
    pool.register(FnWorker("relay", body), singleton=True)
    assert pool.execution("relay").status is WorkerStatus.STANDBY
    pool.lead("relay", 1)
    assert body.started.wait(5)
    assert body.seen == [1]


def test_wrong_lease_calls_raise(harness: Harness) -> None:
    pool = harness.pool(FnWorker("plain"))
    pool.register(FnWorker("relay"), singleton=True)
    with pytest.raises(ValueError, match="not a singleton"):
        pool.lead("plain", 1)
    with pytest.raises(LookupError, match="execution for worker nope was not found"):
        pool.stand_by("nope")
    with pytest.raises(TypeError, match="fence must be an int"):
        pool.lead("relay", True)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="fence must be an int"):
        pool.lead("relay", "1")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="reason must be a str"):
        pool.stand_by("relay", 3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="singleton must be a bool"):
        pool.register(FnWorker("third"), singleton=1)  # type: ignore[arg-type]
    pool.start()
    pool.stop(5)
    with pytest.raises(RuntimeError, match="the pool is stopped"):
        pool.lead("relay", 1)


def test_stop_while_standing_by_ends_cleanly(harness: Harness) -> None:
    pool = harness.pool()
    pool.register(FnWorker("relay"), singleton=True)
    pool.start()
    assert pool.stop(5) == []
    assert pool.execution("relay").status is WorkerStatus.STANDBY


def test_lead_and_stand_by_racing_never_run_an_attempt_without_the_lease(harness: Harness) -> None:
    """The lease flips while the workers churn: an attempt runs only under the latest fence, never on standby.

    Once ``stand_by()`` returned and the worker is seen not running, no attempt may begin until
    the next ``lead()``; every attempt sees the fence of the latest ``lead()``.
    """
    lock = threading.Lock()
    current: list[int | None] = [None]
    standing = threading.Event()
    violations: list[str] = []
    attempts = [0]

    def body(ctx: WorkerContext) -> None:
        with lock:
            attempts[0] += 1
            if standing.is_set():
                violations.append(f"attempt under fence {ctx.fence} while standing by")
            elif ctx.fence != current[0]:
                violations.append(f"attempt under fence {ctx.fence} while the lease is {current[0]}")
        if random.random() < 0.5:
            raise RuntimeError("churn")
        ctx.sleep(random.random() / 1000)

    async def async_body(ctx: WorkerContext) -> None:
        body(ctx)
        await asyncio.sleep(0)

    pool = harness.pool(max_executions_attempts=0)
    pool.register(FnWorker("sync", body), singleton=True)
    pool.register(AsyncFnWorker("async", async_body), singleton=True)
    pool.start()
    for fence in range(1, 301):
        with lock:
            current[0] = fence
        standing.clear()
        pool.lead("sync", fence)
        pool.lead("async", fence)
        if fence % 3:
            wait_for(lambda: attempts[0] > 0)
        pool.stand_by("sync", "flip")
        pool.stand_by("async", "flip")
        wait_for(lambda: all(pool.execution(n).status is WorkerStatus.STANDBY for n in ("sync", "async")))
        standing.set()
    assert not violations, violations[:5]
    assert attempts[0] > 0


def test_a_pool_whose_only_worker_stands_by_says_so_at_start(harness: Harness) -> None:
    with collect_logs() as logs:
        pool = harness.pool()
        pool.register(FnWorker("relay"), singleton=True)
        pool.start()
    messages = [record.getMessage() for record in logs.records]
    assert "worker pool started with no worker running" in messages
    assert STANDBY_MESSAGE in messages
