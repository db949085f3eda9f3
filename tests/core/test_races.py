"""Regression tests of the races found by the torture suite (tests/core/test_torture.py), each forced.

Every test here drives one interleaving on purpose (listeners that block until the other side has
moved, barriers, a clock hook that parks a worker thread at a chosen line), so that it fails on the
code as it was, every time, instead of once in a thousand runs:

- nothing starts or restarts once ``stop()`` is called, whatever the listeners do;
- ``stop()`` called from a worker's thread, or from a listener (in a worker's thread or in the
  thread of ``start()``/``register()``), does not wait for what cannot end before it returns;
- the silence watchdog cancels exactly the attempt it judged silent, never the next one;
- no thread of the pool outlives ``stop()``: the loop's executor threads, and the loop thread
  after a timed-out stop, once the last worker has returned.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from typing import Any

import pytest

import django_workers.core.supervisor as supervisor_module
from django_workers.core import WorkerContext, WorkerStatus
from django_workers.core.drivers import ThreadDriver
from django_workers.core.events import (
    AttemptFailed,
    AttemptStarted,
    PoolStarted,
    PoolStopping,
    WorkerDeferred,
    WorkerFinished,
    WorkerSilent,
    WorkerStopTimedOut,
)
from django_workers.core.loop import EventLoopThread
from tests.core.conftest import EventLog, failing, messages, timed, until_cancelled
from tests.support import AsyncFnWorker, FnWorker, wait_for

LOOP_THREAD = "worker-pool:event-loop"


def pool_threads(before: set[threading.Thread]) -> list[str]:
    """Names of the live threads that were not there in ``before``."""
    return [t.name for t in threading.enumerate() if t not in before and t.is_alive()]


# -- 12. nothing starts or restarts once stop() is called ------------------------------------------------------


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_crash_looping_worker_does_not_restart_while_a_pool_stopping_listener_runs(harness, kind: str) -> None:
    """The stop flag is set before ``PoolStopping`` is published: a slow listener buys no restart."""
    seen: dict[str, int] = {}

    def slow_listener(event: Any) -> None:
        if isinstance(event, PoolStopping):
            seen["at_stopping"] = pool.execution("w").current_execution_attempt
            # Give the worker every chance to restart (a few attempts), up to a bound.
            deadline = time.monotonic() + 0.3
            while (
                time.monotonic() < deadline and pool.execution("w").current_execution_attempt < seen["at_stopping"] + 3
            ):
                time.sleep(0.001)

    pool = harness.pool(failing(kind, "w"), max_executions_attempts=0, listeners=[slow_listener])
    pool.start()
    wait_for(lambda: pool.execution("w").current_execution_attempt >= 5, what="the worker crash-looping")
    assert pool.stop(5) == []
    execution = pool.execution("w")
    assert execution.current_execution_attempt == seen["at_stopping"], messages(execution)[-6:]


def test_an_attempt_begun_before_the_stop_flag_is_not_recorded_after_it(harness, monkeypatch) -> None:
    """``begin_attempt`` decides under the lock that ``stop()`` sets the flag under.

    The worker thread is parked inside ``begin_attempt`` (after its old check of the flag) until a
    ``PoolStopping`` listener has read the attempt number: no attempt may be recorded after that.
    """
    parked = threading.Event()
    stopping_seen = threading.Event()
    seen: dict[str, int] = {}
    real_monotonic = supervisor_module.monotonic

    def parking_monotonic() -> float:
        frame = sys._getframe(1)
        if (
            frame.f_code.co_name == "begin_attempt"
            and threading.current_thread().name == "worker:w"
            and frame.f_locals.get("attempt", 0) >= 3
            and not parked.is_set()
        ):
            parked.set()
            stopping_seen.wait(5)
        return real_monotonic()

    def listener(event: Any) -> None:
        if isinstance(event, PoolStopping):
            seen["at_stopping"] = pool.execution("w").current_execution_attempt
            stopping_seen.set()

    monkeypatch.setattr(supervisor_module, "monotonic", parking_monotonic)
    pool = harness.pool(failing("sync", "w"), max_executions_attempts=0, listeners=[listener])
    pool.start()
    assert parked.wait(5)
    assert pool.stop(5) == []
    execution = pool.execution("w")
    assert seen["at_stopping"] == 2
    assert execution.current_execution_attempt == 2, messages(execution)[-4:]
    assert not execution.has_event("starting execution attempt 3/unlimited")


# -- 13. stop() from inside the pool ---------------------------------------------------------------------------


def test_two_sync_workers_calling_stop_at_once_do_not_wait_for_each_other(harness) -> None:
    barrier = threading.Barrier(2)
    results: dict[str, tuple[list[str], float]] = {}

    def stopper(ctx: WorkerContext) -> None:
        barrier.wait(5)
        results[ctx.worker_name] = timed(box["pool"].stop, 3)

    box: dict[str, Any] = {}
    log = EventLog()
    pool = box["pool"] = harness.pool(
        FnWorker("a", stopper), FnWorker("b", stopper), until_cancelled("sync", "c"), listeners=[log]
    )
    pool.start()
    assert pool.wait(10)
    assert sorted(results) == ["a", "b"]
    for name, (not_stopped, elapsed) in results.items():
        assert not_stopped == [], name
        assert elapsed < 2.0, (name, elapsed)
    assert log.of(WorkerStopTimedOut) == []
    assert {e.status for e in pool.executions().values()} == {WorkerStatus.SUCCESS}


def test_listeners_on_two_worker_threads_calling_stop_at_once_do_not_wait_for_each_other(harness) -> None:
    barrier = threading.Barrier(2)
    results: list[tuple[list[str], float]] = []

    def listener(event: Any) -> None:
        # The first attempt of a and b fails: its AttemptFailed listener runs in the worker's thread.
        if isinstance(event, AttemptFailed) and event.worker in ("a", "b"):
            barrier.wait(5)
            results.append(timed(pool.stop, 3))

    pool = harness.pool(failing("sync", "a"), failing("sync", "b"), until_cancelled("sync", "c"), listeners=[listener])
    pool.start()
    assert pool.wait(10)
    assert len(results) == 2
    assert all(not_stopped == [] and elapsed < 2.0 for not_stopped, elapsed in results), results
    assert {name: e.status for name, e in pool.executions().items()} == {
        "a": WorkerStatus.ERROR,
        "b": WorkerStatus.ERROR,
        "c": WorkerStatus.SUCCESS,
    }
    assert not any(e.timed_out for e in pool.executions().values())


START_THREAD_EVENTS = {
    "PoolStarted": lambda event: isinstance(event, PoolStarted),
    "WorkerDeferred": lambda event: isinstance(event, WorkerDeferred) and event.worker == "first",
    "first AttemptStarted": lambda event: isinstance(event, AttemptStarted) and event.worker == "first",
}


@pytest.mark.parametrize("event_name", list(START_THREAD_EVENTS))
def test_stop_from_a_listener_in_the_thread_of_start_returns_at_once(harness, event_name: str) -> None:
    """``start()`` is not blocked, workers it has yet to launch never start and are not reported."""
    matches = START_THREAD_EVENTS[event_name]
    results: list[tuple[list[str], float]] = []
    starter = threading.current_thread()

    def listener(event: Any) -> None:
        if matches(event) and not results:
            assert threading.current_thread() is starter
            results.append(timed(pool.stop, 2))

    log = EventLog()
    second, third = until_cancelled("sync", "second"), until_cancelled("async", "third")
    pool = harness.pool(listeners=[listener, log])
    pool.register(
        until_cancelled("sync", "first"), deferred_start_threshold=30 if event_name == "WorkerDeferred" else 0
    )
    pool.register(second)
    pool.register(third)
    _, elapsed = timed(pool.start)
    assert elapsed < 1.0
    ((not_stopped, stop_elapsed),) = results
    assert not_stopped == []
    assert stop_elapsed < 1.0
    assert pool.stop(5) == []
    assert log.of(WorkerStopTimedOut) == []
    for name in ("second", "third"):  # launched after the stop: never started
        execution = pool.execution(name)
        assert execution.status is WorkerStatus.UNKNOWN, (name, messages(execution))
        assert execution.events == () and execution.id
        assert not execution.timed_out
    first = pool.execution("first")
    expected = {  # its attempt, begun before the stop, saw ctx.cancelled and returned
        "PoolStarted": WorkerStatus.UNKNOWN,
        "WorkerDeferred": WorkerStatus.DEFERRED,
        "first AttemptStarted": WorkerStatus.SUCCESS,
    }
    assert first.status is expected[event_name], messages(first)
    assert sorted(e.worker for e in log.of(WorkerFinished)) == ["first", "second", "third"]


def test_stop_from_a_first_attempt_listener_cancels_an_attempt_with_its_own_stop_flag(harness) -> None:
    """A ``restart_on_silence`` attempt, begun by ``start()`` before its thread is listed, is cancelled too.

    (Found by the torture suite in a first version of the fix above.)
    """
    results: list[list[str]] = []

    def listener(event: Any) -> None:
        if isinstance(event, AttemptStarted) and not results:
            results.append(pool.stop(2))

    pool = harness.pool(listeners=[listener])
    pool.register(until_cancelled("sync", "w"), max_silence=30, restart_on_silence=True)
    pool.start()
    assert results == [[]]
    assert pool.stop(2) == []
    execution = pool.execution("w")
    assert messages(execution)[-1] == "stopping execution attempt 1/1 with success"


def test_stop_from_a_first_attempt_listener_in_the_thread_of_register_returns_at_once(harness) -> None:
    results: list[tuple[list[str], float]] = []

    def listener(event: Any) -> None:
        if isinstance(event, AttemptStarted) and event.worker == "late" and not results:
            results.append(timed(pool.stop, 2))

    pool = harness.pool(until_cancelled("sync", "early"), listeners=[listener])
    pool.start()
    _, elapsed = timed(pool.register, until_cancelled("sync", "late"))
    assert elapsed < 1.0
    ((not_stopped, _),) = results
    assert not_stopped == []  # early stopped; late (its thread not started yet) is spared
    assert pool.stop(5) == []
    assert pool.execution("late").status is WorkerStatus.SUCCESS
    assert not pool.execution("late").timed_out


def test_stop_from_a_worker_while_start_creates_the_event_loop_does_not_deadlock(harness, monkeypatch) -> None:
    """``start()`` starts the loop outside the pool's lock: a stop() from a sync worker meanwhile
    schedules a callback taking that lock on the loop, before the loop's first one.

    (Found by the torture suite: ``start()`` waited for the loop, the loop for the lock.)
    """
    creating, stopping_seen = threading.Event(), threading.Event()
    results: list[list[str]] = []
    real_start = EventLoopThread.start

    def start_after_the_stop(self: EventLoopThread) -> None:
        creating.set()
        stopping_seen.wait(2)
        real_start(self)

    def stopper(ctx: WorkerContext) -> None:
        assert creating.wait(5)
        results.append(box["pool"].stop(5))

    def listener(event: Any) -> None:
        if isinstance(event, PoolStopping):
            stopping_seen.set()

    monkeypatch.setattr(EventLoopThread, "start", start_after_the_stop)
    box: dict[str, Any] = {}
    pool = box["pool"] = harness.pool(FnWorker("stopper", stopper), until_cancelled("async", "b"), listeners=[listener])
    _, elapsed = timed(pool.start)
    assert elapsed < 1.5
    wait_for(lambda: results, what="the worker's stop() to return")
    assert results == [[]]
    assert pool.stop(5) == []


def test_stop_from_an_executor_thread_of_the_loop_does_not_wait_for_the_loop(harness) -> None:
    """``await asyncio.to_thread(pool.stop)``, as the README says: it returns, and nothing leaks."""
    results: list[tuple[list[str], float]] = []
    other_started = threading.Event()

    async def body(ctx: WorkerContext) -> None:
        while not other_started.is_set():  # never block the loop
            await asyncio.sleep(0.001)
        # The stop cancels this task: the thread records what stop() returned.
        await asyncio.to_thread(lambda: results.append(timed(box["pool"].stop, 3)))

    box: dict[str, Any] = {}
    before = set(threading.enumerate())
    pool = box["pool"] = harness.pool(
        AsyncFnWorker("controller", body), until_cancelled("async", "other", other_started)
    )
    pool.start()
    wait_for(lambda: results, what="the stop called from asyncio.to_thread to return")
    ((not_stopped, elapsed),) = results
    assert not_stopped == []
    assert elapsed < 2.0
    assert pool.stop(5) == []
    assert pool_threads(before) == []


# -- 14. the silence watchdog cancels exactly the silent attempt ---------------------------------------------


def test_the_silence_watchdog_never_cancels_the_next_attempt(harness, monkeypatch) -> None:
    """Attempt 1 is silent and returns while ``WorkerSilent`` is published; attempt 2 is healthy."""
    silent_reported = threading.Event()
    second_started = threading.Event()
    cancel_done = threading.Event()
    contexts: dict[int, WorkerContext] = {}
    real_cancel_attempt = ThreadDriver.cancel_attempt

    def spied_cancel_attempt(self: ThreadDriver, attempt: int) -> None:
        real_cancel_attempt(self, attempt)
        cancel_done.set()

    def body(ctx: WorkerContext) -> None:
        contexts[ctx.attempt] = ctx
        if ctx.attempt == 1:
            assert silent_reported.wait(5)  # silent: no heartbeat; returns during the WorkerSilent listeners
            return
        second_started.set()
        while not ctx.sleep(0.01):
            ctx.heartbeat()

    def listener(event: Any) -> None:
        if isinstance(event, WorkerSilent) and event.attempt == 1:
            silent_reported.set()
            assert second_started.wait(5)  # the watchdog cancels after its listeners: attempt 2 runs by then

    monkeypatch.setattr(ThreadDriver, "cancel_attempt", spied_cancel_attempt)
    pool = harness.pool(listeners=[listener], max_executions_attempts=0)
    pool.register(FnWorker("w", body), max_silence=0.2, restart_on_silence=True)
    pool.start()
    assert cancel_done.wait(5)
    assert not contexts[2].cancelled
    execution = pool.execution("w")
    assert (execution.status, execution.current_execution_attempt) == (WorkerStatus.RUNNING, 2), messages(execution)
    assert pool.stop(5) == []
    assert messages(pool.execution("w"))[-1] == "stopping execution attempt 2/unlimited with success"


# -- 15. no thread outlives stop() ------------------------------------------------------------------------------


def test_the_loop_executor_threads_end_before_stop_returns(harness) -> None:
    """A cancelled worker's ``asyncio.to_thread`` call still running: ``stop()`` waits for it."""
    running = threading.Event()

    def blocking_call() -> None:
        running.set()
        time.sleep(0.3)  # the subject: a blocking call that outlives the worker's cancellation

    async def body(ctx: WorkerContext) -> None:
        await asyncio.to_thread(blocking_call)
        await ctx.until_cancelled()

    before = set(threading.enumerate())
    pool = harness.pool(AsyncFnWorker("w", body))
    pool.start()
    assert running.wait(5)
    assert pool.stop(5) == []
    assert pool_threads(before) == []


def test_idle_loop_executor_threads_end_before_stop_returns(harness) -> None:
    async def body(ctx: WorkerContext) -> None:
        await asyncio.gather(*(asyncio.to_thread(time.sleep, 0.01) for _ in range(3)))
        await ctx.until_cancelled()

    before = set(threading.enumerate())
    pool = harness.pool(AsyncFnWorker("w", body))
    pool.start()
    wait_for(lambda: len(pool_threads(before)) >= 2, what="the loop and its executor threads")
    assert pool.stop(5) == []
    assert pool_threads(before) == []


def test_the_loop_thread_ends_with_its_last_worker_after_a_timed_out_stop(harness) -> None:
    started, gate = threading.Event(), threading.Event()

    async def stubborn(ctx: WorkerContext) -> None:
        started.set()
        while not gate.is_set():  # ignores the cancellation until the gate opens
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                pass

    pool = harness.pool(AsyncFnWorker("w", stubborn))
    pool.start()
    assert started.wait(5)
    assert pool.stop(0.2) == ["w"]
    assert any(t.name == LOOP_THREAD for t in threading.enumerate())
    gate.set()
    wait_for(lambda: pool.execution("w").status is WorkerStatus.SUCCESS, what="the stubborn worker to return")
    wait_for(
        lambda: not any(t.name == LOOP_THREAD for t in threading.enumerate()),
        timeout=3.0,
        what="the loop thread to end without another stop()",
    )


def test_a_worker_started_by_a_stop_racing_launch_leaves_no_thread(harness) -> None:
    """``register()`` launching while another thread stops: its thread is joined by that stop."""
    entered = threading.Event()
    release = threading.Event()

    def listener(event: Any) -> None:
        # In the registering thread, between the worker's first attempt and its thread's start.
        if isinstance(event, AttemptStarted) and event.worker == "late":
            entered.set()
            assert release.wait(5)

    before = set(threading.enumerate())
    pool = harness.pool(until_cancelled("sync", "early"), listeners=[listener])
    pool.start()
    registering = threading.Thread(target=pool.register, args=(until_cancelled("sync", "late"),))
    registering.start()
    assert entered.wait(5)
    stopper_result: list[list[str]] = []
    stopper = threading.Thread(target=lambda: stopper_result.append(pool.stop(5)))
    stopper.start()
    wait_for(lambda: pool.stopping, what="the stop to begin")
    release.set()
    stopper.join(10)
    registering.join(10)
    assert stopper_result == [[]]
    assert pool_threads(before) == []
    assert pool.execution("late").status is WorkerStatus.SUCCESS


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_stop_during_start_from_another_thread_leaves_no_thread(harness, kind: str) -> None:
    """``stop()`` while ``start()`` is publishing ``PoolStarted``: no worker starts, no thread is left."""
    entered, release = threading.Event(), threading.Event()

    def listener(event: Any) -> None:
        if isinstance(event, PoolStarted):
            entered.set()
            assert release.wait(5)

    before = set(threading.enumerate())
    pool = harness.pool(until_cancelled(kind, "a"), until_cancelled(kind, "b"), listeners=[listener])
    starting = threading.Thread(target=pool.start)
    starting.start()
    assert entered.wait(5)
    results: list[list[str]] = []
    stopper = threading.Thread(target=lambda: results.append(pool.stop(5)))
    stopper.start()
    wait_for(lambda: pool.stopping, what="the stop to begin")
    release.set()
    stopper.join(10)
    starting.join(10)
    assert results == [[]]
    assert pool_threads(before) == []
    assert {e.status for e in pool.executions().values()} == {WorkerStatus.UNKNOWN}
