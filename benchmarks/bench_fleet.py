#!/usr/bin/env python
"""Benchmark 7: singleton workers on several replicas — takeover after SIGKILL, and the database load of leases.

Run from the project root, with a PostgreSQL server::

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/test .venv/bin/python benchmarks/bench_fleet.py
    ... benchmarks/bench_fleet.py --quick     # smoke mode: 3 takeovers, 10 s of load
    ... benchmarks/bench_fleet.py --strict    # exit 1 when a target is missed

A throw-away database on the server of ``DATABASE_URL`` (``workers_fleet_<pid>``), migrated.

1. **Takeover.** Three ``runworkers`` replicas (``benchmarks/fleet``: the test project's settings, one
   singleton worker ``marker`` that appends ``<pid> <fence> <monotonic time>`` to a file as it
   starts), ``LEASE_TTL`` 2 s, ``RENEW_INTERVAL`` 0.5 s, ``MARGIN`` 0.2 s, ``STOP_TIMEOUT`` 1 s. In
   each round the holder (the pid of the newest line) is SIGKILLed and the time from the kill to
   the next line (a follower's worker starting, with the next fence) is the takeover; a new
   replica replaces the killed one. Reported as a ratio to the TTL, median and worst of the
   rounds (at least 10). Expected between (TTL - renew) / TTL and (TTL + renew) / TTL: the lease
   expires one TTL after the holder's last renewal, which came at most one renew interval before
   the kill, and a follower campaigns every renew interval. Target: worst ≤
   (TTL + RENEW_INTERVAL + 1 s) / TTL, the issue's bound.
2. **Load.** 20 replicas x 10 singletons, simulated in this process: 20 lease keepers, each with
   its own pool of 10 singleton workers and its own connection, for ``duration`` seconds with
   ``RENEW_INTERVAL`` 2 s (``LEASE_TTL`` 6 s). Every statement the keepers send is counted (on
   PostgreSQL each is one round trip and one transaction). Reported per minute per singleton per
   replica, and for the fleet, as measured and scaled to the default renew interval (20 s, a third
   of the default TTL of 60 s): the load is one statement per renew interval per singleton per
   replica, whatever the role.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_admin import ROOT, create_databases, database_url, drop_databases

TTL, RENEW, MARGIN, STOP = 2.0, 0.5, 0.2, 1.0
REPLICAS = 3
LOAD_REPLICAS, LOAD_SINGLETONS = 20, 10
LOAD_TTL, LOAD_RENEW = 6.0, 2.0
DEFAULT_RENEW = 60.0 / 3


def replica(url: str, log: Path, stderr: Path) -> subprocess.Popen[bytes]:
    workers = {
        "STOP_TIMEOUT": STOP,
        "METRICS": {"ENABLED": False},
        "TRACING": {"ENABLED": False},
        "FLEET": {"LEASE_TTL": TTL, "RENEW_INTERVAL": RENEW, "MARGIN": MARGIN},
        "WORKERS": [{"CLASS": "fleet.workers.Marker", "SINGLETON": True}],
    }
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "DJANGO_SETTINGS_MODULE": "fleet.settings",
        "FLEET_BENCH_WORKERS": json.dumps(workers),
        "FLEET_BENCH_LOG": str(log),
        "PYTHONPATH": os.pathsep.join(str(p) for p in (ROOT / "benchmarks", ROOT, ROOT / "testproject")),
    }
    with stderr.open("ab") as err:
        return subprocess.Popen(
            [sys.executable, str(ROOT / "testproject" / "manage.py"), "runworkers", "-v", "2"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )


def runs(log: Path) -> list[tuple[int, int, float]]:
    if not log.exists():
        return []
    found = []
    for line in log.read_text().splitlines():
        pid, fence, at = line.split()
        found.append((int(pid), int(fence), float(at)))
    return found


def wait_until(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise SystemExit(f"bench_fleet: {what} did not happen within {timeout:g} s")
        time.sleep(0.005)


def takeovers(url: str, rounds: int) -> list[float]:
    """Seconds from the SIGKILL of the holder to the start of the next holder's worker, per round."""
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        log = Path(tmp) / "runs.log"
        procs: dict[int, subprocess.Popen[bytes]] = {}

        def add() -> None:
            stderr = Path(tmp) / f"replica-{len(procs)}-{time.monotonic_ns()}.log"
            proc = replica(url, log, stderr)
            procs[proc.pid] = proc
            wait_until(lambda: "execution standing by" in stderr.read_text() or _leading(log, proc.pid), 60, "start-up")

        try:
            for _ in range(REPLICAS):
                add()
            measured = []
            for index in range(rounds):
                pid, fence, _ = wait_until(lambda: runs(log)[-1:] and runs(log)[-1], 30, "a holder")
                os.kill(pid, signal.SIGKILL)
                killed = time.monotonic()
                procs.pop(pid).wait()
                new = wait_until(lambda f=fence: [r for r in runs(log) if r[1] > f], TTL + RENEW + 30, "a takeover")
                taken = new[0][2] - killed
                measured.append(taken)
                print(
                    f"  round {index + 1:2d}: fence {fence} -> {new[0][1]}, takeover {taken:.3f} s ({taken / TTL:.2f} x TTL)"
                )
                add()
            return measured
        finally:
            for proc in procs.values():
                proc.send_signal(signal.SIGKILL)
                proc.wait()


def _leading(log: Path, pid: int) -> bool:
    return any(run[0] == pid for run in runs(log))


def load(duration: float) -> tuple[int, float]:
    """Statements the keepers of 20 replicas x 10 singletons sent in ``duration`` seconds of steady state."""
    from django.db.backends import utils

    from django_workers import Worker, WorkerContext, WorkerPool
    from django_workers.fleet import LeaseKeeper

    class Idle(Worker):
        def __init__(self, name: str) -> None:
            self.name = name

        def run(self, ctx: WorkerContext) -> None:
            ctx.sleep(float("inf"))

    counted = [0]
    lock = threading.Lock()
    counting = threading.Event()
    original = utils.CursorWrapper._execute

    def execute(self: Any, sql: Any, params: Any, *ignored: Any) -> Any:
        if counting.is_set():
            with lock:
                counted[0] += 1
        return original(self, sql, params, *ignored)

    utils.CursorWrapper._execute = execute  # type: ignore[method-assign]
    nodes = []
    for _ in range(LOAD_REPLICAS):
        pool = WorkerPool(log=False, stop_timeout=STOP)
        for index in range(LOAD_SINGLETONS):
            pool.register(Idle(f"singleton-{index}"), singleton=True)
        keeper = LeaseKeeper(uuid.uuid4(), ttl=LOAD_TTL, renew=LOAD_RENEW, margin=MARGIN, stop_timeout=STOP)
        nodes.append((pool, keeper))
    try:
        for pool, keeper in nodes:
            keeper.start(pool)
            pool.start()
        time.sleep(2 * LOAD_RENEW)  # every seat has campaigned: the steady state
        counting.set()
        began = time.monotonic()
        time.sleep(duration)
        counting.clear()
        elapsed = time.monotonic() - began
        leaders = sum(seat.role == "leader" for _, keeper in nodes for seat in keeper.seats())
    finally:
        for pool, keeper in nodes:
            pool.stop()
            keeper.stop(5.0)
        utils.CursorWrapper._execute = original  # type: ignore[method-assign]
    print(f"  {leaders} leader seat(s) of {LOAD_SINGLETONS} singletons (one each, expected)")
    return counted[0], elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 takeovers, 10 s of load")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args()
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith("postgres"):
        print("bench_fleet needs DATABASE_URL=postgres://… (leases are a PostgreSQL feature in production)")
        return 2
    name = f"workers_fleet_{os.getpid()}"
    create_databases(url, [name])
    try:
        return run(database_url(url, name), args)
    finally:
        from django.db import connections

        connections.close_all()
        drop_databases(url, [name])


def run(url: str, args: argparse.Namespace) -> int:
    os.environ["DATABASE_URL"] = url
    os.environ["DJANGO_DEBUG"] = "0"
    os.environ["DJANGO_SETTINGS_MODULE"] = "testproject.settings"
    sys.path[:0] = [str(ROOT / "testproject"), str(ROOT)]
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    from django.db import connections

    connections.close_all()
    rounds = 3 if args.quick else 12
    duration = 10.0 if args.quick else 60.0
    print(f"Python {sys.version.split()[0]}, PostgreSQL, {os.cpu_count()} CPUs")
    print(
        f"\n1. takeover after SIGKILL of the holder: {REPLICAS} replicas, LEASE_TTL {TTL:g} s, RENEW_INTERVAL {RENEW:g} s"
    )
    measured = takeovers(url, rounds)
    ratios = sorted(t / TTL for t in measured)
    median, worst = statistics.median(ratios), ratios[-1]
    bound = (TTL + RENEW + 1.0) / TTL
    print(
        f"\n2. load: {LOAD_REPLICAS} replicas x {LOAD_SINGLETONS} singletons, RENEW_INTERVAL {LOAD_RENEW:g} s, {duration:g} s"
    )
    statements, elapsed = load(duration)
    seats = LOAD_REPLICAS * LOAD_SINGLETONS
    per_seat = statements / (elapsed / 60) / seats
    scaled = per_seat * LOAD_RENEW / DEFAULT_RENEW
    ok = worst <= bound
    print("\nSummary")
    print(
        f"takeover / TTL      median {median:.2f}x  worst {worst:.2f}x  over {len(ratios)} rounds  (target worst <= {bound:.2f}x) {'ok' if ok else 'MISSED'}"
    )
    print(
        f"statements/min per singleton per replica  {per_seat:.1f} at RENEW_INTERVAL {LOAD_RENEW:g} s, {scaled:.2f} at the default {DEFAULT_RENEW:g} s"
    )
    print(
        f"statements/min for {LOAD_REPLICAS} replicas x {LOAD_SINGLETONS} singletons  {per_seat * seats:.0f} at {LOAD_RENEW:g} s, {scaled * seats:.0f} at the default"
    )
    return 1 if args.strict and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
