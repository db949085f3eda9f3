"""Demo workers: one of each kind that ``manage.py runworkers`` supervises (see settings.WORKERS)."""

from __future__ import annotations

import asyncio

from django.contrib.auth import get_user_model

from django_workers import Worker, WorkerContext, ctx_logger
from django_workers.db import unit_of_work


class ClassicWorker(Worker):
    """Logs and returns: one successful attempt, then done (a returned worker is never restarted)."""

    name = "classic-worker"

    def run(self, ctx: WorkerContext) -> None:
        ctx_logger(ctx).info("hello from the classic worker: one run, then done")


class CancellableWorker(Worker):
    """Loops until the pool stops it; ``ctx.sleep`` returns at once on cancellation."""

    name = "cancellable-worker"

    def __init__(self, interval: float = 2.0) -> None:
        self.interval = interval

    def run(self, ctx: WorkerContext) -> None:
        log = ctx_logger(ctx)
        ticks = 0
        while not ctx.cancelled:
            ticks += 1
            log.debug("tick %d", ticks)
            ctx.sleep(self.interval)
        log.info("cancelled after %d tick(s)", ticks)


class FlakyWorker(Worker):
    """Fails its first ``failures`` attempts, then succeeds: restarts with backoff in action."""

    name = "flaky-worker"

    def __init__(self, failures: int = 2) -> None:
        self.failures = failures

    def run(self, ctx: WorkerContext) -> None:
        if ctx.attempt <= self.failures:
            raise RuntimeError(f"simulated failure on attempt {ctx.attempt} (this worker fails {self.failures} times)")
        ctx_logger(ctx).info("attempt %d succeeded after %d failure(s)", ctx.attempt, self.failures)


class AsyncWorker(Worker):
    """A coroutine worker: a task on the pool's event loop, not a thread."""

    name = "async-worker"

    def __init__(self, interval: float = 3.0) -> None:
        self.interval = interval

    async def run(self, ctx: WorkerContext) -> None:
        log = ctx_logger(ctx)
        beats = 0
        try:
            while not ctx.cancelled:
                beats += 1
                log.debug("heartbeat %d", beats)
                await ctx.asleep(self.interval)
        except asyncio.CancelledError:
            log.info("cancelled after %d heartbeat(s)", beats)
            raise


class OrmWorker(Worker):
    """Queries the database once per loop, each loop one unit of work.

    ``unit_of_work()`` closes the thread's connection when it is broken or older than
    ``CONN_MAX_AGE``, before and after the block, as Django does around a request.
    """

    name = "orm-worker"

    def __init__(self, interval: float = 5.0) -> None:
        self.interval = interval

    def run(self, ctx: WorkerContext) -> None:
        log = ctx_logger(ctx)
        users = get_user_model().objects
        while not ctx.cancelled:
            with unit_of_work():
                count = users.count()
            log.info("%d user(s) in the database", count)
            ctx.sleep(self.interval)
