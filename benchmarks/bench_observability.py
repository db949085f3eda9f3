#!/usr/bin/env python
"""Per-attempt cost of Prometheus metrics and OpenTelemetry spans, against a pool without them.

Run from the project root::

    .venv/bin/python benchmarks/bench_observability.py            # everything (about a minute)
    .venv/bin/python benchmarks/bench_observability.py --quick    # smoke mode: small sizes, few rounds
    .venv/bin/python benchmarks/bench_observability.py --strict   # exit 1 when the target is missed

Both sides are a ``django_workers.WorkerPool`` with unlimited attempts
(``max_executions_attempts=0``) and zero backoff (``Backoff(initial=0)``) running one sync worker
whose every attempt ends by raising, so that the pool restarts it at once, attempt after attempt.
The worker counts its calls and, at call N, takes the time and sets a ``threading.Event``; the
bench then stops the pool. A side's result is (time of call N - time before ``pool.start()``) / N.

- **Observed** ("ours"): the pool counts into a ``WorkerMetrics`` registered in a fresh
  ``CollectorRegistry`` (``metrics=``) and opens one span per attempt (``tracing=True``) with an
  SDK ``TracerProvider`` that the pool annotates (``WorkerSpanProcessor``: the ``Worker`` and
  ``WorkerExecutionID`` attributes) and whose spans go to a no-op exporter (a ``SpanExporter``
  subclass that counts and drops them). A failed attempt sets the span's status and records the
  exception with its stack trace, the expensive path of a span.
- **Baseline**: the same pool with ``metrics=None`` and ``tracing=False`` (both disabled).

The span processor is ``SimpleSpanProcessor`` unless the row says ``BatchSpanProcessor``. Simple
exports on the attempt's own thread when the span ends, so everything a span costs is counted in
the attempt; it is the conservative choice. Batch, what production uses, only queues the span in
the attempt's thread and exports from a thread of its own (which competes for the 2 cores of these
machines); its queue is made larger than N so that no span is dropped (a dropped span would
flatter the result).

Two workers, because the ratio depends on what an attempt does:

1.-4. A **no-op** worker (raises at once): an attempt of the bare pool costs about 6 us, less than
   what a span costs. The ratios are large and say little about a real deployment; they are
   printed for information (they show the absolute cost per attempt, and where it goes: rows 3
   and 4 enable metrics alone and spans alone), with no target. Most of a failed attempt's span
   is the SDK's ``record_exception`` (it formats the stack trace: about 95 us here, against about
   19 us for a span that records no exception and 4 us for the metrics).
5. The **target** row: a worker that does a realistic small unit of work, about 1 ms of CPU (a
   pure-Python loop calibrated at start-up, the same on both sides), then raises, so that its
   span takes the expensive path too. Target: at most 1.5x.

The sides alternate round by round (baseline first in even rounds, observed first in odd ones);
the best (lowest) time of each side is kept. The ``django_workers`` logger is set to CRITICAL, so
the logging listener costs one ``isEnabledFor`` call per event. ``gc.collect()`` runs before every
side. Full mode: N=10,000 no-op and N=1,500 target attempts, 5 rounds; ``--quick`` uses N=2,000
and N=100, 2 rounds. Exit status: 0; 1 with ``--strict`` when the target is missed; 2 when a
benchmark crashed.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import platform
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter, SpanExportResult
from prometheus_client import CollectorRegistry

import django_workers
from django_workers import Backoff, Worker, WorkerContext, WorkerPool
from django_workers.metrics import WorkerMetrics

DEADLINE = 120.0
TARGET = 1.5
WORK_SECONDS = 0.001


@dataclass(frozen=True)
class Params:
    noop_attempts: int
    work_attempts: int
    rounds: int


FULL = Params(noop_attempts=10_000, work_attempts=1_500, rounds=5)
QUICK = Params(noop_attempts=2_000, work_attempts=100, rounds=2)


@dataclass(frozen=True)
class Row:
    name: str
    observed: float | None
    baseline: float | None
    target: float | None  # None: for information

    @property
    def ratio(self) -> float | None:
        if self.observed is None or self.baseline is None:
            return None
        return self.observed / self.baseline

    @property
    def verdict(self) -> str:
        if self.ratio is None:
            return "ERROR"
        if self.target is None:
            return "info"
        return "PASS" if self.ratio <= self.target else "FAIL"


# -- the pieces -----------------------------------------------------------------------------------


class DropExporter(SpanExporter):
    """A span exporter that counts the spans it is given and drops them."""

    def __init__(self) -> None:
        self.spans = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


def spin(loops: int) -> int:
    """Pure-Python CPU work: the unit of work of the target worker."""
    total = 0
    for i in range(loops):
        total += i * i
    return total


def calibrate(seconds: float) -> int:
    """The number of ``spin`` loops that takes about ``seconds`` on this machine (best of several)."""
    probe = 20_000
    best = min(_timed(lambda: spin(probe)) for _ in range(20))
    return max(1, round(probe * seconds / best))


def _timed(fn: Callable[[], object]) -> float:
    began = time.perf_counter()
    fn()
    return time.perf_counter() - began


class BenchWorker(Worker):
    """Does its work, counts the call, raises; at call ``n`` it takes the time and sets ``reached``."""

    name = "bench-worker"

    def __init__(self, n: int, loops: int) -> None:
        self.n = n
        self.loops = loops
        self.calls = 0
        self.reached = threading.Event()
        self.reached_at = 0.0

    def run(self, ctx: WorkerContext) -> None:
        if self.loops:
            spin(self.loops)
        self.calls += 1
        if self.calls == self.n:
            self.reached_at = time.perf_counter()
            self.reached.set()
        raise ValueError("boom")


def per_attempt(n: int, loops: int, metrics: bool = False, processor: str | None = None) -> float:
    """Seconds per attempt, with metrics or not, with spans ("simple" or "batch" processor) or not."""
    worker = BenchWorker(n, loops)
    exporter = DropExporter()
    provider: TracerProvider | None = None
    if processor is not None:
        provider = TracerProvider(shutdown_on_exit=False)
        if processor == "batch":
            provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=2 * n + 1024))
        else:
            provider.add_span_processor(SimpleSpanProcessor(exporter))
    pool = WorkerPool(
        max_executions_attempts=0,
        restart_backoff=Backoff(initial=0),
        metrics=WorkerMetrics(namespace="bench").register(CollectorRegistry()) if metrics else None,
        tracer_provider=provider,
        tracing=provider is not None,
    )
    pool.register(worker)
    began = time.perf_counter()
    pool.start()
    try:
        if not worker.reached.wait(DEADLINE):
            raise RuntimeError(f"timed out after {DEADLINE:g} s waiting for {n} attempts")
    finally:
        not_stopped = pool.stop(timeout=DEADLINE)
        if not_stopped:
            raise RuntimeError(f"pool.stop() left {not_stopped} running")
    if provider is not None:
        provider.shutdown()  # flushes the batch processor and joins its thread
        if exporter.spans < n:
            raise RuntimeError(f"only {exporter.spans} spans were exported for {n} attempts: tracing was not measured")
    return (worker.reached_at - began) / n


def interleaved(
    rounds: int, observed: Callable[[], float], baseline: Callable[[], float]
) -> tuple[list[float], list[float]]:
    """Both sides ``rounds`` times, alternating which goes first; (observed, baseline)."""
    observed_results: list[float] = []
    baseline_results: list[float] = []
    for i in range(rounds):
        sides = [(baseline_results, baseline), (observed_results, observed)]
        if i % 2:
            sides.reverse()
        for results, side in sides:
            gc.collect()
            results.append(side())
    return observed_results, baseline_results


def us(seconds: float) -> str:
    return f"{seconds * 1e6:.2f} us"


def bench(
    title: str, n: int, loops: int, metrics: bool, processor: str | None, rounds: int, target: float | None
) -> Row:
    print(f"{title}: N={n:,}, {rounds} rounds")
    observed, baseline = interleaved(
        rounds, lambda: per_attempt(n, loops, metrics, processor), lambda: per_attempt(n, loops)
    )
    print(f"    observed  {' '.join(us(v) for v in observed)}   best {us(min(observed))}")
    print(f"    baseline  {' '.join(us(v) for v in baseline)}   best {us(min(baseline))}")
    row = Row(title, min(observed), min(baseline), target)
    extra = f"+{us(min(observed) - min(baseline))} per attempt"
    goal = f"target <= {target:g}x: {row.verdict}" if target is not None else "no target (information)"
    print(f"    ratio {row.ratio:.2f}x ({extra}); {goal}")
    return row


def print_table(rows: Sequence[Row]) -> None:
    print("Summary (per attempt: metrics + tracing on / both off)")
    print(f"  {'benchmark':<68} {'observed':>11} {'baseline':>11} {'ratio':>7}  target   verdict")
    for row in rows:
        observed = us(row.observed) if row.observed is not None else "-"
        baseline = us(row.baseline) if row.baseline is not None else "-"
        ratio = f"{row.ratio:.2f}x" if row.ratio is not None else "n/a"
        target = f"<= {row.target:g}x" if row.target is not None else "-"
        mark = "  <- TARGET" if row.target is not None else ""
        print(f"  {row.name:<68} {observed:>11} {baseline:>11} {ratio:>7}  {target:<8} {row.verdict}{mark}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smoke mode: small sizes, few rounds")
    parser.add_argument("--strict", action="store_true", help="exit 1 when the target is missed")
    args = parser.parse_args(argv)
    params = QUICK if args.quick else FULL
    if args.quick:
        global DEADLINE
        DEADLINE = 30.0

    logging.getLogger("django_workers").setLevel(logging.CRITICAL)
    print(f"django_workers {django_workers.__version__} observability benchmark{' (quick mode)' if args.quick else ''}")
    print(f"Python {platform.python_version()} ({platform.python_implementation()}) on {platform.platform()}")
    print(f"CPUs: {os.cpu_count()}")
    loops = calibrate(WORK_SECONDS)
    print(
        f"Unit of work of the target worker: spin({loops:,}), {min(_timed(lambda: spin(loops)) for _ in range(20)) * 1e3:.2f} ms"
    )
    print()

    noop, work = params.noop_attempts, params.work_attempts
    plan = [
        ("1. no-op worker: metrics + spans (SimpleSpanProcessor)", noop, 0, True, "simple", None),
        ("2. no-op worker: metrics + spans (BatchSpanProcessor)", noop, 0, True, "batch", None),
        ("3. no-op worker: metrics only", noop, 0, True, None, None),
        ("4. no-op worker: spans only (SimpleSpanProcessor)", noop, 0, False, "simple", None),
        ("5. ~1 ms of CPU per attempt: metrics + spans (SimpleSpanProcessor)", work, loops, True, "simple", TARGET),
    ]
    rows: list[Row] = []
    crashed = False
    began = time.perf_counter()
    for title, n, spins, metrics, processor, target in plan:
        try:
            rows.append(bench(title, n, spins, metrics, processor, params.rounds, target))
        except Exception:
            crashed = True
            traceback.print_exc()
            rows.append(Row(title, None, None, target))
        print()

    print_table(rows)
    print(f"\nTotal time: {time.perf_counter() - began:.1f} s")
    if crashed:
        return 2
    if args.strict and any(row.verdict == "FAIL" for row in rows):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
