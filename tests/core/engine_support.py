"""Workers, listeners and log collectors shared by the engine tests (tests/core)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from django_workers.core import Backoff, Worker, WorkerContext, WorkerPool
from django_workers.core.events import ReportedEvent, WorkerEvent
from tests.conftest import wait_for

__all__ = [
    "ZERO_BACKOFF",
    "AsyncFnWorker",
    "EventLog",
    "FnWorker",
    "Harness",
    "RecordCollector",
    "collect_logs",
    "failing",
    "messages",
    "timed",
    "until_cancelled",
    "wait_for",
]

#: Restart at once: for tests where time is not the subject.
ZERO_BACKOFF = Backoff(initial=0)

LONG = 60.0  # seconds: a cap on waits that a test always interrupts much earlier


class Harness:
    """Builds pools and gates for one test, and cleans up after it.

    At teardown every gate is opened (so a worker blocked on one returns), then every pool is
    stopped; a pool that still has a running worker then fails the test.
    """

    def __init__(self) -> None:
        self.pools: list[WorkerPool] = []
        self.gates: list[threading.Event] = []

    def pool(self, *workers: Worker, cls: type[WorkerPool] = WorkerPool, **kwargs: Any) -> WorkerPool:
        """A pool (zero restart backoff unless given) with ``workers`` registered."""
        kwargs.setdefault("restart_backoff", ZERO_BACKOFF)
        pool = cls(**kwargs)
        for worker in workers:
            pool.register(worker)
        self.pools.append(pool)
        return pool

    def gate(self) -> threading.Event:
        """An event that a blocking worker waits on; opened at teardown at the latest."""
        gate = threading.Event()
        self.gates.append(gate)
        return gate

    def close(self) -> None:
        for gate in self.gates:
            gate.set()
        left = {id(pool): pool.stop(timeout=5.0) for pool in self.pools}
        leftover = {key: names for key, names in left.items() if names}
        assert not leftover, f"workers still running at teardown: {leftover}"


class FnWorker(Worker):
    """A sync worker whose ``run`` calls ``fn(ctx)``; ``calls`` counts the attempts that ran."""

    def __init__(self, name: str, fn: Callable[[WorkerContext], Any] | None = None) -> None:
        self.name = name
        self.fn = fn
        self.calls = 0

    def run(self, ctx: WorkerContext) -> Any:
        self.calls += 1
        return None if self.fn is None else self.fn(ctx)


class AsyncFnWorker(Worker):
    """An async worker whose ``run`` awaits ``fn(ctx)``; ``calls`` counts the attempts that ran."""

    def __init__(self, name: str, fn: Callable[[WorkerContext], Awaitable[Any]] | None = None) -> None:
        self.name = name
        self.fn = fn
        self.calls = 0

    async def run(self, ctx: WorkerContext) -> Any:
        self.calls += 1
        return None if self.fn is None else await self.fn(ctx)


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


class RecordCollector(logging.Handler):
    """A handler keeping the records it receives (thread-safe: ``Handler.handle`` holds its lock)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def matching(self, text: str, level: int | None = None) -> list[logging.LogRecord]:
        with self.lock:  # type: ignore[union-attr]
            records = list(self.records)
        return [r for r in records if text in r.getMessage() and (level is None or r.levelno == level)]


@contextmanager
def collect_logs(
    name: str = "django_workers", level: int = logging.DEBUG, filters: tuple[logging.Filter, ...] = ()
) -> Iterator[RecordCollector]:
    """Attach a :class:`RecordCollector` to logger ``name`` for the duration of the block."""
    logger = logging.getLogger(name)
    handler = RecordCollector()
    for log_filter in filters:
        handler.addFilter(log_filter)
    previous = logger.level
    logger.setLevel(level)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
