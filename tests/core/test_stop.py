"""Stopping: deferral and backoff interrupted, cancellation outcomes, deadlines, time-outs."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import pytest

from django_workers.core import Backoff, WorkerStatus
from django_workers.core.events import PoolStopped, WorkerRestarting, WorkerStopTimedOut
from tests.core.conftest import EventLog, failing, messages, timed, until_cancelled
from tests.support import AsyncFnWorker, FnWorker, collect_logs, wait_for

KINDS = ["sync", "async"]


# -- deferred start ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_deferred_start_waits_the_float_threshold(harness, kind: str) -> None:
    ran_at: list[float] = []
    if kind == "sync":
        worker = FnWorker("w", lambda ctx: ran_at.append(time.monotonic()))
    else:

        async def abody(ctx) -> None:
            ran_at.append(time.monotonic())

        worker = AsyncFnWorker("w", abody)
    pool = harness.pool(worker, deferred_start_threshold=0.3)
    began = time.monotonic()
    pool.start()
    assert time.monotonic() - began < 0.2, "start() must return at once"
    assert pool.execution("w").status is WorkerStatus.DEFERRED
    assert pool.wait(5)
    waited = ran_at[0] - began
    assert waited >= 0.3, f"started after {waited:.3f}s, before the 0.3s deferral"
    assert waited < 0.95, f"started after {waited:.3f}s: the 0.3s deferral looks rounded up"


@pytest.mark.parametrize("kind", KINDS)
def test_the_deferral_event_carries_the_first_attempt_id(harness, kind: str) -> None:
    ids: list[str] = []
    if kind == "sync":
        worker = FnWorker("w", lambda ctx: ids.append(ctx.execution_id))
    else:

        async def abody(ctx) -> None:
            ids.append(ctx.execution_id)

        worker = AsyncFnWorker("w", abody)
    pool = harness.pool(worker, deferred_start_threshold=0.05)
    pool.start()
    deferred = pool.execution("w")
    assert deferred.id  # the first attempt's id exists from start() on
    assert deferred.events[0].execution_id == deferred.id
    assert pool.wait(5)
    assert ids == [deferred.id]
    execution = pool.execution("w")
    assert execution.id == deferred.id
    assert messages(execution) == [
        "deferring execution attempt for 0.05 seconds",
        "starting execution attempt 1/1",
        "stopping execution attempt 1/1 with success",
    ]
    assert {e.execution_id for e in execution.events} == {deferred.id}


@pytest.mark.parametrize("kind", KINDS)
def test_stop_during_deferral_returns_at_once_and_the_worker_never_starts(harness, kind: str) -> None:
    worker = failing(kind, "w", succeed_at=1)
    log = EventLog()
    pool = harness.pool(worker, deferred_start_threshold=30, listeners=[log])
    pool.start()
    assert pool.execution("w").status is WorkerStatus.DEFERRED
    not_stopped, elapsed = timed(pool.stop, 10)
    assert not_stopped == []
    assert elapsed < 1.0
    assert worker.calls == 0
    execution = pool.execution("w")
    assert messages(execution) == ["deferring execution attempt for 30 seconds"]
    assert execution.current_execution_attempt == 0
    assert pool.wait(0)


# -- restart backoff ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_restarting_event_is_written_before_the_backoff_wait(harness, kind: str) -> None:
    log = EventLog()
    worker = failing(kind, "w")
    pool = harness.pool(
        worker, max_executions_attempts=3, restart_backoff=Backoff(initial=30, maximum=60, jitter=0), listeners=[log]
    )
    began = time.monotonic()
    pool.start()
    wait_for(lambda: pool.execution("w").has_event("restarting after error"), timeout=5)
    assert time.monotonic() - began < 5  # long before the 30 s backoff is over
    execution = pool.execution("w")
    assert messages(execution)[-1] == "restarting after error"
    assert execution.status is WorkerStatus.ERROR
    wait_for(lambda: log.of(WorkerRestarting, "w"))  # published right after the report changed
    (restarting,) = log.of(WorkerRestarting, "w")
    assert restarting.delay == 30
    assert worker.calls == 1


@pytest.mark.parametrize("kind", KINDS)
def test_stop_during_backoff_returns_at_once_and_nothing_restarts(harness, kind: str) -> None:
    worker = failing(kind, "w")
    pool = harness.pool(worker, max_executions_attempts=3, restart_backoff=Backoff(initial=30, jitter=0))
    pool.start()
    wait_for(lambda: pool.execution("w").has_event("restarting after error"))
    not_stopped, elapsed = timed(pool.stop, 10)
    assert not_stopped == []
    assert elapsed < 1.0
    assert worker.calls == 1
    execution = pool.execution("w")
    assert not execution.has_event("starting execution attempt 2/3")
    assert execution.status is WorkerStatus.ERROR
    assert execution.current_execution_attempt == 1
    assert pool.wait(0)


@pytest.mark.parametrize("kind", KINDS)
def test_nothing_restarts_after_stop_under_churn(harness, kind: str) -> None:
    worker = failing(kind, "w")
    pool = harness.pool(worker, max_executions_attempts=0, history_size=10)
    pool.start()
    wait_for(lambda: pool.execution("w").current_execution_attempt >= 20)
    assert pool.stop(5) == []
    calls, attempt = worker.calls, pool.execution("w").current_execution_attempt
    assert calls == attempt
    assert pool.wait(0)  # the supervision is over: nothing runs again
    assert (worker.calls, pool.execution("w").current_execution_attempt) == (calls, attempt)
    msgs = messages(pool.execution("w"))
    last_start = max(i for i, m in enumerate(msgs) if m.startswith("starting"))
    assert msgs[last_start] == f"starting execution attempt {attempt}/unlimited"
    assert msgs[last_start + 1].startswith(f"stopping execution attempt {attempt}/unlimited with")
    assert msgs[last_start + 2 :] in ([], ["restarting after error"])  # stopped during the (zero) backoff


# -- how cancelled workers end ---------------------------------------------------------------------


def test_sync_worker_returning_after_cancellation_ends_in_success(harness) -> None:
    started = threading.Event()
    sleeps: list[bool] = []

    def body(ctx) -> None:
        started.set()
        while not ctx.cancelled:
            sleeps.append(ctx.sleep(30))

    pool = harness.pool(FnWorker("w", body), max_executions_attempts=3)
    pool.start()
    assert started.wait(5)
    not_stopped, elapsed = timed(pool.stop, 10)
    assert not_stopped == []
    assert elapsed < 1.0  # ctx.sleep was interrupted
    assert sleeps == [True]
    execution = pool.execution("w")
    assert execution.status is WorkerStatus.SUCCESS
    assert messages(execution) == ["starting execution attempt 1/3", "stopping execution attempt 1/3 with success"]


@pytest.mark.parametrize("kind", KINDS)
def test_worker_raising_after_cancellation_ends_in_error_without_restart(harness, kind: str) -> None:
    started = threading.Event()
    if kind == "sync":

        def body(ctx) -> None:
            started.set()
            ctx.sleep(30)
            raise RuntimeError("interrupted while flushing")

        worker = FnWorker("w", body)
    else:

        async def abody(ctx) -> None:
            started.set()
            try:
                await ctx.asleep(30)
            finally:
                raise RuntimeError("interrupted while flushing")

        worker = AsyncFnWorker("w", abody)
    pool = harness.pool(worker, max_executions_attempts=5)
    pool.start()
    assert started.wait(5)
    assert pool.stop(5) == []
    execution = pool.execution("w")
    assert execution.status is WorkerStatus.ERROR
    assert messages(execution) == [
        "starting execution attempt 1/5",
        "stopping execution attempt 1/5 with error: interrupted while flushing",
    ]
    assert worker.calls == 1
    assert execution.last_error == "interrupted while flushing"


def test_stop_cancels_every_worker_at_once(harness) -> None:
    starts = [threading.Event() for _ in range(6)]
    workers = [until_cancelled("sync" if i % 2 else "async", f"w{i}", starts[i]) for i in range(6)]
    pool = harness.pool(*workers)
    pool.start()
    assert all(s.wait(5) for s in starts)
    not_stopped, elapsed = timed(pool.stop, 10)
    assert not_stopped == []
    assert elapsed < 1.0
    assert {e.status for e in pool.executions().values()} == {WorkerStatus.SUCCESS}


# -- deadlines and time-outs -------------------------------------------------------------------------


def stuck_in_a_blocking_call(gate: threading.Event) -> None:
    gate.wait(60)


def test_worker_ignoring_cancellation_is_reported_and_its_stack_logged(harness) -> None:
    gate = harness.gate()
    entered, polite_started = threading.Event(), threading.Event()

    def body(ctx) -> None:
        entered.set()
        stuck_in_a_blocking_call(gate)

    log = EventLog()
    pool = harness.pool(FnWorker("stuck", body), until_cancelled("sync", "polite", polite_started), listeners=[log])
    with collect_logs() as logs:
        pool.start()
        assert entered.wait(5) and polite_started.wait(5)
        not_stopped, elapsed = timed(pool.stop, 0.2)
    assert not_stopped == ["stuck"]
    assert 0.19 <= elapsed < 1.2
    stuck = pool.execution("stuck")
    assert stuck.status is WorkerStatus.RUNNING
    assert stuck.has_event("did not stop within 0.2 seconds")
    assert stuck.timed_out  # the fact, as a field
    assert pool.execution("polite").status is WorkerStatus.SUCCESS
    assert not pool.execution("polite").timed_out
    (timed_out,) = log.of(WorkerStopTimedOut, "stuck")
    assert "stuck_in_a_blocking_call" in timed_out.stack
    assert log.of(PoolStopped)[-1].not_stopped == ("stuck",)
    # its stack is logged at ERROR on the django_workers logger, with the worker's attributes
    (record,) = logs.matching("did not stop within 0.2 seconds", level=logging.ERROR)
    assert record.name == "django_workers"
    assert "stuck_in_a_blocking_call" in record.getMessage()
    assert record.worker == "stuck"
    assert record.workerExecutionID == stuck.id
    # released, it returns (it was cancelled): success, and a second stop finds nothing left
    gate.set()
    assert pool.stop(5) == []
    stuck = pool.execution("stuck")
    assert stuck.status is WorkerStatus.SUCCESS
    assert messages(stuck).count("did not stop within 0.2 seconds") == 1
    assert messages(stuck)[-1] == "stopping execution attempt 1/1 with success"


async def awaiting_something_forever(gate: threading.Event) -> None:
    while not gate.is_set():
        try:
            await asyncio.sleep(0.005)
        except asyncio.CancelledError:
            pass  # a badly behaved worker: swallows the cancellation


def test_async_worker_ignoring_cancellation_is_reported_with_its_stack(harness) -> None:
    gate = harness.gate()
    entered, polite_started = threading.Event(), threading.Event()

    async def abody(ctx) -> None:
        entered.set()
        await awaiting_something_forever(gate)

    log = EventLog()
    pool = harness.pool(
        AsyncFnWorker("stuck", abody),
        until_cancelled("async", "polite", polite_started),
        listeners=[log],
    )
    with collect_logs() as logs:
        pool.start()
        assert entered.wait(5) and polite_started.wait(5)
        not_stopped, elapsed = timed(pool.stop, 0.2)
    assert not_stopped == ["stuck"]
    assert elapsed < 1.2
    assert pool.execution("stuck").status is WorkerStatus.RUNNING
    assert pool.execution("stuck").has_event("did not stop within 0.2 seconds")
    assert pool.execution("polite").status is WorkerStatus.SUCCESS
    (timed_out,) = log.of(WorkerStopTimedOut, "stuck")
    assert "awaiting_something_forever" in timed_out.stack
    (record,) = logs.matching("did not stop within 0.2 seconds", level=logging.ERROR)
    assert "awaiting_something_forever" in record.getMessage()
    gate.set()
    assert pool.stop(5) == []
    assert pool.execution("stuck").status is WorkerStatus.SUCCESS


def test_async_worker_blocking_the_event_loop_is_reported_with_its_stack(harness) -> None:
    gate = harness.gate()
    entered = threading.Event()

    async def abody(ctx) -> None:
        entered.set()
        stuck_in_a_blocking_call(gate)  # blocks the whole loop: a bug in the worker

    log = EventLog()
    pool = harness.pool(AsyncFnWorker("blocker", abody), listeners=[log])
    pool.start()
    assert entered.wait(5)
    not_stopped, elapsed = timed(pool.stop, 0.2)
    assert not_stopped == ["blocker"]
    assert elapsed < 1.2
    (timed_out,) = log.of(WorkerStopTimedOut, "blocker")
    assert "stuck_in_a_blocking_call" in timed_out.stack
    gate.set()
    assert pool.stop(5) == []


def test_stop_never_waits_much_longer_than_its_timeout(harness) -> None:
    gate = harness.gate()
    entered = [threading.Event() for _ in range(4)]

    def blocker(i: int):
        def body(ctx) -> None:
            entered[i].set()
            gate.wait(60)

        return body

    async def async_blocker(ctx) -> None:
        entered[3].set()
        await awaiting_something_forever(gate)

    pool = harness.pool(
        FnWorker("a", blocker(0)),
        FnWorker("b", blocker(1)),
        FnWorker("c", blocker(2)),
        AsyncFnWorker("d", async_blocker),
        deferred_start_threshold=0,
    )
    pool.start()
    assert all(e.wait(5) for e in entered)
    not_stopped, elapsed = timed(pool.stop, 0.3)
    assert sorted(not_stopped) == ["a", "b", "c", "d"]
    assert 0.29 <= elapsed < 1.0, f"stop(0.3) took {elapsed:.3f}s"
    for name in "abcd":
        execution = pool.execution(name)
        assert execution.status is WorkerStatus.RUNNING
        assert execution.has_event("did not stop within 0.3 seconds")
    # a second stop with a zero timeout does not wait and does not report twice
    not_stopped, elapsed = timed(pool.stop, 0)
    assert sorted(not_stopped) == ["a", "b", "c", "d"]
    assert elapsed < 0.5
    assert messages(pool.execution("a")).count("did not stop within 0.3 seconds") == 1
    assert not pool.execution("a").has_event("did not stop within 0 seconds")
    gate.set()
    assert pool.stop(5) == []


def test_stop_without_timeout_uses_stop_timeout(harness) -> None:
    gate = harness.gate()
    entered = threading.Event()

    def body(ctx) -> None:
        entered.set()
        gate.wait(60)

    pool = harness.pool(FnWorker("w", body), stop_timeout=0.15)
    pool.start()
    assert entered.wait(5)
    not_stopped, elapsed = timed(pool.stop)
    assert not_stopped == ["w"]
    assert elapsed < 1.0
    assert pool.execution("w").has_event("did not stop within 0.15 seconds")
    gate.set()
    assert pool.stop(5) == []


def test_stop_rejects_a_negative_timeout(harness) -> None:
    pool = harness.pool(FnWorker("w"))
    pool.start()
    with pytest.raises(ValueError):
        pool.stop(timeout=-1)


def test_a_worker_that_stops_late_within_the_deadline_is_not_reported(harness) -> None:
    started = threading.Event()

    def body(ctx) -> None:
        started.set()
        ctx.sleep(30)
        time.sleep(0.1)  # some clean-up after cancellation (the subject of the test)

    pool = harness.pool(FnWorker("w", body))
    pool.start()
    assert started.wait(5)
    not_stopped, elapsed = timed(pool.stop, 5)
    assert not_stopped == []
    assert 0.09 <= elapsed < 2.0
    assert pool.execution("w").status is WorkerStatus.SUCCESS
    assert not any(m.startswith("did not stop") for m in messages(pool.execution("w")))


def test_stop_called_by_a_sync_worker_does_not_wait_for_itself(harness) -> None:
    other_started = threading.Event()
    results: list[tuple[list[str], float]] = []
    box: dict[str, object] = {}

    def controller(ctx) -> None:
        assert other_started.wait(5)
        results.append(timed(box["pool"].stop, 5))

    pool = harness.pool(until_cancelled("sync", "other", other_started), FnWorker("controller", controller))
    box["pool"] = pool
    pool.start()
    assert pool.wait(5)
    ((not_stopped, elapsed),) = results
    assert not_stopped == []
    assert elapsed < 1.0
    assert {e.status for e in pool.executions().values()} == {WorkerStatus.SUCCESS}
    assert pool.stop(5) == []
