"""Control of a running pool: restart, pause and resume a worker, sync and async, in every state."""

from __future__ import annotations

import asyncio
import threading

import pytest

from django_workers.core import Backoff, WorkerContext, WorkerStatus
from django_workers.core.events import AttemptStarted, WorkerControlled, WorkerFinished, WorkerPaused
from tests.core.conftest import EventLog, failing, messages, until_cancelled
from tests.support import AsyncFnWorker, FnWorker, wait_for

KINDS = ["sync", "async"]


def started_attempts(log: EventLog, worker: str) -> list[AttemptStarted]:
    return log.of(AttemptStarted, worker)


def counted(log: EventLog, worker: str, n: int) -> None:
    log.wait_until(lambda events: len([e for e in events if isinstance(e, AttemptStarted) and e.worker == worker]) >= n)


# -- restart ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_restart_cancels_the_running_attempt_and_begins_a_fresh_run(harness, kind: str) -> None:
    log = EventLog()
    pool = harness.pool(until_cancelled(kind, "w"), max_executions_attempts=3, listeners=[log])
    pool.start()
    counted(log, "w", 1)
    first = pool.execution("w").id

    pool.restart("w", by="alice")

    counted(log, "w", 2)
    execution = pool.execution("w")
    assert execution.status is WorkerStatus.RUNNING
    assert execution.current_execution_attempt == 1, "a restart is a fresh run: attempt 1 again"
    assert execution.id != first, "every attempt has a new id"
    assert messages(execution)[-3:] == [
        "restart requested by alice",
        "stopping execution attempt 1/3 with success",
        "starting execution attempt 1/3",
    ]
    controlled = log.of(WorkerControlled, "w")
    assert [(e.action, e.by, e.execution_id) for e in controlled] == [("restart", "alice", first)]
    assert not log.of(WorkerFinished, "w"), "the worker's supervision goes on"


@pytest.mark.parametrize("kind", KINDS)
def test_restart_resets_the_budget_of_a_worker_that_gave_up(harness, kind: str) -> None:
    log = EventLog()
    pool = harness.pool(failing(kind, "w"), max_executions_attempts=2, listeners=[log])
    pool.start()
    assert pool.wait(5)
    assert pool.execution("w").exhausted

    pool.restart("w", by="bob")

    log.wait_until(lambda events: sum(isinstance(e, WorkerFinished) for e in events) == 2)
    execution = pool.execution("w")
    assert execution.exhausted, "the fresh run failed twice too: exhausted again"
    assert [e.attempt for e in started_attempts(log, "w")] == [1, 2, 1, 2]
    assert "restart requested by bob" in messages(execution)
    assert pool.wait(5)


@pytest.mark.parametrize("kind", KINDS)
def test_restart_during_the_backoff_wait_begins_at_once(harness, kind: str) -> None:
    log = EventLog()
    day = Backoff(initial=86_400, maximum=86_400, jitter=0)
    pool = harness.pool(failing(kind, "w"), max_executions_attempts=0, restart_backoff=day, listeners=[log])
    pool.start()
    log.wait_until(
        lambda events: any(e.record.message == "restarting after error" for e in events if hasattr(e, "record"))
    )

    pool.restart("w")

    counted(log, "w", 2)
    assert started_attempts(log, "w")[-1].attempt == 1
    assert "restart requested" in messages(pool.execution("w"))


@pytest.mark.parametrize("kind", KINDS)
def test_restart_during_the_deferral_starts_at_once(harness, kind: str) -> None:
    log = EventLog()
    pool = harness.pool(until_cancelled(kind, "w"), deferred_start_threshold=86_400, listeners=[log])
    pool.start()
    assert pool.execution("w").status is WorkerStatus.DEFERRED

    pool.restart("w")

    counted(log, "w", 1)
    assert pool.execution("w").status is WorkerStatus.RUNNING


# -- pause and resume ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_pause_cancels_the_attempt_and_holds_the_worker_until_resumed(harness, kind: str) -> None:
    log = EventLog()
    pool = harness.pool(until_cancelled(kind, "w"), max_executions_attempts=2, listeners=[log])
    pool.start()
    counted(log, "w", 1)

    pool.pause("w", by="alice")

    log.wait_until(lambda events: any(isinstance(e, WorkerPaused) for e in events))
    assert pool.wait(5), "a paused worker runs nothing"
    execution = pool.execution("w")
    assert execution.status is WorkerStatus.PAUSED
    assert execution.paused
    assert messages(execution)[-3:] == [
        "paused by alice",
        "stopping execution attempt 1/2 with success",
        "execution paused until resumed",
    ]
    pool.pause("w", by="alice")  # already paused: nothing happens, nothing is recorded
    assert messages(pool.execution("w")).count("paused by alice") == 1

    pool.resume("w", by="carol")

    counted(log, "w", 2)
    execution = pool.execution("w")
    assert execution.status is WorkerStatus.RUNNING
    assert not execution.paused
    assert execution.current_execution_attempt == 1
    assert "resumed by carol" in messages(execution)


@pytest.mark.parametrize("kind", KINDS)
def test_a_worker_paused_before_start_is_not_started_until_resumed(harness, kind: str) -> None:
    log = EventLog()
    worker = until_cancelled(kind, "w")
    other = until_cancelled(kind, "other")
    pool = harness.pool(worker, other, listeners=[log])
    pool.pause("w", by="standing pause")
    assert pool.execution("w").status is WorkerStatus.PAUSED
    pool.start()
    counted(log, "other", 1)
    assert not started_attempts(log, "w")
    assert pool.execution("w").status is WorkerStatus.PAUSED
    assert worker.calls == 0

    pool.resume("w")

    counted(log, "w", 1)
    assert pool.execution("w").status is WorkerStatus.RUNNING


def test_resume_before_start_lets_the_pool_start_the_worker(harness) -> None:
    log = EventLog()
    pool = harness.pool(until_cancelled("sync", "w"), listeners=[log])
    pool.pause("w")
    pool.resume("w")
    assert pool.execution("w").status is WorkerStatus.UNKNOWN
    pool.start()
    counted(log, "w", 1)


@pytest.mark.parametrize("kind", KINDS)
def test_pause_of_a_finished_worker_records_the_pause_and_resume_runs_it_again(harness, kind: str) -> None:
    log = EventLog()
    worker = FnWorker("w") if kind == "sync" else AsyncFnWorker("w")
    pool = harness.pool(worker, listeners=[log])
    pool.start()
    assert pool.wait(5)
    assert pool.execution("w").status is WorkerStatus.SUCCESS

    pool.pause("w")
    assert pool.execution("w").status is WorkerStatus.PAUSED
    pool.resume("w")

    log.wait_until(lambda events: sum(isinstance(e, WorkerFinished) for e in events) == 2)
    assert worker.calls == 2
    assert pool.execution("w").status is WorkerStatus.SUCCESS


def test_resume_of_a_worker_that_is_not_paused_does_nothing(harness) -> None:
    log = EventLog()
    pool = harness.pool(until_cancelled("sync", "w"), listeners=[log])
    pool.start()
    counted(log, "w", 1)
    pool.resume("w")
    assert not log.of(WorkerControlled)
    assert len(started_attempts(log, "w")) == 1


def test_a_worker_that_ignores_cancellation_is_paused_when_its_attempt_returns(harness) -> None:
    log = EventLog()
    gate = harness.gate()
    seen: list[bool] = []

    def body(ctx: WorkerContext) -> None:
        gate.wait(10)
        seen.append(ctx.cancelled)

    pool = harness.pool(FnWorker("w", body), listeners=[log])
    pool.start()
    counted(log, "w", 1)
    pool.pause("w")
    assert pool.execution("w").status is WorkerStatus.RUNNING, "paused only once its attempt ends"
    assert pool.execution("w").paused
    gate.set()
    log.wait_until(lambda events: any(isinstance(e, WorkerPaused) for e in events))
    assert seen == [True], "the attempt saw ctx.cancelled"


def test_a_failure_of_a_cancelled_attempt_is_recorded_but_not_restarted(harness) -> None:
    log = EventLog()

    def body(ctx: WorkerContext) -> None:
        ctx.sleep(float("inf"))
        raise RuntimeError("interrupted")

    pool = harness.pool(FnWorker("w", body), max_executions_attempts=5, listeners=[log])
    pool.start()
    counted(log, "w", 1)
    pool.pause("w")
    log.wait_until(lambda events: any(isinstance(e, WorkerPaused) for e in events))
    assert messages(pool.execution("w"))[-2:] == [
        "stopping execution attempt 1/5 with error: interrupted",
        "execution paused until resumed",
    ]
    assert pool.execution("w").last_error == "interrupted"


def test_an_async_attempt_after_a_control_is_not_left_cancelling(harness) -> None:
    """The pool's own cancellation is undone: asyncio.timeout() works in the next attempt."""
    log = EventLog()
    outcomes: list[str] = []

    async def body(ctx: WorkerContext) -> None:
        if ctx.attempt == 1 and not outcomes:
            outcomes.append("first")
            await ctx.asleep(float("inf"))
            return
        try:
            async with asyncio.timeout(0.01):
                await asyncio.sleep(10)
        except TimeoutError:
            outcomes.append("timeout")
        await ctx.asleep(float("inf"))

    pool = harness.pool(AsyncFnWorker("w", body), listeners=[log])
    pool.start()
    counted(log, "w", 1)
    pool.restart("w")
    counted(log, "w", 2)
    wait_for(lambda: "timeout" in outcomes, what="the next attempt's timeout")


# -- errors and stop ---------------------------------------------------------------------------------


def test_control_of_an_unknown_worker_raises_lookup_error(harness) -> None:
    pool = harness.pool(FnWorker("w"))
    with pytest.raises(LookupError, match="execution for worker nope was not found"):
        pool.restart("nope")


def test_control_after_stop_raises_and_nothing_restarts(harness) -> None:
    log = EventLog()
    pool = harness.pool(until_cancelled("sync", "w"), listeners=[log])
    pool.start()
    counted(log, "w", 1)
    assert pool.stop(5) == []
    for action in (pool.restart, pool.pause, pool.resume):
        with pytest.raises(RuntimeError, match="the pool is stopped"):
            action("w")
    assert len(started_attempts(log, "w")) == 1


def test_by_must_be_text(harness) -> None:
    pool = harness.pool(FnWorker("w"))
    with pytest.raises(TypeError, match="by must be a str"):
        pool.pause("w", by=42)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", KINDS)
def test_controls_racing_with_attempts_and_stop_never_leave_a_worker_running(harness, kind: str) -> None:
    """Many controls from several threads while the worker fails and restarts at once; then stop."""
    log = EventLog()
    pool = harness.pool(failing(kind, "w", succeed_at=None), max_executions_attempts=0, listeners=[log])
    pool.start()
    barrier = threading.Barrier(3)
    errors: list[BaseException] = []

    def hammer(actions: list[str]) -> None:
        barrier.wait()
        for action in actions * 50:
            try:
                getattr(pool, action)("w")
            except RuntimeError:
                return  # stopped meanwhile
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

    threads = [
        threading.Thread(target=hammer, args=(["restart", "pause"],)),
        threading.Thread(target=hammer, args=(["pause", "resume"],)),
    ]
    for thread in threads:
        thread.start()
    barrier.wait()
    for thread in threads:
        thread.join(20)
    assert not errors
    pool.resume("w")
    counted(log, "w", len(started_attempts(log, "w")) + 1)
    assert pool.stop(5) == []
    assert pool.wait(5)
    finished = log.of(WorkerFinished, "w")
    assert finished, "supervision ended"
    assert pool.execution("w").status is not WorkerStatus.RUNNING
