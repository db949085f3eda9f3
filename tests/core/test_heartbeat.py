"""Hang detection: ctx.heartbeat(), max_silence, restart_on_silence, the watchdog."""

from __future__ import annotations

import asyncio
import threading

import pytest

from django_workers import Worker, WorkerContext, WorkerPool, WorkerStatus
from django_workers.core.events import LifecycleEvent, WorkerSilent
from django_workers.probe import WorkerProbe
from tests.support import ZERO_BACKOFF, wait_for


def messages(pool: WorkerPool, name: str) -> list[str]:
    return [event.message for event in pool.execution(name).events]


class Beating(Worker):
    """Heartbeats while it runs; stops heartbeating while ``mute`` is set."""

    name = "beating"

    def __init__(self) -> None:
        self.mute = threading.Event()
        self.beats = 0

    def run(self, ctx: WorkerContext) -> None:
        while not ctx.cancelled:
            if not self.mute.is_set():
                ctx.heartbeat()
                self.beats += 1
            ctx.sleep(0.01)


class SilentThenBeating(Worker):
    """Attempt 1 waits without a heartbeat (until cancelled); later attempts heartbeat."""

    name = "silent-sync"

    def run(self, ctx: WorkerContext) -> None:
        while not ctx.cancelled:
            if ctx.attempt > 1:
                ctx.heartbeat()
            ctx.sleep(0.02)


class AsyncSilentThenBeating(Worker):
    name = "silent-async"

    async def run(self, ctx: WorkerContext) -> None:
        if ctx.attempt == 1:
            await asyncio.Event().wait()  # never heartbeats; cancelled by the watchdog
        while not ctx.cancelled:
            ctx.heartbeat()
            await ctx.asleep(0.02)


def test_a_worker_that_keeps_heartbeating_is_never_silent() -> None:
    worker = Beating()
    pool = WorkerPool(log=False)
    pool.register(worker, max_silence=0.3)
    with pool:
        wait_for(lambda: worker.beats > 60)  # well past several max_silence periods
        execution = pool.execution("beating")
        assert execution.status is WorkerStatus.RUNNING
        assert not execution.silent
        assert execution.max_silence == 0.3
        assert execution.last_heartbeat is not None
        assert "no heartbeat for 0.3 seconds" not in messages(pool, "beating")
        assert WorkerProbe(pool).check().success


def test_a_silent_worker_is_reported_and_unhealthy_but_not_cancelled_without_restart_on_silence() -> None:
    worker = Beating()
    worker.mute.set()
    silent: list[WorkerSilent] = []
    pool = WorkerPool(log=False, listeners=[lambda e: isinstance(e, WorkerSilent) and silent.append(e)])
    pool.register(worker, max_silence=0.1)
    with pool:
        wait_for(lambda: silent)
        execution = pool.execution("beating")
        assert execution.status is WorkerStatus.RUNNING
        assert execution.silent
        assert execution.has_event("no heartbeat for 0.1 seconds")
        assert silent[0].restarting is False
        result = WorkerProbe(pool).check()
        assert not result.success
        assert result.message == "beating: running (silent)"
        # It speaks again: healthy again, the attempt was never cancelled.
        worker.mute.clear()
        wait_for(lambda: not pool.execution("beating").silent)
        assert WorkerProbe(pool).check().success
        assert pool.execution("beating").current_execution_attempt == 1
    assert len(silent) == 1  # reported once per attempt


@pytest.mark.parametrize("worker_class", [SilentThenBeating, AsyncSilentThenBeating])
def test_restart_on_silence_cancels_the_silent_attempt_and_restarts_it(worker_class: type[Worker]) -> None:
    worker = worker_class()
    pool = WorkerPool(max_executions_attempts=3, restart_backoff=ZERO_BACKOFF, log=False)
    pool.register(worker, max_silence=0.1, restart_on_silence=True)
    with pool:
        wait_for(lambda: pool.execution(worker.name).current_execution_attempt == 2)
        wait_for(lambda: pool.execution(worker.name).status is WorkerStatus.RUNNING)
        events = messages(pool, worker.name)
        assert events[:5] == [
            "starting execution attempt 1/3",
            "no heartbeat for 0.1 seconds",
            "stopping execution attempt 1/3 with error: no heartbeat for 0.1 seconds",
            "restarting after error",
            "starting execution attempt 2/3",
        ]
        assert pool.execution(worker.name).last_error == "no heartbeat for 0.1 seconds"
    assert pool.execution(worker.name).status is WorkerStatus.SUCCESS  # attempt 2 ended by the stop


def test_stop_still_cancels_a_worker_with_its_own_attempt_signal() -> None:
    started = threading.Event()

    class Waiting(Worker):
        name = "waiting"

        def run(self, ctx: WorkerContext) -> None:
            started.set()
            ctx.sleep(60)

    pool = WorkerPool(log=False)
    pool.register(Waiting(), max_silence=30, restart_on_silence=True)
    pool.start()
    assert started.wait(5)
    assert pool.stop(5) == []
    assert pool.execution("waiting").status is WorkerStatus.SUCCESS


def test_the_watchdog_thread_only_exists_when_a_worker_is_watched() -> None:
    events: list[LifecycleEvent] = []
    pool = WorkerPool(log=False, listeners=[events.append])
    pool.register(Beating())
    with pool:
        assert all(t.name != "worker-pool:watchdog" for t in threading.enumerate())
        other = Beating()
        other.name = "watched"  # type: ignore[misc]
        pool.register(other, max_silence=10)
        assert any(t.name == "worker-pool:watchdog" for t in threading.enumerate())
    assert all(t.name != "worker-pool:watchdog" for t in threading.enumerate())


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"max_silence": 0}, ValueError),
        ({"max_silence": -1}, ValueError),
        ({"max_silence": "5"}, TypeError),
        ({"restart_on_silence": True}, ValueError),
        ({"max_silence": 5, "restart_on_silence": "yes"}, TypeError),
    ],
)
def test_bad_hang_detection_arguments_are_rejected(kwargs: dict[str, object], error: type[Exception]) -> None:
    with pytest.raises(error):
        WorkerPool(log=False).register(Beating(), **kwargs)  # type: ignore[arg-type]
