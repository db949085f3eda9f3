"""Workers of the runworkers subprocess tests. Each logs a line the tests synchronise on."""

from __future__ import annotations

import time

from django.db import connection

from django_workers import Worker, WorkerContext, ctx_logger
from django_workers.db import unit_of_work


class Sleeper(Worker):
    """Waits until cancelled; its name comes from OPTIONS, so a scenario can run several."""

    name = "sleeper"

    def __init__(self, name: str = "sleeper") -> None:
        self.name = name

    def run(self, ctx: WorkerContext) -> None:
        log = ctx_logger(ctx)
        log.info("%s is running", self.name)
        while not ctx.sleep(5.0):
            pass
        log.info("%s noticed the cancellation", self.name)


class Quiet(Worker):
    """Waits until cancelled and logs nothing; its name comes from OPTIONS (a scenario runs hundreds)."""

    name = "quiet"

    def __init__(self, name: str = "quiet") -> None:
        self.name = name

    def run(self, ctx: WorkerContext) -> None:
        while not ctx.sleep(5.0):
            pass


class AsyncSleeper(Worker):
    """An async worker waiting until cancelled."""

    name = "async-sleeper"

    async def run(self, ctx: WorkerContext) -> None:
        ctx_logger(ctx).info("async-sleeper is running")
        while not await ctx.asleep(5.0):
            pass


class OneShot(Worker):
    """Returns at once (success)."""

    name = "one-shot"

    def run(self, ctx: WorkerContext) -> None:
        ctx_logger(ctx).info("one-shot done")


class Failing(Worker):
    """Fails every attempt."""

    name = "failing"

    def run(self, ctx: WorkerContext) -> None:
        raise RuntimeError("failing on purpose")


class Stuck(Worker):
    """Ignores cancellation: a stop times out on it."""

    name = "stuck"

    def run(self, ctx: WorkerContext) -> None:
        ctx_logger(ctx).info("stuck is running and will ignore cancellation")
        ignore_cancellation()


def ignore_cancellation() -> None:
    """The frame the tests look for in the stack logged at the stop timeout."""
    while True:
        time.sleep(0.05)


class Chatty(Worker):
    """Logs one line per level, then waits until cancelled."""

    name = "chatty"

    def run(self, ctx: WorkerContext) -> None:
        log = ctx_logger(ctx)
        log.debug("chatty debug line")
        log.info("chatty info line")
        log.error("chatty error line")
        while not ctx.sleep(5.0):
            pass


def backend_id() -> int:
    """The server process of this thread's connection (PostgreSQL), or the connection's identity."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            return int(cursor.fetchone()[0])
    connection.ensure_connection()
    return id(connection.connection)


class DatabaseHolder(Worker):
    """Holds one connection for its whole attempt (a LISTEN loop, a server-side cursor...).

    Killing its backend fails the attempt; the pool's hygiene gives the next one a new connection.
    """

    name = "holder"

    def run(self, ctx: WorkerContext) -> None:
        ctx_logger(ctx).info("holder attempt %d uses backend %d", ctx.attempt, backend_id())
        while not ctx.sleep(0.1):
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")


class DatabaseLooper(Worker):
    """Works in units of work: with CONN_HEALTH_CHECKS a killed connection is replaced in the next unit."""

    name = "looper"

    def run(self, ctx: WorkerContext) -> None:
        log = ctx_logger(ctx)
        last = None
        while not ctx.cancelled:
            with unit_of_work():
                backend = backend_id()
            if backend != last:
                log.info("looper attempt %d uses backend %d", ctx.attempt, backend)
                last = backend
            ctx.sleep(0.1)


class DatabaseVisitor(Worker):
    """Uses the database once and returns: its thread's connection must be closed at once."""

    name = "visitor"

    def run(self, ctx: WorkerContext) -> None:
        ctx_logger(ctx).info("visitor used backend %d", backend_id())
