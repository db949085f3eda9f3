#!/usr/bin/env python
"""Benchmarks of the history recorder, each against a baseline measured in the same run.

Run from the project root::

    .venv/bin/python benchmarks/bench_history.py            # both benchmarks, on SQLite
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \\
        .venv/bin/python benchmarks/bench_history.py        # the same on PostgreSQL
    .venv/bin/python benchmarks/bench_history.py --quick    # smoke mode: small sizes, few rounds
    .venv/bin/python benchmarks/bench_history.py --strict   # exit 1 when a target is missed

Django is configured with the test project's settings (testproject/testproject/settings.py). On
SQLite the database is a new file in a temporary directory (on disk: a commit is an fsync, as in
production); with ``DATABASE_URL`` set, a new PostgreSQL database is created on that server for
the run (and dropped at the end). Both are migrated first. The ``django_workers`` logger is set to
CRITICAL: the logging listener costs one ``isEnabledFor`` call per event and writes nothing.

As in bench_core.py, the two sides of a benchmark alternate round by round (baseline first in
even rounds, ours first in odd ones); the best round of each side is kept, and the ratio
ours/baseline is printed with the target and PASS/FAIL, then a summary table.

1. Recorder throughput, events persisted per second. The events are those of a failing worker
   (per attempt: ``starting``, ``stopping ... with error`` with its traceback, ``restarting``),
   built before the clock starts. Ours: a started :class:`HistoryRecorder` (node registered) gets
   N events through its listener, then ``flush()`` returns once all are committed; the rate is
   N / (time of the last commit - time of the first event), the writer's 50 ms linger included.
   Baseline: the naive recorder, which writes each event as it comes, with
   ``Model.objects.create()`` in its own transaction (``transaction.atomic()``): the event's row,
   the attempt's row on its first event, and the attempt's outcome (status, error, traceback) on
   its failure, with ``update()``; the same rows as ours. It gets fewer events (it is slow), and
   its rate is events / time the same way. Target: ours at least 20x the baseline, on SQLite and
   on PostgreSQL.

2. Worker-visible overhead: the per-attempt cost of a failing worker (unlimited attempts, zero
   backoff, as in bench_core.py's first benchmark) with history enabled against disabled: a
   ``django_workers.WorkerPool`` runs one sync worker that raises at once; at call N it takes the
   time and sets an Event. The cost is (time of call N - time before ``pool.start()``) / N.
   Ours: the same pool with a started recorder (defaults: 1,000 events of buffer, batches of
   1,000; the node is registered before the clock starts). Such a worker produces events far faster
   than any database stores them (three every few microseconds): the buffer overflows and the
   writer paces itself, so what is measured is what a CPU-bound worker pays (the listener, and the
   writer's share of the interpreter). The events written and dropped are printed, as is the cost
   of one listener call. N=20,000, best of 21 rounds (this project's VMs run in fast and slow
   phases of a few hundred milliseconds: short rounds, many of them). Target: at most 1.2x.

``--quick`` uses 3,000 events (300 for the baseline) and N=5,000 attempts, 2 rounds each. Exit
status: 0, or 1 with ``--strict`` when a target is missed, or 2 when a benchmark crashed.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "testproject")]
# Production-like: with DEBUG on, Django keeps (and formats) every query of the writer's thread.
os.environ.setdefault("DJANGO_DEBUG", "0")

T = TypeVar("T")
DEADLINE = 300.0


@dataclass(frozen=True)
class Params:
    events: int
    naive_events: int
    throughput_rounds: int
    attempts: int
    attempt_rounds: int


FULL = Params(events=20_000, naive_events=1_000, throughput_rounds=5, attempts=20_000, attempt_rounds=21)
QUICK = Params(events=3_000, naive_events=300, throughput_rounds=2, attempts=5_000, attempt_rounds=2)


@dataclass(frozen=True)
class Row:
    name: str
    ours: str
    baseline: str
    ratio: float | None
    target: str
    passed: bool | None


# -- the database ------------------------------------------------------------------------------


class BenchDatabase:
    """A database of its own for the run: a SQLite file, or a new PostgreSQL database."""

    def __init__(self) -> None:
        self.url = os.environ.get("DATABASE_URL", "")
        self.tmp: str | None = None
        self.name = ""
        self.admin_url = ""

    def __enter__(self) -> BenchDatabase:
        if self.url:
            import psycopg

            base, _, _ = self.url.rpartition("/")
            self.name = f"history_bench_{os.getpid()}"
            self.admin_url = base + "/postgres"
            with psycopg.connect(self.admin_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.name}"')
                conn.execute(f'CREATE DATABASE "{self.name}"')
            os.environ["DATABASE_URL"] = f"{base}/{self.name}"
        else:
            self.tmp = tempfile.mkdtemp(prefix="bench_history_", dir=os.environ.get("BENCH_TMPDIR"))
            os.environ["SQLITE_PATH"] = str(Path(self.tmp) / "history.sqlite3")
        os.environ["DJANGO_SETTINGS_MODULE"] = "testproject.settings"
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0, interactive=False)
        return self

    def describe(self) -> str:
        from django.db import connection

        if connection.vendor == "postgresql":
            return f"PostgreSQL {connection.cursor().connection.info.server_version} (database {self.name})"
        import sqlite3

        return f"SQLite {sqlite3.sqlite_version} (file {os.environ['SQLITE_PATH']})"

    def __exit__(self, *exc: object) -> None:
        from django.db import connections

        connections.close_all()
        if self.name:
            import psycopg

            with psycopg.connect(self.admin_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)


# -- helpers -------------------------------------------------------------------------------------


def interleaved(rounds: int, ours: Callable[[], T], baseline: Callable[[], T]) -> tuple[list[T], list[T]]:
    """Run both sides ``rounds`` times, alternating which goes first; return (ours, baseline)."""
    ours_results: list[T] = []
    baseline_results: list[T] = []
    for i in range(rounds):
        sides = [(baseline_results, baseline), (ours_results, ours)]
        if i % 2:
            sides.reverse()
        for results, side in sides:
            gc.collect()
            try:
                results.append(side())
            finally:
                gc.unfreeze()
    return ours_results, baseline_results


def wait_for(event: threading.Event, what: str) -> None:
    if not event.wait(DEADLINE):
        raise RuntimeError(f"timed out after {DEADLINE:g} s waiting for {what}")


def verdict(passed: bool | None) -> str:
    return {True: "PASS", False: "FAIL", None: "ERROR"}[passed]


def show_rounds(label: str, values: Sequence[float], fmt: Callable[[float], str], best: float, kept: str) -> None:
    print(f"    {label:<9} {' '.join(fmt(v) for v in values)}   {kept} {fmt(best)}")


def per_second(rate: float) -> str:
    return f"{rate:,.0f}/s"


def us(seconds: float) -> str:
    return f"{seconds * 1e6:.2f} us"


# -- 1. throughput ---------------------------------------------------------------------------------


def failing_worker_events(n: int, node_id: uuid.UUID) -> tuple[list[Any], list[str]]:
    """``n`` lifecycle events (and their execution ids) of a worker failing at every attempt."""
    from django_workers.core.events import AttemptFailed, AttemptStarted, WorkerRestarting
    from django_workers.core.execution import Failure, WorkerExecutionEvent, WorkerStatus

    def boom() -> None:
        raise RuntimeError("cannot reach the broker")

    events: list[Any] = []
    ids: list[str] = []
    attempt = 0
    while len(events) < n:
        attempt += 1
        execution_id = str(uuid.uuid4())
        ids.append(execution_id)
        try:
            boom()
        except RuntimeError as exc:
            failure = Failure(exc, panic=False)
        now = datetime.now(UTC)
        started = WorkerExecutionEvent(execution_id, f"starting execution attempt {attempt}/unlimited", now)
        stopped = WorkerExecutionEvent(
            execution_id, f"stopping execution attempt {attempt}/unlimited with error: {failure.message}", now
        )
        restarting = WorkerExecutionEvent(execution_id, "restarting after error", now)
        events += [
            AttemptStarted("bench", execution_id, attempt, 0, started, WorkerStatus.RUNNING),
            AttemptFailed("bench", execution_id, attempt, 0, stopped, WorkerStatus.ERROR, 0.001, failure),
            WorkerRestarting("bench", execution_id, attempt, 0, restarting, WorkerStatus.ERROR, 0.0, attempt, False),
        ]
    return events[:n], ids


def frozen() -> None:
    """Keep the events built in advance out of the collector's way (real ones stream in and out)."""
    gc.collect()
    gc.freeze()


def throughput_ours(n: int) -> float:
    from django_workers import WorkerPool
    from django_workers.history import HistoryRecorder

    recorder = HistoryRecorder(buffer_size=n + 10, heartbeat_interval=3600, retention_days=None)
    events, _ = failing_worker_events(n, recorder.node_id)
    frozen()
    recorder.start(WorkerPool(log=False))
    try:
        if not recorder.flush(DEADLINE):
            raise RuntimeError("the recorder did not register its node")
        began = time.perf_counter()
        for event in events:
            recorder(event)
        if not recorder.flush(DEADLINE):
            raise RuntimeError("the recorder did not write the events")
        elapsed = time.perf_counter() - began
    finally:
        recorder.stop(DEADLINE)
    if recorder.dropped:
        raise RuntimeError(f"the recorder dropped {recorder.dropped} events")
    return n / elapsed


def throughput_naive(n: int) -> float:
    """The naive recorder: each event written as it comes, ``Model.objects.create()`` in its own transaction.

    It stores what ours stores: the event's row, and the attempt's row (created by the attempt's
    first event, updated with the outcome, error and traceback by its failure).
    """
    from django.db import transaction
    from django.utils import timezone

    from django_workers.core.events import AttemptFailed, AttemptStarted
    from django_workers.core.logs import EVENT_LEVELS
    from django_workers.models import Execution, ExecutionEvent, Node

    node = Node.objects.create(
        hostname="naive", pid=os.getpid(), started_at=timezone.now(), last_heartbeat=timezone.now(), version="-"
    )
    events, _ = failing_worker_events(n, node.pk)
    frozen()
    began = time.perf_counter()
    for event in events:
        record = event.record
        with transaction.atomic():
            if type(event) is AttemptStarted:
                Execution.objects.create(
                    id=event.execution_id,
                    node=node,
                    worker=event.worker,
                    attempt=event.attempt,
                    max_attempts=event.max_attempts,
                    status=event.status.value,
                    started_at=record.timestamp,
                    created_at=record.timestamp,
                )
            elif type(event) is AttemptFailed:
                Execution.objects.filter(pk=event.execution_id).update(
                    status=event.status.value,
                    finished_at=record.timestamp,
                    duration=event.duration,
                    error=event.failure.message,
                    traceback=event.failure.traceback,
                )
            ExecutionEvent.objects.create(
                node=node,
                execution_id=event.execution_id,
                timestamp=record.timestamp,
                level=logging.getLevelName(EVENT_LEVELS[type(event)]),
                message=record.message,
            )
    return n / (time.perf_counter() - began)


def bench_throughput(p: Params) -> list[Row]:
    print(
        f"[1] recorder throughput: {p.events:,} events batched vs {p.naive_events:,} naive per-event transactions, "
        f"{p.throughput_rounds} rounds"
    )
    ours, base = interleaved(
        p.throughput_rounds, lambda: throughput_ours(p.events), lambda: throughput_naive(p.naive_events)
    )
    show_rounds("ours", ours, per_second, max(ours), "best")
    show_rounds("baseline", base, per_second, max(base), "best")
    ratio = max(ours) / max(base)
    passed = ratio >= 20.0
    name = "1. events persisted per second"
    print(
        f"    {name}: ours {per_second(max(ours))}, baseline {per_second(max(base))}, ratio {ratio:.1f}x, "
        f"target >= 20x: {verdict(passed)}"
    )
    return [Row(name, per_second(max(ours)), per_second(max(base)), ratio, ">= 20x", passed)]


# -- 2. worker-visible overhead --------------------------------------------------------------------


def attempts(n: int, history: bool, stats: dict[str, int]) -> float:
    from django_workers import Backoff, Worker, WorkerContext, WorkerPool
    from django_workers.history import HistoryRecorder

    class FailingWorker(Worker):
        name = "failing"

        def __init__(self) -> None:
            self.calls = 0
            self.reached = threading.Event()
            self.reached_at = 0.0

        def run(self, ctx: WorkerContext) -> None:
            self.calls += 1
            if self.calls == n:
                self.reached_at = time.perf_counter()
                self.reached.set()
            raise ValueError("boom")

    worker = FailingWorker()
    pool = WorkerPool(max_executions_attempts=0, restart_backoff=Backoff(initial=0))
    pool.register(worker)
    recorder = None
    if history:
        recorder = HistoryRecorder(heartbeat_interval=3600, retention_days=None)
        recorder.start(pool)
        if not recorder.flush(DEADLINE):  # the node is registered before the clock starts
            raise RuntimeError("the recorder did not register its node")
    began = time.perf_counter()
    pool.start()
    try:
        wait_for(worker.reached, f"{n} attempts")
    finally:
        pool.stop(timeout=DEADLINE)
        if recorder is not None:
            recorder.stop(DEADLINE)
            stats["dropped"] = stats.get("dropped", 0) + recorder.dropped
            stats["rounds"] = stats.get("rounds", 0) + 1
    return (worker.reached_at - began) / n


def listener_cost(calls: int = 200_000) -> float:
    """Seconds per call of the recorder's listener (not started: nothing drains the deque)."""
    from django_workers.history import HistoryRecorder

    recorder = HistoryRecorder(buffer_size=calls + 10, batch_size=calls + 5)
    events, _ = failing_worker_events(3, uuid.uuid4())
    event = events[0]
    began = time.perf_counter()
    for _ in range(calls):
        recorder(event)
    return (time.perf_counter() - began) / calls


def bench_overhead(p: Params) -> list[Row]:
    from django_workers.models import ExecutionEvent

    print(f"[2] worker-visible overhead: one failing sync worker, N={p.attempts:,}, {p.attempt_rounds} rounds")
    stats: dict[str, int] = {}
    before = ExecutionEvent.objects.count()
    ours, base = interleaved(
        p.attempt_rounds, lambda: attempts(p.attempts, True, stats), lambda: attempts(p.attempts, False, stats)
    )
    written = ExecutionEvent.objects.count() - before
    show_rounds("ours", ours, us, min(ours), "best")
    show_rounds("baseline", base, us, min(base), "best")
    cost = min(listener_cost() for _ in range(3))
    print(
        f"    history: {written:,} events written, {stats.get('dropped', 0):,} dropped (buffer full) over "
        f"{stats.get('rounds', 0)} rounds; one listener call: {cost * 1e9:.0f} ns"
    )
    ratio = min(ours) / min(base)
    passed = ratio <= 1.2
    name = "2. per attempt, history on/off"
    print(
        f"    {name}: ours {us(min(ours))}, baseline {us(min(base))}, ratio {ratio:.2f}x, target <= 1.2x: {verdict(passed)}"
    )
    return [Row(name, us(min(ours)), us(min(base)), ratio, "<= 1.2x", passed)]


BENCHMARKS: dict[int, tuple[str, Callable[[Params], list[Row]]]] = {
    1: ("events persisted per second", bench_throughput),
    2: ("per attempt, history on/off", bench_overhead),
}


def print_table(rows: Sequence[Row]) -> None:
    print("Summary")
    headers = ("benchmark", "ours", "baseline", "ratio", "target", "result")
    cells = [
        (r.name, r.ours, r.baseline, "n/a" if r.ratio is None else f"{r.ratio:.2f}x", r.target, verdict(r.passed))
        for r in rows
    ]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    print("  " + "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    print("  " + "  ".join("-" * w for w in widths))
    for c in cells:
        print("  " + "  ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)).rstrip())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--only", type=int, choices=sorted(BENCHMARKS), metavar="N", help="run benchmark N only (1-2)")
    parser.add_argument("--quick", action="store_true", help="smoke mode: small sizes, few rounds")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    params = QUICK if args.quick else FULL
    if args.quick:
        global DEADLINE
        DEADLINE = 60.0

    logging.getLogger("django_workers").setLevel(logging.CRITICAL)
    rows: list[Row] = []
    crashed = False
    began = time.perf_counter()
    with BenchDatabase() as database:
        import django_workers

        print(f"django_workers {django_workers.__version__} history benchmarks{' (quick mode)' if args.quick else ''}")
        print(f"Python {platform.python_version()} ({platform.python_implementation()}) on {platform.platform()}")
        print(f"CPUs: {os.cpu_count()}; database: {database.describe()}")
        print()
        for number, (title, bench) in BENCHMARKS.items():
            if args.only is not None and number != args.only:
                continue
            try:
                rows.extend(bench(params))
            except Exception:
                crashed = True
                traceback.print_exc()
                rows.append(Row(f"{number}. {title}", "-", "-", None, "-", None))
            print()
    print_table(rows)
    print(f"\nTotal time: {time.perf_counter() - began:.1f} s")
    if crashed:
        return 2
    if args.strict and not all(r.passed for r in rows):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
