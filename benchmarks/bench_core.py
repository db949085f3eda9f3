#!/usr/bin/env python
"""Benchmarks of the supervision engine, each against a baseline measured in the same run.

Run from the project root::

    .venv/bin/python benchmarks/bench_core.py            # everything (under a minute)
    .venv/bin/python benchmarks/bench_core.py --only 3   # one benchmark
    .venv/bin/python benchmarks/bench_core.py --quick    # smoke mode: small sizes, few rounds
    .venv/bin/python benchmarks/bench_core.py --strict   # exit 1 when a target is missed

The machines these run on are small (2 cores) and noisy, so every benchmark measures "ours"
and a baseline side by side in one process. It alternates them round by round (baseline first in
even rounds, ours first in odd ones) and keeps the best (lowest) time of each side. It prints
every round, the best of each side, the ratio ours/baseline and the target with PASS/FAIL, then
a summary table. The ``django_workers`` logger is set to CRITICAL for the whole run, so the
logging listener that ``django_workers.WorkerPool`` installs costs one ``isEnabledFor`` call per
event and writes nothing. ``gc.collect()`` runs before every measured side; the collector stays
enabled while measuring, since collections set off by a side's own allocations are part of its cost.

1. Per-attempt overhead. A ``django_workers.WorkerPool`` with unlimited attempts
   (``max_executions_attempts=0``) and zero backoff (``Backoff(initial=0)``) runs one sync worker
   that raises at once. The worker counts its calls and, at call N (20,000), takes the time and
   sets a ``threading.Event``; the bench then stops the pool. Ours is (time of call N - time
   before ``pool.start()``) / N. The time is taken in the worker, so the main thread's wake-up
   is not counted. Baseline: a naive loop of N iterations in one thread: call a method that
   raises ``ValueError``, catch it, append a ``uuid.uuid4()`` to a list. Target: at most 3x.

2. Start and stop of 1,000 sync workers. Ours: 1,000 workers of the form
   ``latch.count_down(); while not ctx.cancelled: ctx.sleep(60)`` are registered (not timed);
   start is ``pool.start()`` until all 1,000 have counted the latch down; stop is
   ``pool.stop()`` until it returns. Baseline: 1,000 ``threading.Thread`` objects are created and
   started, each running ``latch.count_down(); while not ev.is_set(): ev.wait(60)``, until all
   counted down; stop is ``ev.set()`` plus joining every thread. The latch (a counter under a
   lock that sets an Event at zero) is the same class on both sides. Targets: start at most
   1.25x, stop at most 2x.

3. Start and stop of 10,000 async workers, idle in two ways: in ``ctx.until_cancelled()``
   (``async def run(ctx): latch.count_down(); await ctx.until_cancelled()``, woken by the pool's
   stop signal as the baseline's tasks are by their Event), and in the README's loop
   (``while not ctx.cancelled: await ctx.asleep(60)``, whose task the pool cancels at stop).
   Start is ``pool.start()`` until all counted down; stop is ``pool.stop()`` until it returns.
   Baseline, built to match how the pool works: the timed start creates a new event loop and
   starts a thread that runs it (``pool.start()`` creates its loop and thread the same way). It
   waits until the loop is running, then makes one ``call_soon_threadsafe`` call that creates
   all 10,000 raw tasks on the loop thread (the pool also creates its tasks in one threadsafe
   callback), and waits on the latch from the calling thread. The raw tasks idle as the workers
   they are compared with: ``latch.count_down(); await ev.wait()`` against the workers in
   ``until_cancelled()``, ``latch.count_down(); while True: await asyncio.sleep(60)`` against
   the README loop (so that the ratio is the pool's cost, not the cost of asyncio's timers).
   The timed stop, also from the calling thread: ``run_coroutine_threadsafe`` a coroutine that
   sets the ``asyncio.Event`` (or cancels every task, as the pool cancels a worker in the
   README loop) and gathers every task; then stop the loop, join its thread and close the loop
   (``pool.stop()`` also stops, joins and closes its loop).
   Targets, for both ways of idling: start at most 4x, stop at most 3x (CPython 3.11's
   collector thresholds make a tighter start target a measure of the garbage collector; see
   docs/benchmarks.md). One more row, for information: the floor, the start of the baseline's
   tasks when each also carries what any worker must have, a ``WorkerContext`` reachable
   through a context variable (built and set on a copy of the context as the pool does it),
   with no supervision at all. ``--async-workers N`` runs benchmark 3 with N workers, to see
   how the ratios move with the size.

4. Idle CPU of 1,000 started sync workers (the workers of benchmark 2). Once all have entered
   and 0.5 s of settling has passed, process CPU time (``time.process_time()``, all threads) is
   read over a 10 s wall-clock window. The result is a percentage of one core. Baseline: the
   1,000 raw threads of benchmark 2, over a window of the same length. A 10 s window already
   averages out noise (only this process's CPU time is counted), so each side runs once.
   Target: ours under 1 % of one core; the ratio is for information.

5. Memory. One failing worker (unlimited attempts, zero backoff) parks at two checkpoints: after
   its first 1,000 attempts and after 50,000 further ones. While it is parked the bench runs
   ``gc.collect()`` and reads the current RSS from ``/proc/self/statm`` (not the peak). Ours is
   the RSS at the second checkpoint minus the RSS at the first. Baseline: a naive loop in the
   calling thread that fails the same way and keeps the same kind of bounded state (last
   exception, a ``deque(maxlen=100)`` of uuid strings), measured the same way. It shows the
   noise floor of the reading. The change in ``sys.getallocatedblocks()`` and the length of the
   worker's event history are printed too. This is a leak check, so the worst (highest) growth
   over the rounds is kept, not the best. Target: ours under 2 MiB.

Ratios are shown only when the baseline is above its noise floor (benchmarks 4 and 5 have
absolute targets and baselines near zero). ``--quick`` uses N=2,000, 100 sync and 1,000 async
workers, a 2 s idle window with 100 workers, 5,000 restarts, and 1-2 rounds. Exit status: 0,
or 1 with ``--strict`` when a target is missed, or 2 when a benchmark crashed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import dataclasses
import gc
import logging
import os
import platform
import sys
import threading
import time
import traceback
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import django_workers
from django_workers import Backoff, Worker, WorkerContext, WorkerPool

T = TypeVar("T")

#: Generous deadline for anything the bench waits on; a hang fails loudly instead of forever.
#: ``--quick`` shortens it, so a smoke test of a broken engine fails fast.
DEADLINE = 120.0
MIB = 1024 * 1024


# -- configuration ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Params:
    attempts: int
    attempt_rounds: int
    sync_workers: int
    sync_rounds: int
    async_workers: int
    async_rounds: int
    idle_workers: int
    idle_seconds: float
    mem_warmup: int
    mem_restarts: int
    mem_rounds: int


FULL = Params(
    attempts=20_000,
    attempt_rounds=21,
    sync_workers=1_000,
    sync_rounds=11,
    async_workers=10_000,
    async_rounds=15,
    idle_workers=1_000,
    idle_seconds=10.0,
    mem_warmup=1_000,
    mem_restarts=50_000,
    mem_rounds=3,
)
QUICK = Params(
    attempts=2_000,
    attempt_rounds=2,
    sync_workers=100,
    sync_rounds=2,
    async_workers=1_000,
    async_rounds=2,
    idle_workers=100,
    idle_seconds=2.0,
    mem_warmup=1_000,
    mem_restarts=5_000,
    mem_rounds=1,
)


@dataclass(frozen=True)
class Row:
    """One line of the summary table."""

    name: str
    ours: str
    baseline: str
    ratio: float | None
    target: str
    passed: bool | None  # None: the benchmark crashed


# -- shared helpers ---------------------------------------------------------------------------


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
            results.append(side())
    return ours_results, baseline_results


class Latch:
    """A countdown latch: ``done`` is set when ``count_down()`` has been called ``n`` times."""

    def __init__(self, n: int) -> None:
        self._n = n
        self._lock = threading.Lock()
        self.done = threading.Event()

    def count_down(self) -> None:
        with self._lock:
            self._n -= 1
            if self._n == 0:
                self.done.set()

    def wait(self, what: str) -> None:
        if not self.done.wait(DEADLINE):
            raise RuntimeError(f"timed out after {DEADLINE:g} s waiting for {what}")


def wait_for(event: threading.Event, what: str) -> None:
    if not event.wait(DEADLINE):
        raise RuntimeError(f"timed out after {DEADLINE:g} s waiting for {what}")


def stop_pool(pool: WorkerPool) -> None:
    not_stopped = pool.stop(timeout=DEADLINE)
    if not_stopped:
        raise RuntimeError(f"pool.stop() left {len(not_stopped)} worker(s) running")


def ratio_of(ours: float, baseline: float, floor: float = 0.0) -> float | None:
    return ours / baseline if baseline > floor else None


def fmt_ratio(ratio: float | None) -> str:
    return "n/a" if ratio is None else f"{ratio:.2f}x"


def verdict(passed: bool | None) -> str:
    return {True: "PASS", False: "FAIL", None: "ERROR"}[passed]


def show_rounds(label: str, values: Sequence[float], fmt: Callable[[float], str], best: float, kept: str) -> None:
    print(f"    {label:<9} {' '.join(fmt(v) for v in values)}   {kept} {fmt(best)}")


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms"


def us(seconds: float) -> str:
    return f"{seconds * 1e6:.2f} us"


def pct(value: float) -> str:
    return f"{value:.3f} %"


def kib(nbytes: float) -> str:
    return f"{nbytes / 1024:+.0f} KiB"


def report_ratio(name: str, ours: float, baseline: float, limit: float, fmt: Callable[[float], str]) -> Row:
    ratio = ours / baseline
    passed = ratio <= limit
    print(
        f"    {name}: ours {fmt(ours)}, baseline {fmt(baseline)}, ratio {ratio:.2f}x, target <= {limit:g}x: {verdict(passed)}"
    )
    return Row(name, fmt(ours), fmt(baseline), ratio, f"<= {limit:g}x", passed)


# -- 1. per-attempt overhead ------------------------------------------------------------------


class FailingWorker(Worker):
    """Raises at once; at call ``n`` it takes the time and sets ``reached``."""

    name = "failing"

    def __init__(self, n: int) -> None:
        self.n = n
        self.calls = 0
        self.reached = threading.Event()
        self.reached_at = 0.0

    def run(self, ctx: WorkerContext) -> None:
        self.calls += 1
        if self.calls == self.n:
            self.reached_at = time.perf_counter()
            self.reached.set()
        raise ValueError("boom")


class NaiveTask:
    def run(self) -> None:
        raise ValueError("boom")


def failing_pool(worker: Worker) -> WorkerPool:
    pool = WorkerPool(max_executions_attempts=0, restart_backoff=Backoff(initial=0))
    pool.register(worker)
    return pool


def attempts_ours(n: int) -> float:
    worker = FailingWorker(n)
    pool = failing_pool(worker)
    began = time.perf_counter()
    pool.start()
    try:
        wait_for(worker.reached, f"{n} attempts")
    finally:
        stop_pool(pool)
    return (worker.reached_at - began) / n


def attempts_naive(n: int) -> float:
    task = NaiveTask()
    ids: list[uuid.UUID] = []
    began = time.perf_counter()
    for _ in range(n):
        try:
            task.run()
        except ValueError as e:  # noqa: F841 - bound on purpose, like the pool binds it
            ids.append(uuid.uuid4())
    return (time.perf_counter() - began) / n


def bench_attempts(p: Params) -> list[Row]:
    print(f"[1] per-attempt overhead: one failing sync worker, N={p.attempts:,}, {p.attempt_rounds} rounds")
    ours, base = interleaved(p.attempt_rounds, lambda: attempts_ours(p.attempts), lambda: attempts_naive(p.attempts))
    show_rounds("ours", ours, us, min(ours), "best")
    show_rounds("baseline", base, us, min(base), "best")
    return [report_ratio("1. per attempt, failing worker", min(ours), min(base), 3.0, us)]


# -- 2. start/stop of sync workers ------------------------------------------------------------


class SleepingWorker(Worker):
    """Counts the latch down, then waits for cancellation."""

    def __init__(self, name: str, latch: Latch) -> None:
        self.name = name
        self.latch = latch

    def run(self, ctx: WorkerContext) -> None:
        self.latch.count_down()
        while not ctx.cancelled:
            ctx.sleep(60)


def raw_sleeper(latch: Latch, stop: threading.Event) -> None:
    latch.count_down()
    while not stop.is_set():
        stop.wait(60)


def sleeping_pool(n: int, latch: Latch) -> WorkerPool:
    pool = WorkerPool()
    for i in range(n):
        pool.register(SleepingWorker(f"sleeper-{i}", latch))
    return pool


def sync_ours(n: int) -> tuple[float, float]:
    latch = Latch(n)
    pool = sleeping_pool(n, latch)
    began = time.perf_counter()
    pool.start()
    try:
        latch.wait(f"{n} sync workers to enter run()")
        started = time.perf_counter()
    finally:
        stop_pool(pool)
    stopped = time.perf_counter()
    return started - began, stopped - started


def start_raw_threads(n: int, latch: Latch, stop: threading.Event) -> list[threading.Thread]:
    threads = [threading.Thread(target=raw_sleeper, args=(latch, stop), daemon=True) for _ in range(n)]
    for thread in threads:
        thread.start()
    return threads


def stop_raw_threads(threads: list[threading.Thread], stop: threading.Event) -> None:
    stop.set()
    for thread in threads:
        thread.join(DEADLINE)
        if thread.is_alive():
            raise RuntimeError("a raw thread did not stop")


def sync_raw(n: int) -> tuple[float, float]:
    latch, stop = Latch(n), threading.Event()
    began = time.perf_counter()
    threads = start_raw_threads(n, latch, stop)
    try:
        latch.wait(f"{n} raw threads to start")
        started = time.perf_counter()
    finally:
        stop_raw_threads(threads, stop)
    stopped = time.perf_counter()
    return started - began, stopped - started


def bench_sync(p: Params) -> list[Row]:
    n = p.sync_workers
    print(f"[2] start/stop of {n:,} sync workers vs {n:,} raw threads, {p.sync_rounds} rounds")
    ours, base = interleaved(p.sync_rounds, lambda: sync_ours(n), lambda: sync_raw(n))
    return report_start_stop(2, f"{n:,} sync workers", ours, base, 1.25, 2.0)


def report_start_stop(
    number: int,
    what: str,
    ours: list[tuple[float, float]],
    base: list[tuple[float, float]],
    start_limit: float,
    stop_limit: float,
) -> list[Row]:
    rows = []
    for index, phase, limit in ((0, "start", start_limit), (1, "stop", stop_limit)):
        ours_phase = [r[index] for r in ours]
        base_phase = [r[index] for r in base]
        print(f"  {phase}:")
        show_rounds("ours", ours_phase, ms, min(ours_phase), "best")
        show_rounds("baseline", base_phase, ms, min(base_phase), "best")
        rows.append(report_ratio(f"{number}. {phase} {what}", min(ours_phase), min(base_phase), limit, ms))
    return rows


# -- 3. start/stop of async workers -----------------------------------------------------------


class AsyncIdleWorker(Worker):
    """Counts the latch down, then waits for the pool's stop (woken by it, not cancelled)."""

    def __init__(self, name: str, latch: Latch) -> None:
        self.name = name
        self.latch = latch

    async def run(self, ctx: WorkerContext) -> None:
        self.latch.count_down()
        await ctx.until_cancelled()


class AsyncLoopWorker(Worker):
    """Counts the latch down, then idles in the README's loop until the pool cancels its task."""

    def __init__(self, name: str, latch: Latch) -> None:
        self.name = name
        self.latch = latch

    async def run(self, ctx: WorkerContext) -> None:
        self.latch.count_down()
        while not ctx.cancelled:
            await ctx.asleep(60)


#: The two ways of idling that benchmark 3 measures.
ASYNC_IDLE = {"until_cancelled": AsyncIdleWorker, "README loop": AsyncLoopWorker}


async def raw_async_sleeper(latch: Latch, stop: asyncio.Event) -> None:
    latch.count_down()
    await stop.wait()


def async_ours(n: int, idle: str = "until_cancelled") -> tuple[float, float]:
    latch = Latch(n)
    worker_class = ASYNC_IDLE[idle]
    pool = WorkerPool()
    for i in range(n):
        pool.register(worker_class(f"async-worker-{i}", latch))
    began = time.perf_counter()
    pool.start()
    try:
        latch.wait(f"{n} async workers to enter run()")
        started = time.perf_counter()
    finally:
        stop_pool(pool)
    stopped = time.perf_counter()
    return started - began, stopped - started


#: The floor's context variable (the pool's own is django_workers.core.context.worker_context).
FLOOR_VAR: contextvars.ContextVar[WorkerContext | None] = contextvars.ContextVar("bench_floor", default=None)


async def floor_sleeper(ctx: WorkerContext, latch: Latch, stop: asyncio.Event) -> None:
    latch.count_down()
    await stop.wait()


async def raw_loop_sleeper(latch: Latch) -> None:
    latch.count_down()
    while True:
        await asyncio.sleep(60)


def async_raw(n: int, floor: bool = False, idle: str = "until_cancelled") -> tuple[float, float]:
    """Start and stop times of ``n`` raw tasks (the baseline of benchmark 3).

    The tasks idle as the workers they are compared with: awaiting an Event that the stop sets
    (for ``until_cancelled``), or in a loop of ``asyncio.sleep(60)`` that the stop cancels (for
    the README loop). With ``floor``, each task also carries what any worker must have and
    nothing more: a ``WorkerContext``, set in a context variable of a copy of the caller's
    context (as the pool does it), with no supervision (no record, no state, no event).
    """
    latch = Latch(n)
    began = time.perf_counter()
    # Like WorkerPool._ensure_loop: a new loop, run forever in a thread of its own.
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    def run_loop() -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        try:
            loop.run_forever()
        finally:
            asyncio.set_event_loop(None)

    thread = threading.Thread(target=run_loop, name="raw:event-loop", daemon=True)
    thread.start()
    wait_for(ready, "the raw event loop")
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    base, cancel = contextvars.copy_context(), threading.Event()

    def create_tasks() -> None:  # one threadsafe callback creates every task, as the pool does
        if idle != "until_cancelled":
            tasks.extend(loop.create_task(raw_loop_sleeper(latch)) for _ in range(n))
            return
        if not floor:
            tasks.extend(loop.create_task(raw_async_sleeper(latch, stop)) for _ in range(n))
            return
        for i in range(n):
            ctx = WorkerContext(f"async-worker-{i}", "", 1, 1, cancel, {})
            context = base.copy()
            context.run(FLOOR_VAR.set, ctx)
            tasks.append(loop.create_task(floor_sleeper(ctx, latch, stop), context=context))

    loop.call_soon_threadsafe(create_tasks)
    latch.wait(f"{n} raw tasks to start")
    started = time.perf_counter()

    async def finish() -> None:
        if idle != "until_cancelled":  # what the pool does to a worker in the README loop
            for task in tasks:
                task.cancel()
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run_coroutine_threadsafe(finish(), loop).result(DEADLINE)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(DEADLINE)
    loop.close()
    stopped = time.perf_counter()
    return started - began, stopped - started


def bench_async(p: Params) -> list[Row]:
    n = p.async_workers
    print(f"[3] start/stop of {n:,} async workers vs {n:,} raw asyncio tasks, {p.async_rounds} rounds")
    rows = []
    for idle in ASYNC_IDLE:
        print(f"  idle in {idle}:")
        ours, base = interleaved(
            p.async_rounds, lambda idle=idle: async_ours(n, idle), lambda idle=idle: async_raw(n, idle=idle)
        )
        rows += report_start_stop(3, f"{n:,} async, {idle}", ours, base, 4.0, 3.0)
    rounds = max(1, p.async_rounds // 2)
    print(f"  for information, the floor: start of {n:,} raw tasks that each carry a WorkerContext, {rounds} rounds:")
    floor, base_starts = interleaved(rounds, lambda: async_raw(n, floor=True)[0], lambda: async_raw(n)[0])
    start, baseline = min(floor), min(base_starts)
    show_rounds("floor", floor, ms, start, "best")
    show_rounds("baseline", base_starts, ms, baseline, "best")
    print(f"    ratio {start / baseline:.2f}x (no target: the cost of a context per task alone)")
    rows.append(Row(f"3. start floor, {n:,} tasks + ctx", ms(start), ms(baseline), start / baseline, "info", True))
    return rows


# -- 4. idle CPU ------------------------------------------------------------------------------


def cpu_percent_over(seconds: float) -> float:
    """Percent of one core this process used over the next ``seconds`` of wall time."""
    time.sleep(0.5)  # let the last threads get from count_down() into their wait
    gc.collect()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    time.sleep(seconds)
    cpu1, wall1 = time.process_time(), time.perf_counter()
    return (cpu1 - cpu0) / (wall1 - wall0) * 100


def idle_ours(n: int, seconds: float) -> float:
    latch = Latch(n)
    pool = sleeping_pool(n, latch)
    pool.start()
    try:
        latch.wait(f"{n} sync workers to enter run()")
        return cpu_percent_over(seconds)
    finally:
        stop_pool(pool)


def idle_raw(n: int, seconds: float) -> float:
    latch, stop = Latch(n), threading.Event()
    threads = start_raw_threads(n, latch, stop)
    try:
        latch.wait(f"{n} raw threads to start")
        return cpu_percent_over(seconds)
    finally:
        stop_raw_threads(threads, stop)


def bench_idle(p: Params) -> list[Row]:
    n, seconds = p.idle_workers, p.idle_seconds
    print(f"[4] idle CPU of {n:,} started sync workers over {seconds:g} s vs {n:,} raw waiting threads")
    ours, base = interleaved(1, lambda: idle_ours(n, seconds), lambda: idle_raw(n, seconds))
    show_rounds("ours", ours, pct, min(ours), "of one core:")
    show_rounds("baseline", base, pct, min(base), "of one core:")
    value, baseline = min(ours), min(base)
    ratio = ratio_of(value, baseline, floor=0.01)
    passed = value < 1.0
    print(
        f"    ours {pct(value)} of one core, target < 1 %: {verdict(passed)} (ratio {fmt_ratio(ratio)}, for information)"
    )
    return [Row(f"4. idle CPU, {n:,} sync workers", pct(value), pct(baseline), ratio, "< 1 % of a core", passed)]


# -- 5. memory over restarts ------------------------------------------------------------------

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int:
    """Current resident set size, from /proc/self/statm (Linux)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE_SIZE


@dataclass(frozen=True)
class Reading:
    rss: int
    blocks: int


def reading() -> Reading:
    gc.collect()
    return Reading(rss_bytes(), sys.getallocatedblocks())


class Gate:
    """A checkpoint where the worker parks until the bench has taken its reading."""

    def __init__(self) -> None:
        self.reached = threading.Event()
        self.released = threading.Event()

    def park(self) -> None:
        self.reached.set()
        self.released.wait(DEADLINE)


class CheckpointWorker(Worker):
    """Raises at once; parks at the gates keyed by call number."""

    name = "restarting"

    def __init__(self, gates: dict[int, Gate]) -> None:
        self.gates = gates
        self.calls = 0

    def run(self, ctx: WorkerContext) -> None:
        self.calls += 1
        gate = self.gates.get(self.calls)
        if gate is not None:
            gate.park()
        raise ValueError("boom")


@dataclass(frozen=True)
class Growth:
    rss: int
    blocks: int
    history: int


def memory_ours(warmup: int, restarts: int) -> Growth:
    first, last = Gate(), Gate()
    worker = CheckpointWorker({warmup: first, warmup + restarts: last})
    pool = failing_pool(worker)
    pool.start()
    try:
        wait_for(first.reached, f"{warmup} attempts")
        before = reading()
        first.released.set()
        wait_for(last.reached, f"{warmup + restarts} attempts")
        after = reading()
        history = len(pool.execution(worker.name).events)
    finally:
        first.released.set()
        last.released.set()
        stop_pool(pool)
    return Growth(after.rss - before.rss, after.blocks - before.blocks, history)


def memory_naive(warmup: int, restarts: int) -> Growth:
    task = NaiveTask()
    history: deque[str] = deque(maxlen=100)
    last_error: Exception | None = None
    before = Reading(0, 0)
    for i in range(1, warmup + restarts + 1):
        try:
            task.run()
        except ValueError as e:
            last_error = e
            history.append(str(uuid.uuid4()))
        if i == warmup:
            before = reading()
    after = reading()
    del last_error
    return Growth(after.rss - before.rss, after.blocks - before.blocks, len(history))


def bench_memory(p: Params) -> list[Row]:
    name = "5. RSS growth over restarts"
    print(
        f"[5] RSS growth over {p.mem_restarts:,} restarts of one failing worker (after {p.mem_warmup:,}), "
        f"{p.mem_rounds} round(s), worst kept"
    )
    if not os.path.exists("/proc/self/statm"):
        print("    skipped: /proc/self/statm is not available on this platform")
        return [Row(name, "skipped", "skipped", None, "< 2 MiB", True)]
    ours, base = interleaved(
        p.mem_rounds,
        lambda: memory_ours(p.mem_warmup, p.mem_restarts),
        lambda: memory_naive(p.mem_warmup, p.mem_restarts),
    )
    for label, results in (("ours", ours), ("baseline", base)):
        show_rounds(label, [g.rss for g in results], kib, max(g.rss for g in results), "worst")
        blocks = " ".join(f"{g.blocks:+,}" for g in results)
        print(f"    {'':<9} allocated blocks: {blocks}; history length: {results[-1].history}")
    value, baseline = max(g.rss for g in ours), max(g.rss for g in base)
    ratio = ratio_of(value, baseline, floor=64 * 1024)
    passed = value < 2 * MIB
    print(f"    ours {kib(value)}, target < 2 MiB: {verdict(passed)} (ratio {fmt_ratio(ratio)}, for information)")
    return [Row(name, kib(value), kib(baseline), ratio, "< 2 MiB", passed)]


# -- main -------------------------------------------------------------------------------------

BENCHMARKS: dict[int, tuple[str, Callable[[Params], list[Row]]]] = {
    1: ("per-attempt overhead", bench_attempts),
    2: ("start/stop sync workers", bench_sync),
    3: ("start/stop async workers", bench_async),
    4: ("idle CPU", bench_idle),
    5: ("memory over restarts", bench_memory),
}


def print_table(rows: list[Row]) -> None:
    headers = ("benchmark", "ours", "baseline", "ratio", "target", "result")
    lines = [
        (r.name, r.ours, r.baseline, fmt_ratio(r.ratio), r.target, "info" if r.target == "info" else verdict(r.passed))
        for r in rows
    ]
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *lines)]
    print()
    print("Summary")
    for line in (headers, tuple("-" * w for w in widths), *lines):
        print("  " + "  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--only", type=int, choices=sorted(BENCHMARKS), metavar="N", help="run benchmark N only (1-5)")
    parser.add_argument("--quick", action="store_true", help="smoke mode: small sizes, few rounds")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument(
        "--async-workers", type=int, metavar="N", help="benchmark 3 with N workers (default 10,000; 1,000 quick)"
    )
    args = parser.parse_args(argv)
    params = QUICK if args.quick else FULL
    if args.async_workers is not None:
        if args.async_workers < 1:
            parser.error(f"--async-workers must be >= 1, got {args.async_workers}")
        params = dataclasses.replace(params, async_workers=args.async_workers)
    if args.quick:
        global DEADLINE
        DEADLINE = 20.0

    logging.getLogger("django_workers").setLevel(logging.CRITICAL)
    print(f"django_workers {django_workers.__version__} benchmarks{' (quick mode)' if args.quick else ''}")
    print(f"Python {platform.python_version()} ({platform.python_implementation()}) on {platform.platform()}")
    print(f"CPUs: {os.cpu_count()}")
    print()

    rows: list[Row] = []
    crashed = False
    began = time.perf_counter()
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
