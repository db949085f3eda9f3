"""Fixtures and helpers of the engine tests (tests/core): workers that wait or fail, an event listener.

The pools come from the ``harness`` fixture (tests/conftest.py); FnWorker, AsyncFnWorker, ZERO_BACKOFF,
wait_for and the log collectors are in tests/support.py.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from django_workers.core import Worker, WorkerContext
from django_workers.core.events import ReportedEvent, WorkerEvent
from tests.support import AsyncFnWorker, FnWorker, RecordCollector

LONG = 60.0  # seconds: a cap on waits that a test always interrupts much earlier


@pytest.fixture(autouse=True)
def no_supervision_failure() -> Iterator[None]:
    """Fail any test during which the engine's own supervision code crashed.

    The drivers log ``supervision of worker <name> failed`` when the pool itself (not a worker)
    raises: whatever the test asserts, that is a bug.
    """
    logger = logging.getLogger("django_workers")
    handler = RecordCollector()
    handler.setLevel(logging.ERROR)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
    crashes = handler.matching("supervision of worker")
    if crashes:
        pytest.fail(f"the engine's supervision crashed: {[logging.Formatter().format(r) for r in crashes]}")


def timed(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, float]:
    """``fn(*args, **kwargs)`` and the seconds it took."""
    began = time.monotonic()
    result = fn(*args, **kwargs)
    return result, time.monotonic() - began


def until_cancelled(kind: str, name: str, started: threading.Event | None = None) -> Worker:
    """A well-behaved long-running worker: signals ``started`` then waits until the pool stops it."""
    if kind == "sync":

        def body(ctx: WorkerContext) -> None:
            if started is not None:
                started.set()
            while not ctx.sleep(LONG):
                pass

        return FnWorker(name, body)

    async def abody(ctx: WorkerContext) -> None:
        if started is not None:
            started.set()
        while not await ctx.asleep(LONG):
            pass

    return AsyncFnWorker(name, abody)


def failing(
    kind: str,
    name: str,
    exc: Callable[[WorkerContext], BaseException] = lambda ctx: ValueError("boom"),
    succeed_at: int | None = None,
) -> Worker:
    """A worker raising ``exc(ctx)`` on every attempt (until attempt ``succeed_at``, which returns)."""
    if kind == "sync":

        def body(ctx: WorkerContext) -> None:
            if succeed_at is not None and ctx.attempt >= succeed_at:
                return
            raise exc(ctx)

        return FnWorker(name, body)

    async def abody(ctx: WorkerContext) -> None:
        if succeed_at is not None and ctx.attempt >= succeed_at:
            return
        raise exc(ctx)

    return AsyncFnWorker(name, abody)


def messages(execution: Any) -> list[str]:
    """The messages of a ``WorkerExecution`` snapshot's events, oldest first."""
    return [event.message for event in execution.events]


class EventLog:
    """A listener keeping every lifecycle event, with a blocking ``wait_until``."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.events: list[Any] = []

    def __call__(self, event: Any) -> None:
        with self._cond:
            self.events.append(event)
            self._cond.notify_all()

    def wait_until(self, predicate: Callable[[list[Any]], object], timeout: float = 10.0) -> None:
        """Block until ``predicate(events)`` is truthy; fail the test after ``timeout``."""
        with self._cond:
            if not self._cond.wait_for(lambda: predicate(self.events), timeout):
                pytest.fail(f"listener condition not met within {timeout} seconds; events: {self.events!r}")

    def snapshot(self) -> list[Any]:
        with self._cond:
            return list(self.events)

    def of(self, kind: Any, worker: str | None = None) -> list[Any]:
        """Events that are instances of ``kind`` (a class or a union), for one worker if given."""
        return [
            e
            for e in self.snapshot()
            if isinstance(e, kind) and (worker is None or (isinstance(e, WorkerEvent) and e.worker == worker))
        ]

    def worker_events(self, worker: str) -> list[Any]:
        return self.of(WorkerEvent, worker)

    def reported_messages(self, worker: str) -> list[str]:
        return [e.record.message for e in self.of(ReportedEvent, worker)]
