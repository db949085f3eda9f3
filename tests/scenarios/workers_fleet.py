"""The singleton worker of the fleet tests: fenced writes to a shared row, each one recorded in an oracle file.

Each replica appends to ``$FLEET_ORACLE_DIR/<pid>.oracle``, one line per fact, written with a single
``write(2)`` to a file opened with ``O_APPEND`` (a SIGKILL leaves whole lines), times from
``time.monotonic()`` (CLOCK_MONOTONIC: one clock for every process of the machine):

- ``start <pid> <fence> <t>`` when an attempt begins, ``end <pid> <fence> <t>`` when it returns;
- ``write <pid> <fence> <t0> <t1> <outcome> <value>`` for each write: begun at ``t0``, answered at
  ``t1``; ``applied`` (``value``: the row's counter after it, a total order of the applied writes),
  ``rejected`` by the fence guard, or ``error`` (the database could not be reached).

The resource is the row ``id = 1`` of the table ``fleet_resource`` the test creates.
"""

from __future__ import annotations

import contextlib
import os
import time

from django.db import DatabaseError, connection

from django_workers import Worker, WorkerContext

#: The fenced write: applied only when no later fence has written (the guard of docs/fleet.md).
FENCED_WRITE = (
    "UPDATE fleet_resource SET value = value + 1, fence = %s, writer = %s WHERE id = 1 AND fence <= %s RETURNING value"
)


class Oracle:
    """Appends the facts of this process to its oracle file."""

    def __init__(self, directory: str) -> None:
        self.pid = os.getpid()
        self.path = os.path.join(directory, f"{self.pid}.oracle")

    def record(self, *fields: object) -> None:
        line = " ".join(str(field) for field in fields) + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)


class FencedWriter(Worker):
    """Writes the shared row every 50 ms under ``ctx.fence`` until cancelled, then once more on its way out.

    The last write is what a real worker does when it flushes its state at a stop: for a holder
    that was frozen past its lease, it is a write with a stale token, which the guard must reject.
    """

    name = "fleet-relay"

    def run(self, ctx: WorkerContext) -> None:
        fence = ctx.fence
        if fence is None:
            raise RuntimeError("fleet-relay must run as a singleton: ctx.fence is None")
        oracle = Oracle(os.environ["FLEET_ORACLE_DIR"])
        oracle.record("start", oracle.pid, fence, time.monotonic())
        try:
            while True:
                self.write(oracle, fence)
                if ctx.sleep(0.05):
                    break
            self.write(oracle, fence)
        finally:
            oracle.record("end", oracle.pid, fence, time.monotonic())

    @staticmethod
    def write(oracle: Oracle, fence: int) -> None:
        began = time.monotonic()
        try:
            with connection.cursor() as cursor:
                cursor.execute(FENCED_WRITE, [fence, oracle.pid, fence])
                row = cursor.fetchone()
        except DatabaseError:
            # Unreachable or killed: the next write opens a new connection.
            with contextlib.suppress(DatabaseError):
                connection.close()
            oracle.record("write", oracle.pid, fence, began, time.monotonic(), "error", -1)
            return
        outcome, value = ("applied", row[0]) if row is not None else ("rejected", -1)
        oracle.record("write", oracle.pid, fence, began, time.monotonic(), outcome, value)
