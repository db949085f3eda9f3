"""Workers (and a factory) of the start-up tests: constructors that are counted, slow, or that exit.

Each constructor that the tests count appends ``<pid> <name>`` to the file ``record`` (an OPTIONS key),
so that a test counts the constructions of one process.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from django.conf import settings

from django_workers import Worker, WorkerContext, ctx_logger

PATH = "tests.scenarios.workers_startup"


def record_construction(record: str, name: str) -> None:
    with Path(record).open("a") as file:
        file.write(f"{os.getpid()} {name}\n")


def constructions(record: Path, pid: int | None = None) -> list[str]:
    """The names recorded in ``record`` (by process ``pid`` only, when given), in order."""
    if not record.exists():
        return []
    lines = [line.split(" ", 1) for line in record.read_text().splitlines()]
    return [name for owner, name in lines if pid is None or int(owner) == pid]


class Counted(Worker):
    """Records each construction; runs until cancelled. It reads a setting, as some constructors do."""

    def __init__(self, record: str, name: str = "counted") -> None:
        record_construction(record, name)
        self.name = name
        self.tag = getattr(settings, "STARTUP_TEST_TAG", "")

    def run(self, ctx: WorkerContext) -> None:
        ctx_logger(ctx).info("%s is running", self.name)
        while not ctx.sleep(5.0):
            pass


class SlowToConstruct(Counted):
    """A constructor that connects somewhere slow: it waits until the file ``release`` exists.

    It says on stderr when it begins (the tests synchronise on that line), and gives up after a minute.
    """

    def __init__(self, record: str, release: str, name: str = "slow") -> None:
        print(f"constructing {name}", file=sys.stderr, flush=True)
        deadline = time.monotonic() + 60
        while not Path(release).exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        super().__init__(record, name)


class ExitingConstructor(Worker):
    """A constructor that calls ``sys.exit(1)`` (a library giving up on its configuration, say)."""

    name = "exiting-constructor"

    def __init__(self) -> None:
        sys.exit(1)

    def run(self, ctx: WorkerContext) -> None:
        pass


class ProcessKiller(Worker):
    """Calls ``os._exit(1)`` once the file ``trigger`` exists: the process dies at once, nothing is stopped."""

    name = "process-killer"

    def __init__(self, trigger: str) -> None:
        self.trigger = Path(trigger)

    def run(self, ctx: WorkerContext) -> None:
        while not self.trigger.exists():
            if ctx.sleep(0.01):
                return
        ctx_logger(ctx).info("process-killer calls os._exit(1)")
        os._exit(1)


def exiting_tracer_provider() -> object:
    """A ``TRACING["PROVIDER"]`` factory that calls ``sys.exit(1)``."""
    sys.exit(1)
