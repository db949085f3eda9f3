"""Torture suite of the engine: seeded, randomised races of start, stop, register, listeners, silence and controls.

Each check runs many iterations of a scenario drawn at random: a mix of sync and async workers
(idle, crash-looping, flaky, deferred, heartbeating near their ``max_silence``, calling
``asyncio.to_thread``), listeners that raise, dawdle or call ``stop()``, and the moment at which the
pool is stopped and by whom. Half the iterations run with a 0.1 ms thread switch interval, a quarter
beside a thread that burns CPU. After every iteration the invariants are checked: nothing starts
once ``stop()`` is called, a clean stop leaves no worker running and no thread of the pool alive
(checked at once, no grace period), a stop from inside the pool does not wait for itself, attempts
are numbered without gaps (a restart or resume by an operator begins again at 1), and an unlimited
worker never stops by itself.

Profiles, chosen with the environment variable ``TORTURE_PROFILE``:

- ``short`` (default, part of ``make test``): a few iterations per check, ~15 seconds in all on
  a 2-core machine;
- ``long``: fifty times as many (``TORTURE_PROFILE=long .venv/bin/python -m pytest
  tests/core/test_torture.py``), for a change to the engine's concurrency.

Every run draws a seed (``TORTURE_SEED=<int>`` imposes one), prints it, and names it in every
failure message with the iteration: ``TORTURE_SEED=<seed> TORTURE_ITERATION=<n> pytest
tests/core/test_torture.py -k <check>`` replays that scenario (the interleavings themselves are
the machine's: replay it a few times, or with the whole profile). A watchdog
(``faulthandler.dump_traceback_later``) dumps every thread's stack to stderr when an iteration
hangs; every wait in the suite has a deadline, so the hang then fails the check.
"""

from __future__ import annotations

import asyncio
import faulthandler
import os
import random
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

from django_workers.core import Backoff, Worker, WorkerContext, WorkerPool, WorkerStatus
from django_workers.core.events import (
    EVENT_TYPES,
    AttemptStarted,
    AttemptSucceeded,
    PoolStopped,
    PoolStopping,
    WorkerEvent,
    WorkerStopTimedOut,
)
from tests.support import AsyncFnWorker, FnWorker, wait_for

PROFILES = {"short": 1, "long": 50}
PROFILE = os.environ.get("TORTURE_PROFILE", "short")
if PROFILE not in PROFILES:
    raise ValueError(f"TORTURE_PROFILE must be one of {', '.join(PROFILES)}, got {PROFILE!r}")
SEED = int(os.environ.get("TORTURE_SEED") or random.SystemRandom().randrange(2**32))
#: An iteration that takes longer than this has its threads' stacks dumped.
HANG_AFTER = 30.0
#: stop()'s timeout in the scenarios: every worker here returns well within it.
STOP_TIMEOUT = 10.0
#: How much longer than its own wait a stop() from inside the pool may take (scheduling noise).
PROMPT = 3.0

pytestmark = pytest.mark.timeout(7200 if PROFILE == "long" else 300)


# -- the harness of an iteration -------------------------------------------------------------------------------


def run_check(name: str, iterations: int, check: Callable[[random.Random], None]) -> None:
    """Run ``check`` ``iterations`` times (times the profile), each with its own seeded generator."""
    total = iterations * PROFILES[PROFILE]
    print(f"torture {name}: seed {SEED}, profile {PROFILE}, {total} iterations")
    only = os.environ.get("TORTURE_ITERATION")
    for iteration in range(total) if only is None else [int(only)]:
        rng = random.Random(f"{SEED}:{name}:{iteration}")
        try:
            with turbulence(rng), hang_watchdog():
                check(rng)
        except BaseException as exc:
            if not isinstance(exc, AssertionError | pytest.fail.Exception):
                raise
            raise AssertionError(
                f"torture check {name!r} failed at iteration {iteration} of seed {SEED}; replay it with "
                f"TORTURE_SEED={SEED} TORTURE_ITERATION={iteration} pytest tests/core/test_torture.py -k {name}\n{exc}"
            ) from exc


@contextmanager
def hang_watchdog() -> Iterator[None]:
    """Dump every thread's stack to stderr if the block is still running after ``HANG_AFTER`` seconds."""
    # The process's own stderr: pytest's captured sys.stderr may have no file descriptor.
    faulthandler.dump_traceback_later(HANG_AFTER, exit=False, file=sys.__stderr__)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


@contextmanager
def turbulence(rng: random.Random) -> Iterator[None]:
    """Half the iterations switch threads every 0.1 ms; a quarter run beside a CPU-burning thread."""
    interval = sys.getswitchinterval()
    if rng.random() < 0.5:
        sys.setswitchinterval(1e-4)
    done = threading.Event()
    burner = threading.Thread(target=burn, args=(done,), name="torture:cpu-load", daemon=True)
    if rng.random() < 0.25:
        burner.start()
    try:
        yield
    finally:
        done.set()
        if burner.is_alive():
            burner.join(10)
        sys.setswitchinterval(interval)


def burn(done: threading.Event) -> None:
    spins = 0
    while not done.is_set():
        spins += 1


@contextmanager
def no_leaked_threads() -> Iterator[set[threading.Thread]]:
    """Fail when a thread started in the block is still alive at its end (no grace period)."""
    before = set(threading.enumerate())
    yield before
    leaked = [t.name for t in threading.enumerate() if t not in before and t.is_alive()]
    assert not leaked, f"threads alive after stop() returned: {leaked}"


class Observer:
    """A listener checking the event stream as it comes, and the pool's reports at PoolStopping."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[Any] = []
        self.pool: WorkerPool | None = None
        #: Each worker's attempt number (and execution id) when PoolStopping was published (the
        #: stop flag is set).
        self.at_stopping: dict[str, int] | None = None
        self.at_stopping_ids: dict[str, str] | None = None

    def __call__(self, event: Any) -> None:
        if isinstance(event, PoolStopping) and self.pool is not None:
            executions = self.pool.executions()
            self.at_stopping = {name: e.current_execution_attempt for name, e in executions.items()}
            self.at_stopping_ids = {name: e.id for name, e in executions.items()}
        with self.lock:
            self.events.append(event)

    def of(self, kind: Any, worker: str | None = None) -> list[Any]:
        with self.lock:
            events = list(self.events)
        return [e for e in events if isinstance(e, kind) and (worker is None or getattr(e, "worker", None) == worker)]

    def check(self, pool: WorkerPool, unlimited: set[str], stopped_cleanly: bool) -> None:
        """The invariants of a pool after its last stop()."""
        executions = pool.executions()
        for name, execution in executions.items():
            started = [e.attempt for e in self.of(AttemptStarted, name)]
            assert started == list(range(1, len(started) + 1)), (name, started)
            assert execution.current_execution_attempt == len(started), (name, execution.events[-3:])
            if self.at_stopping is not None:
                assert execution.current_execution_attempt == self.at_stopping[name], (
                    f"{name} started an attempt after stop(): {self.at_stopping[name]} at PoolStopping, "
                    f"{execution.current_execution_attempt} in the end"
                )
            if stopped_cleanly:
                assert execution.status is not WorkerStatus.RUNNING, (name, execution.events[-3:])
                assert not execution.timed_out, name
            if name in unlimited:
                assert not execution.exhausted, name
        if stopped_cleanly:
            assert self.of(WorkerStopTimedOut) == []
        finished = [e.worker for e in self.of(WorkerEvent) if type(e).__name__ == "WorkerFinished"]
        assert len(finished) == len(set(finished)), f"a worker finished twice: {finished}"

    def check_controlled(self, pool: WorkerPool) -> None:
        """The invariants of a pool whose workers were restarted, paused and resumed, after stop()."""
        assert self.at_stopping_ids is not None
        for name, execution in pool.executions().items():
            started = [e.attempt for e in self.of(AttemptStarted, name)]
            for previous, attempt in zip([0, *started], started, strict=False):
                assert attempt in (1, previous + 1), (name, started)
            assert execution.id == self.at_stopping_ids[name], f"{name} began an attempt after stop()"
            assert execution.status is not WorkerStatus.RUNNING, (name, execution.events[-4:])
            assert not execution.timed_out, name
            if execution.status is WorkerStatus.PAUSED:
                assert execution.paused, (name, [e.message for e in execution.events[-8:]])
        assert self.of(WorkerStopTimedOut) == []


# -- workers --------------------------------------------------------------------------------------------------


@dataclass
class Scenario:
    """Workers drawn at random, with their registration options."""

    workers: list[tuple[Worker, dict[str, Any]]] = field(default_factory=list)
    #: Names of the workers with unlimited attempts that never return unless stopped.
    unlimited: set[str] = field(default_factory=set)


def idle(kind: str, name: str) -> Worker:
    if kind == "sync":

        def body(ctx: WorkerContext) -> None:
            while not ctx.sleep(60):
                pass

        return FnWorker(name, body)

    async def abody(ctx: WorkerContext) -> None:
        await ctx.until_cancelled()

    return AsyncFnWorker(name, abody)


def crashing(kind: str, name: str) -> Worker:
    if kind == "sync":

        def body(ctx: WorkerContext) -> None:
            raise ValueError(f"boom {ctx.attempt}")

        return FnWorker(name, body)

    async def abody(ctx: WorkerContext) -> None:
        raise ValueError(f"boom {ctx.attempt}")

    return AsyncFnWorker(name, abody)


def flaky(kind: str, name: str, succeed_at: int) -> Worker:
    if kind == "sync":

        def body(ctx: WorkerContext) -> None:
            if ctx.attempt < succeed_at:
                raise RuntimeError("flaky")

        return FnWorker(name, body)

    async def abody(ctx: WorkerContext) -> None:
        await asyncio.sleep(0)
        if ctx.attempt < succeed_at:
            raise RuntimeError("flaky")

    return AsyncFnWorker(name, abody)


def heartbeating(kind: str, name: str, beat: float) -> Worker:
    """Heartbeats every ``beat`` seconds, until cancelled."""
    if kind == "sync":

        def body(ctx: WorkerContext) -> None:
            while not ctx.sleep(beat):
                ctx.heartbeat()

        return FnWorker(name, body)

    async def abody(ctx: WorkerContext) -> None:
        while not await ctx.asleep(beat):
            ctx.heartbeat()

    return AsyncFnWorker(name, abody)


def threading_out(name: str) -> Worker:
    """An async worker that hands work to ``asyncio.to_thread`` until cancelled."""

    async def abody(ctx: WorkerContext) -> None:
        while not ctx.cancelled:
            await asyncio.to_thread(time.sleep, 0.001)

    return AsyncFnWorker(name, abody)


def draw_scenario(rng: random.Random, size: int | None = None, silence: bool = False, prefix: str = "w") -> Scenario:
    scenario = Scenario()
    for index in range(size if size is not None else rng.randint(1, 5)):
        kind = rng.choice(["sync", "async"])
        name = f"{prefix}{index}-{kind}"
        shape = rng.choice(["idle", "crashing", "flaky", "deferred", "to_thread"] + ["heartbeat"] * silence)
        options: dict[str, Any] = {"max_executions_attempts": 0}
        if shape == "idle":
            worker = idle(kind, name)
            scenario.unlimited.add(name)
        elif shape == "crashing":
            worker = crashing(kind, name)
            scenario.unlimited.add(name)
            if rng.random() < 0.3:
                options["restart_backoff"] = Backoff(initial=0.001, maximum=0.005, jitter=0.5)
        elif shape == "flaky":
            worker = flaky(kind, name, rng.randint(1, 4))
            options["max_executions_attempts"] = rng.choice([0, 2, 5])
        elif shape == "deferred":
            worker = idle(kind, name)
            scenario.unlimited.add(name)
            options["deferred_start_threshold"] = rng.choice([0.001, 0.005, 0.02, 30.0])
        elif shape == "to_thread":
            worker = threading_out(name)
            scenario.unlimited.add(name)
        else:
            max_silence = rng.choice([0.005, 0.01, 0.02])
            worker = heartbeating(kind, name, max_silence * rng.uniform(0.7, 1.3))  # near the boundary
            options.update(max_silence=max_silence, restart_on_silence=rng.random() < 0.7)
        scenario.workers.append((worker, options))
    return scenario


def build(scenario: Scenario, *listeners: Any, history_size: int = 1_000) -> tuple[WorkerPool, Observer]:
    observer = Observer()
    pool = WorkerPool(
        restart_backoff=Backoff(initial=0),
        stop_timeout=STOP_TIMEOUT,
        history_size=history_size,
        listeners=[observer, *listeners],
        log=False,
    )
    observer.pool = pool
    for worker, options in scenario.workers:
        pool.register(worker, **options)
    return pool, observer


def spin(rng: random.Random, upto: int = 2_000) -> None:
    """Let a random amount of work pass (no sleep: finer than the clock, and under the GIL's control)."""
    for _ in range(rng.randrange(upto)):
        pass


def timed_stop(pool: WorkerPool, timeout: float = STOP_TIMEOUT) -> tuple[list[str], float]:
    began = time.monotonic()
    result = pool.stop(timeout)
    return result, time.monotonic() - began


def run_threads(*targets: Callable[[], object]) -> list[BaseException]:
    """Run each target in a thread of its own, join them all; the exceptions they raised."""
    errors: list[BaseException] = []

    def guarded(target: Callable[[], object]) -> None:
        try:
            target()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(t,), name="torture:driver") for t in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(STOP_TIMEOUT * 3)
        assert not thread.is_alive(), "a driver thread of the check is still running"
    return errors


# -- the checks -----------------------------------------------------------------------------------------------


def test_start_races_stop() -> None:
    """start() in one thread, stop() in another, at a random moment."""

    def check(rng: random.Random) -> None:
        scenario = draw_scenario(rng)
        with no_leaked_threads():
            pool, observer = build(scenario)
            barrier = threading.Barrier(2)
            results: list[list[str]] = []

            def starter() -> None:
                barrier.wait(5)
                spin(rng)
                pool.start()

            def stopper() -> None:
                barrier.wait(5)
                spin(rng)
                results.append(pool.stop(STOP_TIMEOUT))

            assert run_threads(starter, stopper) == []
            final = pool.stop(STOP_TIMEOUT)
        assert results == [[]] and final == []
        observer.check(pool, scenario.unlimited, stopped_cleanly=True)

    run_check("start_races_stop", 40, check)


def test_register_races_stop() -> None:
    """register() after start() from several threads while another one stops the pool."""

    def check(rng: random.Random) -> None:
        scenario = draw_scenario(rng, size=rng.randint(0, 2))
        late = draw_scenario(rng, size=rng.randint(1, 4), prefix="late")
        with no_leaked_threads():
            pool, observer = build(scenario)
            pool.start()
            outcomes: list[str] = []

            def registrar(worker: Worker, options: dict[str, Any]) -> Callable[[], None]:
                def register() -> None:
                    spin(rng)
                    try:
                        pool.register(worker, **options)
                        outcomes.append("registered")
                    except RuntimeError as exc:
                        assert "stopped" in str(exc)
                        outcomes.append("refused")

                return register

            def stopper() -> None:
                spin(rng)
                assert pool.stop(STOP_TIMEOUT) == []

            targets = [registrar(w, o) for w, o in late.workers]
            assert run_threads(stopper, *targets) == []
            assert pool.stop(STOP_TIMEOUT) == []
        assert len(outcomes) == len(late.workers)
        assert len(pool.names()) == len(scenario.workers) + outcomes.count("registered")
        observer.check(pool, scenario.unlimited | late.unlimited, stopped_cleanly=True)

    run_check("register_races_stop", 40, check)


def test_sync_workers_stop_the_pool() -> None:
    """Several sync workers call stop() at once (a barrier), while others run."""

    def check(rng: random.Random) -> None:
        scenario = draw_scenario(rng)
        callers = rng.randint(1, 3)
        barrier = threading.Barrier(callers)
        returned: list[tuple[list[str], float]] = []
        box: dict[str, WorkerPool] = {}

        def caller(ctx: WorkerContext) -> None:
            barrier.wait(5)
            spin(rng, 500)
            returned.append(timed_stop(box["pool"], 2 * PROMPT))

        for index in range(callers):
            scenario.workers.append((FnWorker(f"caller{index}", caller), {}))
        with no_leaked_threads():
            pool, observer = build(scenario)
            box["pool"] = pool
            pool.start()
            wait_for(lambda: len(returned) == callers, timeout=4 * PROMPT, what="every caller's stop() to return")
            assert pool.stop(STOP_TIMEOUT) == []
        for not_stopped, elapsed in returned:
            assert not_stopped == []
            assert elapsed < PROMPT, f"a stop() from a worker took {elapsed:.2f} s"
        observer.check(pool, scenario.unlimited, stopped_cleanly=True)

    run_check("sync_workers_stop_the_pool", 25, check)


def test_listeners_stop_the_pool() -> None:
    """A listener calls stop() on an event drawn at random, in whatever thread delivers it."""

    def check(rng: random.Random) -> None:
        scenario = draw_scenario(rng, silence=True)
        target = rng.choice([t for t in EVENT_TYPES if t.__name__ != "PoolStopped"])
        nth = rng.randint(1, 3)
        seen = [0]
        returned: list[tuple[list[str], float]] = []
        errors: list[BaseException] = []

        def listener(event: Any) -> None:
            if type(event) is target:
                seen[0] += 1
                if seen[0] == nth:
                    try:
                        returned.append(timed_stop(pool, 2 * PROMPT))
                    except RuntimeError as exc:  # on the event loop: refused, as documented
                        errors.append(exc)

        with no_leaked_threads():
            pool, observer = build(scenario, listener)
            began = time.monotonic()
            pool.start()
            assert time.monotonic() - began < PROMPT, "start() was held up"
            spin(rng, 20_000)
            assert pool.stop(STOP_TIMEOUT) == []
        for not_stopped, elapsed in returned:
            assert not_stopped == [], (target.__name__, not_stopped)
            assert elapsed < PROMPT, f"a stop() from a {target.__name__} listener took {elapsed:.2f} s"
        for exc in errors:
            assert "event loop" in str(exc)
        observer.check(pool, scenario.unlimited, stopped_cleanly=True)

    run_check("listeners_stop_the_pool", 40, check)


def test_raising_listeners() -> None:
    """Listeners raising on random events disturb neither the pool nor the other listeners."""

    def check(rng: random.Random) -> None:
        scenario = draw_scenario(rng, silence=True)
        raising = set(rng.sample(EVENT_TYPES, rng.randint(1, len(EVENT_TYPES))))

        def raiser(event: Any) -> None:
            if type(event) in raising:
                raise RuntimeError(f"listener failed on {type(event).__name__}")

        with no_leaked_threads():
            pool, observer = build(scenario, raiser)
            pool.start()
            spin(rng, 50_000)
            assert pool.stop(STOP_TIMEOUT) == []
        observer.check(pool, scenario.unlimited, stopped_cleanly=True)
        assert len(observer.of(PoolStopped)) == 1  # the other listeners got every event

    run_check("raising_listeners", 30, check)


def test_slow_listeners() -> None:
    """Listeners that take their time on random events: nothing restarts after the stop."""

    def check(rng: random.Random) -> None:
        scenario = draw_scenario(rng, silence=True)
        slow = set(rng.sample(EVENT_TYPES, rng.randint(1, 4)))
        pause = rng.choice([0.0005, 0.002, 0.01])

        def dawdler(event: Any) -> None:
            if type(event) in slow:
                time.sleep(pause)  # the subject: a listener that takes time

        with no_leaked_threads():
            pool, observer = build(scenario, dawdler)
            pool.start()
            spin(rng, 50_000)
            assert pool.stop(STOP_TIMEOUT) == []
        observer.check(pool, scenario.unlimited, stopped_cleanly=True)

    run_check("slow_listeners", 25, check)


def test_crash_loops_stop() -> None:
    """Crash-looping workers (no backoff) stopped at a random moment: no attempt after PoolStopping."""

    def check(rng: random.Random) -> None:
        scenario = Scenario()
        for index in range(rng.randint(1, 4)):
            kind = rng.choice(["sync", "async"])
            scenario.workers.append((crashing(kind, f"c{index}-{kind}"), {"max_executions_attempts": 0}))
            scenario.unlimited.add(f"c{index}-{kind}")
        with no_leaked_threads():
            pool, observer = build(scenario, history_size=8)
            pool.start()
            spin(rng, 100_000)
            assert pool.stop(STOP_TIMEOUT) == []
        assert observer.at_stopping is not None
        observer.check(pool, scenario.unlimited, stopped_cleanly=True)

    run_check("crash_loops_stop", 40, check)


def test_concurrent_stops() -> None:
    """Several threads call stop() at once, from outside and from a worker: all return, all agree."""

    def check(rng: random.Random) -> None:
        scenario = draw_scenario(rng)
        from_worker: list[tuple[list[str], float]] = []
        box: dict[str, WorkerPool] = {}
        go = threading.Event()

        def caller(ctx: WorkerContext) -> None:
            if go.wait(5):
                from_worker.append(timed_stop(box["pool"], 2 * PROMPT))

        scenario.workers.append((FnWorker("caller", caller), {}))
        with no_leaked_threads():
            pool, observer = build(scenario)
            box["pool"] = pool
            pool.start()
            spin(rng, 20_000)
            results: list[list[str]] = []

            def outside() -> None:
                go.set()
                spin(rng, 500)
                results.append(pool.stop(STOP_TIMEOUT))

            assert run_threads(*[outside] * rng.randint(1, 3)) == []
        assert all(r == [] for r in results)
        wait_for(lambda: from_worker, timeout=PROMPT, what="the worker's stop() to return")
        assert from_worker[0][0] == []
        observer.check(pool, scenario.unlimited, stopped_cleanly=True)

    run_check("concurrent_stops", 30, check)


def test_silence_at_the_boundary() -> None:
    """Workers heartbeating about every max_silence: only a silent attempt is ever cancelled."""

    def check(rng: random.Random) -> None:
        scenario = Scenario()
        for index in range(rng.randint(1, 3)):
            kind = rng.choice(["sync", "async"])
            max_silence = rng.choice([0.003, 0.005, 0.01])
            name = f"h{index}-{kind}"
            scenario.workers.append(
                (
                    heartbeating(kind, name, max_silence * rng.uniform(0.6, 1.4)),
                    {"max_silence": max_silence, "restart_on_silence": True, "max_executions_attempts": 0},
                )
            )
            scenario.unlimited.add(name)
        with no_leaked_threads():
            pool, observer = build(scenario, history_size=50)
            pool.start()
            time.sleep(rng.uniform(0.02, 0.1))  # the subject: time for silences to happen
            observer("stop() called")  # a mark in the stream: what comes before, came before the stop
            assert pool.stop(STOP_TIMEOUT) == []
        observer.check(pool, scenario.unlimited, stopped_cleanly=True)
        # These workers only return when cancelled: a success before the stop is an attempt that
        # the watchdog cancelled without judging it silent (the next one, after a silent one).
        early = [
            e for e in observer.events[: observer.events.index("stop() called")] if isinstance(e, AttemptSucceeded)
        ]
        assert early == [], f"attempts ended in success before the stop: {early}"

    run_check("silence_at_the_boundary", 25, check)


def test_timed_out_stop_leaves_nothing_behind() -> None:
    """A worker that outlives stop()'s deadline: once it returns, every thread of the pool ends."""

    def check(rng: random.Random) -> None:
        scenario = draw_scenario(rng, size=rng.randint(0, 2))
        kind = rng.choice(["sync", "async"])
        gate = threading.Event()
        started = threading.Event()
        if kind == "sync":

            def body(ctx: WorkerContext) -> None:
                started.set()
                gate.wait(STOP_TIMEOUT)

            stubborn: Worker = FnWorker("stubborn", body)
        else:

            async def abody(ctx: WorkerContext) -> None:
                started.set()
                while not gate.is_set():
                    try:
                        await asyncio.sleep(0.001)
                    except asyncio.CancelledError:
                        pass

            stubborn = AsyncFnWorker("stubborn", abody)
        scenario.workers.append((stubborn, {}))
        before = set(threading.enumerate())
        pool, observer = build(scenario)
        pool.start()
        assert started.wait(5)
        # The others stop well within the timeout, unless the machine is very busy: not the subject.
        assert "stubborn" in pool.stop(0.2)
        assert pool.execution("stubborn").timed_out
        gate.set()
        wait_for(
            lambda: not [t for t in threading.enumerate() if t not in before and t.is_alive()],
            timeout=PROMPT,
            what="every thread of the pool to end once the stubborn worker returned",
        )
        assert pool.stop(STOP_TIMEOUT) == []
        observer.check(pool, scenario.unlimited, stopped_cleanly=False)

    run_check("timed_out_stop_leaves_nothing_behind", 15, check)


def test_to_thread_workers_leave_no_thread() -> None:
    """Async workers busy in asyncio.to_thread(): stop() returns with the executor's threads gone."""

    def check(rng: random.Random) -> None:
        scenario = Scenario()
        for index in range(rng.randint(1, 4)):
            scenario.workers.append((threading_out(f"t{index}"), {"max_executions_attempts": 0}))
            scenario.unlimited.add(f"t{index}")
        with no_leaked_threads():
            pool, observer = build(scenario)
            pool.start()
            spin(rng, 50_000)
            assert pool.stop(STOP_TIMEOUT) == []
        observer.check(pool, scenario.unlimited, stopped_cleanly=True)

    run_check("to_thread_workers_leave_no_thread", 25, check)


def test_deferred_starts_stop() -> None:
    """Deferred workers stopped around their threshold: none starts after the stop, the stop is quick."""

    def check(rng: random.Random) -> None:
        scenario = Scenario()
        for index in range(rng.randint(1, 4)):
            kind = rng.choice(["sync", "async"])
            name = f"d{index}-{kind}"
            threshold = rng.choice([0.001, 0.003, 0.01])
            scenario.workers.append((idle(kind, name), {"deferred_start_threshold": threshold}))
        with no_leaked_threads():
            pool, observer = build(scenario)
            pool.start()
            time.sleep(rng.uniform(0, 0.012))  # the subject: stop near the deferral's end
            not_stopped, elapsed = timed_stop(pool)
            assert not_stopped == []
            assert elapsed < PROMPT
        observer.check(pool, set(), stopped_cleanly=True)

    run_check("deferred_starts_stop", 30, check)


def test_snapshots_during_churn_and_stop() -> None:
    """Readers take snapshots while workers churn and the pool stops: every snapshot is consistent."""

    def check(rng: random.Random) -> None:
        scenario = draw_scenario(rng)
        with no_leaked_threads():
            pool, observer = build(scenario, history_size=16)
            done = threading.Event()
            problems: list[str] = []

            def reader() -> None:
                last: dict[str, int] = {}
                while not done.is_set():
                    for name, snap in pool.executions().items():
                        stamps = [e.timestamp for e in snap.events]
                        if stamps != sorted(stamps):
                            problems.append(f"{name}: events out of order")
                        if snap.current_execution_attempt < last.get(name, 0):
                            problems.append(f"{name}: attempt went back")
                        last[name] = snap.current_execution_attempt
                        if snap.events and snap.events[-1].execution_id != snap.id:
                            problems.append(f"{name}: newest event not about the current attempt")

            def driver() -> None:
                pool.start()
                spin(rng, 50_000)
                assert pool.stop(STOP_TIMEOUT) == []
                done.set()

            assert run_threads(reader, reader, driver) == []
        assert problems == []
        observer.check(pool, scenario.unlimited, stopped_cleanly=True)

    run_check("snapshots_during_churn_and_stop", 20, check)


def test_wait_races_stop() -> None:
    """pool.wait() in threads while the pool stops: they all see no worker left."""

    def check(rng: random.Random) -> None:
        scenario = draw_scenario(rng)
        with no_leaked_threads():
            pool, observer = build(scenario)
            pool.start()
            waited: list[bool] = []

            def waiter() -> None:
                waited.append(pool.wait(STOP_TIMEOUT))

            def stopper() -> None:
                spin(rng, 5_000)
                assert pool.stop(STOP_TIMEOUT) == []

            assert run_threads(waiter, waiter, stopper) == []
        assert waited == [True, True]
        observer.check(pool, scenario.unlimited, stopped_cleanly=True)

    run_check("wait_races_stop", 25, check)


def test_nested_stops() -> None:
    """stop() again from PoolStopping, PoolStopped and WorkerFinished listeners: no deadlock."""

    def check(rng: random.Random) -> None:
        scenario = draw_scenario(rng)
        target = rng.choice(["PoolStopping", "PoolStopped", "WorkerFinished"])
        nested: list[tuple[list[str], float]] = []

        def listener(event: Any) -> None:
            if (
                type(event).__name__ == target
                and not nested
                and not threading.current_thread().name.startswith("worker-pool:event-loop")
            ):  # on the loop, stop() refuses (test_listeners_stop_the_pool checks it)
                nested.append((["pending"], 0.0))
                nested[0] = timed_stop(pool, 2 * PROMPT)

        with no_leaked_threads():
            pool, observer = build(scenario, listener)
            pool.start()
            spin(rng, 20_000)
            not_stopped, elapsed = timed_stop(pool)
            assert not_stopped == []
            assert elapsed < PROMPT * 2
        if nested:
            assert nested[0][0] == [], (target, nested)
            assert nested[0][1] < PROMPT
        observer.check(pool, scenario.unlimited, stopped_cleanly=True)

    run_check("nested_stops", 25, check)


def test_controls_race_attempts_and_stop() -> None:
    """Restart, pause and resume from several threads while workers churn, then (or meanwhile) stop.

    Invariants: within a run attempts are numbered 1, 2, … (a restart or resume begins again at
    1); no attempt begins once stop() is called; a clean stop leaves nothing running and no thread
    alive; a worker whose status is ``paused`` is held paused.
    """

    def check(rng: random.Random) -> None:
        scenario = draw_scenario(rng, size=rng.randint(1, 4), prefix="k")
        names = [worker.name for worker, _ in scenario.workers]
        with no_leaked_threads():
            pool, observer = build(scenario, history_size=16)
            if rng.random() < 0.3:
                pool.pause(rng.choice(names), by="before start")
            pool.start()
            stopping = threading.Event()

            def controller() -> None:
                local = random.Random(rng.random())
                for _ in range(local.randint(1, 30)):
                    action = local.choice(["restart", "pause", "resume"])
                    try:
                        getattr(pool, action)(local.choice(names), by="torture")
                    except RuntimeError:
                        assert stopping.is_set(), "a control failed before stop() was called"
                        return
                    spin(local, 5_000)

            def stopper() -> None:
                spin(rng, 200_000)
                stopping.set()
                assert pool.stop(STOP_TIMEOUT) == []

            errors = run_threads(controller, controller, stopper)
            assert not errors, errors
        observer.check_controlled(pool)

    run_check("controls_race_attempts_and_stop", 40, check)
