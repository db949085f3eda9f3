"""The one body of the benchmark's trivial worker, run by both sides of benchmarks/bench_peers.py.

It appends its events to the file named by ``PEERS_EVENTS``, one line ``<kind> <name> <pid>
<time.monotonic_ns()>`` per ``os.write`` on a file opened with ``O_APPEND`` (so the lines of many
processes never mix; the monotonic clock is the same in every process of the machine):
``ready`` when it starts running, ``crash`` just before it raises, ``exit`` when it returns after
a stop. With ``PEERS_CRASH_DIR`` set it checks every few milliseconds for the file
``<PEERS_CRASH_DIR>/<name>`` and, when it appears, removes it and raises; without, it only waits
to be stopped. It imports nothing from Django or django_workers.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

CRASH_POLL = 0.005
IDLE_WAIT = 3600.0


class CrashOnDemand(RuntimeError):
    """Raised when the benchmark asks the worker to crash."""


def record(kind: str, name: str) -> None:
    line = f"{kind} {name} {os.getpid()} {time.monotonic_ns()}\n".encode()
    fd = os.open(os.environ["PEERS_EVENTS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def run(name: str, wait: Callable[[float], bool]) -> None:
    """Report running, then idle until ``wait(seconds)`` returns True (stopped); crash when asked."""
    record("ready", name)
    crash_dir = os.environ.get("PEERS_CRASH_DIR")
    trigger = os.path.join(crash_dir, name) if crash_dir else None
    while not wait(IDLE_WAIT if trigger is None else CRASH_POLL):
        if trigger is not None and os.path.exists(trigger):
            os.remove(trigger)
            record("crash", name)
            raise CrashOnDemand(f"{name}: crash on demand")
    record("exit", name)
