"""Async workers: one event loop thread for all of them, cancellation, CancelledError, asleep, until_cancelled."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from django_workers.core import Backoff, WorkerStatus, ctx_worker_name
from tests.core.conftest import failing, messages, timed, until_cancelled
from tests.support import AsyncFnWorker, FnWorker, collect_logs, wait_for

LOOP_THREAD = "worker-pool:event-loop"


def test_async_workers_run_on_the_pool_event_loop_thread(harness) -> None:
    seen: list[tuple[str, bool]] = []

    async def abody(ctx) -> None:
        loop = asyncio.get_running_loop()
        seen.append((threading.current_thread().name, loop.is_running()))

    pool = harness.pool(AsyncFnWorker("a", abody), AsyncFnWorker("b", abody))
    pool.start()
    assert pool.wait(5)
    assert seen == [(LOOP_THREAD, True), (LOOP_THREAD, True)]


def test_no_thread_per_async_worker(harness) -> None:
    count = 50
    lock = threading.Lock()
    running: set[str] = set()
    threads: set[str] = set()
    all_running = threading.Event()

    def make(i: int) -> AsyncFnWorker:
        async def abody(ctx) -> None:
            with lock:
                running.add(ctx.worker_name)
                threads.add(threading.current_thread().name)
                if len(running) == count:
                    all_running.set()
            while not await ctx.asleep(60):
                pass

        return AsyncFnWorker(f"async-{i}", abody)

    before = threading.active_count()
    pool = harness.pool(*(make(i) for i in range(count)))
    pool.start()
    assert all_running.wait(10)
    assert threading.active_count() - before == 1  # the event loop thread, and nothing else
    assert threads == {LOOP_THREAD}
    assert {e.status for e in pool.executions().values()} == {WorkerStatus.RUNNING}
    assert pool.stop(5) == []
    assert {e.status for e in pool.executions().values()} == {WorkerStatus.SUCCESS}
    assert threading.active_count() == before  # stop() joined the loop thread


def test_sync_and_async_workers_in_one_pool(harness) -> None:
    seen: dict[str, str] = {}

    def body(ctx) -> None:
        seen["sync"] = threading.current_thread().name

    async def abody(ctx) -> None:
        seen["async"] = threading.current_thread().name

    pool = harness.pool(FnWorker("s", body), AsyncFnWorker("a", abody))
    pool.start()
    assert pool.wait(5)
    assert seen["async"] == LOOP_THREAD
    assert seen["sync"] not in (LOOP_THREAD, threading.current_thread().name)
    assert {e.status for e in pool.executions().values()} == {WorkerStatus.SUCCESS}


def test_stop_cancels_the_task_and_the_attempt_ends_in_success(harness) -> None:
    started = threading.Event()
    observed: list[str] = []

    async def abody(ctx) -> None:
        started.set()
        try:
            await asyncio.sleep(60)  # not ctx.asleep: only the task cancellation can end this
        except asyncio.CancelledError:
            observed.append(f"cancelled, ctx.cancelled={ctx.cancelled}")
            raise

    pool = harness.pool(AsyncFnWorker("w", abody), max_executions_attempts=3)
    pool.start()
    assert started.wait(5)
    not_stopped, elapsed = timed(pool.stop, 5)
    assert not_stopped == []
    assert elapsed < 1.0
    assert observed == ["cancelled, ctx.cancelled=True"]
    execution = pool.execution("w")
    assert execution.status is WorkerStatus.SUCCESS
    assert messages(execution) == ["starting execution attempt 1/3", "stopping execution attempt 1/3 with success"]


def test_worker_swallowing_the_cancellation_and_returning_ends_in_success(harness) -> None:
    started = threading.Event()
    cleanups: list[bool] = []

    async def abody(ctx) -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cleanups.append(await ctx.asleep(60))  # already cancelled: True at once

    pool = harness.pool(AsyncFnWorker("w", abody))
    pool.start()
    assert started.wait(5)
    not_stopped, elapsed = timed(pool.stop, 5)
    assert not_stopped == []
    assert elapsed < 1.0
    assert cleanups == [True]
    assert pool.execution("w").status is WorkerStatus.SUCCESS


def test_cancelled_error_raised_by_the_worker_itself_is_a_recovered_panic(harness) -> None:
    async def abody(ctx) -> None:
        if ctx.attempt == 1:
            raise asyncio.CancelledError()  # not caused by stop(): e.g. a cancelled inner future

    pool = harness.pool(AsyncFnWorker("w", abody), max_executions_attempts=2)
    pool.start()
    assert pool.wait(5)
    execution = pool.execution("w")
    assert messages(execution) == [
        "starting execution attempt 1/2",
        "stopping execution attempt 1/2 with recovered panic: CancelledError()",
        "restarting after panic recovery",
        "starting execution attempt 2/2",
        "stopping execution attempt 2/2 with success",
    ]
    assert execution.status is WorkerStatus.SUCCESS


def test_cancelled_inner_task_propagating_is_not_mistaken_for_a_stop(harness) -> None:
    async def abody(ctx) -> None:
        inner = asyncio.ensure_future(asyncio.sleep(60))
        inner.cancel()
        await inner  # raises CancelledError although nobody stopped the pool

    pool = harness.pool(AsyncFnWorker("w", abody))
    pool.start()
    assert pool.wait(5)
    execution = pool.execution("w")
    assert execution.status is WorkerStatus.ERROR
    assert execution.has_event("stopping execution attempt 1/1 with recovered panic: CancelledError()")
    assert execution.has_event("max execution attempts reached")


def test_a_failing_async_worker_restarting_at_once_does_not_starve_the_others(harness) -> None:
    other_ran = threading.Event()

    async def fails_before_awaiting(ctx) -> None:
        raise ConnectionError("refused")

    async def other(ctx) -> None:
        other_ran.set()
        while not await ctx.asleep(60):
            pass

    pool = harness.pool(
        AsyncFnWorker("crashing", fails_before_awaiting),
        AsyncFnWorker("other", other),
        max_executions_attempts=0,
        restart_backoff=Backoff(initial=0),
        history_size=10,
    )
    pool.start()
    assert other_ran.wait(5), "the event loop is monopolised by a worker restarting in a tight loop"
    wait_for(lambda: pool.execution("crashing").current_execution_attempt > 10)
    assert pool.stop(5) == []
    assert pool.execution("other").status is WorkerStatus.SUCCESS


@pytest.mark.parametrize("immediately", [True, False])
def test_stop_right_after_start_leaves_no_worker_running(harness, immediately: bool) -> None:
    started = threading.Event()
    pool = harness.pool(until_cancelled("async", "a", started), until_cancelled("sync", "s"))
    pool.start()
    if not immediately:
        assert started.wait(5)
    assert pool.stop(5) == []
    for name, execution in pool.executions().items():
        assert execution.status is not WorkerStatus.RUNNING, (name, messages(execution))
        if execution.events:
            assert execution.status is WorkerStatus.SUCCESS, (name, messages(execution))
            assert messages(execution)[-1] == "stopping execution attempt 1/1 with success"
        else:  # stopped before its first attempt could begin: it never starts
            assert immediately
            assert execution.status is WorkerStatus.UNKNOWN
    assert pool.wait(0)


def test_async_worker_returning_just_as_the_stop_arrives_ends_in_success(harness) -> None:
    entered = threading.Event()

    async def abody(ctx) -> None:
        entered.set()
        # A blocking call on the loop (a worker bug, but it happens): it returns when stop() sets
        # the cancel flag, before the pool could cancel the task; the task is cancelled right after.
        ctx.sleep(60)

    pool = harness.pool(AsyncFnWorker("w", abody), max_executions_attempts=3)
    with collect_logs() as logs:
        pool.start()
        assert entered.wait(5)
        assert pool.stop(5) == []
    execution = pool.execution("w")
    assert execution.status is WorkerStatus.SUCCESS, messages(execution)
    assert messages(execution) == ["starting execution attempt 1/3", "stopping execution attempt 1/3 with success"]
    assert not logs.matching("supervision of worker"), "the pool's own supervision must not fail"


def test_asleep_returns_false_when_not_cancelled_and_true_at_once_when_cancelled(harness) -> None:
    results: list[tuple[bool, float]] = []
    started = threading.Event()
    contexts = []

    async def abody(ctx) -> None:
        contexts.append(ctx)
        began = time.monotonic()
        results.append((await ctx.asleep(0.01), time.monotonic() - began))
        started.set()
        while not await ctx.asleep(60):
            pass

    pool = harness.pool(AsyncFnWorker("w", abody))
    pool.start()
    assert started.wait(5)
    assert results[0][0] is False
    assert results[0][1] >= 0.01
    assert pool.stop(5) == []
    (ctx,) = contexts
    assert ctx.cancelled
    began = time.monotonic()
    assert asyncio.run(ctx.asleep(60)) is True
    assert ctx.sleep(60) is True
    assert time.monotonic() - began < 0.5


def test_sleep_returns_false_when_not_cancelled(harness) -> None:
    results: list[bool] = []

    def body(ctx) -> None:
        results.append(ctx.sleep(0.01))
        results.append(ctx.sleep(0))
        results.append(ctx.cancelled)

    pool = harness.pool(FnWorker("w", body))
    pool.start()
    assert pool.wait(5)
    assert results == [False, False, False]


def test_async_deferral_and_backoff_are_honoured_on_the_loop(harness) -> None:
    times: list[float] = []

    async def abody(ctx) -> None:
        times.append(time.monotonic())
        if ctx.attempt == 1:
            raise RuntimeError("again")

    pool = harness.pool(
        AsyncFnWorker("w", abody),
        deferred_start_threshold=0.1,
        max_executions_attempts=2,
        restart_backoff=Backoff(initial=0.2, maximum=0.2, jitter=0),
    )
    began = time.monotonic()
    pool.start()
    assert pool.wait(5)
    assert times[0] - began >= 0.1
    assert times[1] - times[0] >= 0.2
    assert pool.execution("w").status is WorkerStatus.SUCCESS


def test_async_worker_nested_tasks_see_the_worker_context(harness) -> None:
    names: list[str] = []

    async def child() -> None:
        names.append(ctx_worker_name())

    async def abody(ctx) -> None:
        await asyncio.gather(child(), asyncio.create_task(child()))

    pool = harness.pool(AsyncFnWorker("parent", abody), failing("async", "other", succeed_at=1))
    pool.start()
    assert pool.wait(5)
    assert names == ["parent", "parent"]


# -- the stop signal: ctx.asleep() and ctx.until_cancelled() end without a task cancellation ----


def test_until_cancelled_returns_true_at_stop_without_cancelling_the_task(harness) -> None:
    started = threading.Event()
    seen: list[object] = []

    async def abody(ctx) -> None:
        started.set()
        try:
            result = await ctx.until_cancelled()
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise
        seen.append((result, ctx.cancelled))

    pool = harness.pool(AsyncFnWorker("w", abody))
    pool.start()
    assert started.wait(5)
    not_stopped, elapsed = timed(pool.stop, 5)
    assert not_stopped == []
    assert elapsed < 1.0
    assert seen == [(True, True)]
    execution = pool.execution("w")
    assert execution.status is WorkerStatus.SUCCESS
    assert messages(execution) == ["starting execution attempt 1/1", "stopping execution attempt 1/1 with success"]


def test_a_worker_woken_by_until_cancelled_winds_down_with_awaits_uncancelled(harness) -> None:
    ready = threading.Event()
    outcomes: list[str] = []
    queues: list[tuple[asyncio.AbstractEventLoop, asyncio.Queue[str]]] = []

    async def consume(queue: asyncio.Queue[str]) -> None:
        while True:
            outcomes.append(await queue.get())

    async def abody(ctx) -> None:
        queue: asyncio.Queue[str] = asyncio.Queue()
        queues.append((asyncio.get_running_loop(), queue))
        consumer = asyncio.create_task(consume(queue))
        ready.set()
        await ctx.until_cancelled()
        consumer.cancel()
        try:
            await consumer  # an await after the stop: not cancelled by the pool
        except asyncio.CancelledError:
            outcomes.append("consumer stopped")
        await asyncio.sleep(0)
        outcomes.append("done")

    pool = harness.pool(AsyncFnWorker("w", abody))
    pool.start()
    assert ready.wait(5)
    (loop, queue) = queues[0]
    loop.call_soon_threadsafe(queue.put_nowait, "message")
    wait_for(lambda: outcomes == ["message"])
    assert pool.stop(5) == []
    assert outcomes == ["message", "consumer stopped", "done"]
    assert pool.execution("w").status is WorkerStatus.SUCCESS


def test_a_worker_woken_by_until_cancelled_is_not_cancelled_but_reported_at_the_deadline(harness) -> None:
    ready = threading.Event()
    releases: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []
    seen: list[str] = []

    async def abody(ctx) -> None:
        release = asyncio.Event()
        releases.append((asyncio.get_running_loop(), release))
        ready.set()
        await ctx.until_cancelled()
        try:
            await release.wait()  # slow to wind down: trusted, like a sync worker
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise
        seen.append("released")

    pool = harness.pool(AsyncFnWorker("w", abody))
    pool.start()
    assert ready.wait(5)
    assert pool.stop(0.2) == ["w"]
    execution = pool.execution("w")
    assert execution.status is WorkerStatus.RUNNING
    assert execution.has_event("did not stop within 0.2 seconds")
    (loop, release) = releases[0]
    loop.call_soon_threadsafe(release.set)
    assert pool.stop(5) == []
    assert seen == ["released"]
    assert pool.execution("w").status is WorkerStatus.SUCCESS


@pytest.mark.parametrize("how", ["in a child task", "in asyncio.wait"])
def test_until_cancelled_spares_only_a_task_suspended_on_it(harness, how: str) -> None:
    ready = threading.Event()
    seen: list[str] = []

    async def child(ctx) -> bool:
        return await ctx.until_cancelled()

    async def abody(ctx) -> None:
        # The worker's own task waits in asyncio.wait(), not on the future itself.
        stop = asyncio.create_task(child(ctx)) if how == "in a child task" else ctx.until_cancelled()
        sleeper = asyncio.create_task(asyncio.sleep(60))
        ready.set()
        try:
            await asyncio.wait({stop, sleeper})
        except asyncio.CancelledError:
            await asyncio.sleep(0)  # the child task, woken in the same step, returns
            seen.append(f"cancelled; the stop was seen: {stop.done() and stop.result()}")
            sleeper.cancel()
            await asyncio.wait({sleeper})
            raise

    pool = harness.pool(AsyncFnWorker("w", abody))
    pool.start()
    assert ready.wait(5)
    assert pool.stop(5) == []
    # Both in one step of the loop: the future is done (True), the worker's own task cancelled.
    assert seen == ["cancelled; the stop was seen: True"]
    assert pool.execution("w").status is WorkerStatus.SUCCESS


def test_until_cancelled_composes_with_asyncio_wait_and_returns_at_once_after_the_stop(harness) -> None:
    results: list[object] = []

    async def abody(ctx) -> None:
        done, _ = await asyncio.wait({ctx.until_cancelled()}, timeout=0.01)
        results.append(len(done))  # the pool is running: the wait times out
        await ctx.until_cancelled()
        after = ctx.until_cancelled()  # after the stop: born done
        results.append(after.done() and after.result())
        results.append(await after)

    pool = harness.pool(AsyncFnWorker("w", abody))
    pool.start()
    wait_for(lambda: results == [0])
    assert pool.stop(5) == []
    assert results == [0, True, True]


def test_until_cancelled_futures_left_behind_are_forgotten(harness) -> None:
    # A worker polling with wait_for(ctx.until_cancelled(), timeout) cancels a future each time:
    # the signal must not keep them all until the stop.
    polls: list[int] = []
    signals: list[object] = []

    async def abody(ctx) -> None:
        signals.append(ctx._signal)
        while True:
            try:
                await asyncio.wait_for(ctx.until_cancelled(), 0)
                return
            except TimeoutError:
                polls.append(1)
                if len(polls) == 5000:
                    return

    pool = harness.pool(AsyncFnWorker("w", abody))
    pool.start()
    assert pool.wait(30)
    assert len(polls) == 5000
    (signal,) = signals
    assert len(signal._waiters) <= 4 * 1024  # bounded: not one per poll
    assert pool.stop(5) == []


def test_until_cancelled_outside_the_pool_event_loop_is_a_clear_error(harness) -> None:
    errors: list[str] = []

    async def in_a_loop_of_its_own(ctx) -> None:
        await ctx.until_cancelled()

    def body(ctx) -> None:
        for attempt in (lambda: ctx.until_cancelled(), lambda: asyncio.run(in_a_loop_of_its_own(ctx))):
            try:
                attempt()
            except RuntimeError as exc:
                errors.append(str(exc))

    pool = harness.pool(FnWorker("s", body), AsyncFnWorker("a"))  # the pool has an event loop
    pool.start()
    assert pool.wait(5)
    assert len(errors) == 2
    for error in errors:
        assert "ctx.until_cancelled()" in error
        assert "async workers" in error
        assert "ctx.sleep(seconds) or ctx.cancelled" in error


def test_asleep_in_a_loop_of_its_own_sleeps_then_tells_whether_stopped(harness) -> None:
    results: list[bool] = []

    async def nap(ctx) -> None:
        results.append(await ctx.asleep(0.01))

    def body(ctx) -> None:
        asyncio.run(nap(ctx))

    pool = harness.pool(FnWorker("s", body), AsyncFnWorker("a"))
    pool.start()
    assert pool.wait(5)
    assert results == [False]
