"""Concurrency: snapshot readers during restart churn, concurrent registration, start/stop stress."""

from __future__ import annotations

import re
import threading

import pytest

from django_workers.core import WorkerPool, WorkerStatus
from tests.core.conftest import failing, messages, until_cancelled
from tests.support import ZERO_BACKOFF, FnWorker, wait_for

STARTING = re.compile(r"starting execution attempt (\d+)/unlimited")
ERROR_OF = re.compile(r"stopping execution attempt (\d+)/unlimited with error: boom (\d+)")


def check_snapshot(name: str, snap, history_size: int) -> None:
    """The invariants of one snapshot of a worker failing with ``boom <attempt>`` forever."""
    assert snap.name == name
    assert isinstance(snap.events, tuple)
    assert snap.id, "the first attempt's id exists from start() on"
    if not snap.events:  # started, but its first attempt has not begun yet
        assert (snap.status, snap.current_execution_attempt, snap.last_error) == (WorkerStatus.UNKNOWN, 0, None)
        return
    assert len(snap.events) <= history_size
    stamps = [e.timestamp for e in snap.events]
    assert stamps == sorted(stamps)
    # the newest event is about the current attempt
    assert snap.events[-1].execution_id == snap.id
    starts = [int(m.group(1)) for e in snap.events if (m := STARTING.fullmatch(e.message))]
    assert starts, "every window of the history has a start (3 events per attempt)"
    assert starts == list(range(starts[0], starts[0] + len(starts)))
    attempt = snap.current_execution_attempt
    assert starts[-1] == attempt
    last = snap.events[-1].message
    if last.startswith("starting"):
        assert snap.status is WorkerStatus.RUNNING
        assert snap.last_error == (f"boom {attempt - 1}" if attempt > 1 else None)
    else:
        assert snap.status is WorkerStatus.ERROR
        assert snap.last_error == f"boom {attempt}"
        assert last in {
            "restarting after error",
            f"stopping execution attempt {attempt}/unlimited with error: boom {attempt}",
        }
    for event in snap.events:
        m = ERROR_OF.fullmatch(event.message)
        if m:
            assert m.group(1) == m.group(2)


def test_concurrent_readers_during_restart_churn(harness) -> None:
    history_size = 12
    names = [f"sync-{i}" for i in range(4)] + ["async-0"]
    workers = [
        failing("sync" if n.startswith("sync") else "async", n, exc=lambda ctx: ValueError(f"boom {ctx.attempt}"))
        for n in names
    ]
    pool = harness.pool(*workers, max_executions_attempts=0, restart_backoff=ZERO_BACKOFF, history_size=history_size)
    done = threading.Event()
    errors: list[BaseException] = []
    reads = [0] * 4

    def reader(index: int) -> None:
        try:
            while not done.is_set():
                executions = pool.executions()
                assert list(executions) == names
                for name, snap in executions.items():
                    check_snapshot(name, snap, history_size)
                    for _event in snap.events:  # iterating a kept snapshot is safe
                        pass
                check_snapshot(names[index % len(names)], pool.execution(names[index % len(names)]), history_size)
                reads[index] += 1
        except BaseException as exc:
            errors.append(exc)
            done.set()

    pool.start()
    readers = [threading.Thread(target=reader, args=(i,), name=f"reader-{i}") for i in range(4)]
    for thread in readers:
        thread.start()
    try:
        wait_for(
            lambda: (
                done.is_set()
                or (min(e.current_execution_attempt for e in pool.executions().values()) >= 300 and min(reads) >= 50)
            ),
            timeout=30,
        )
    finally:
        done.set()
        for thread in readers:
            thread.join(10)
    if errors:
        raise errors[0]
    assert pool.stop(5) == []
    for name in names:
        execution = pool.execution(name)
        assert execution.status is not WorkerStatus.RUNNING
        assert not execution.has_event("max execution attempts reached")


def test_kept_snapshots_survive_churn(harness) -> None:
    pool = harness.pool(failing("sync", "w"), max_executions_attempts=0, history_size=5)
    pool.start()
    wait_for(lambda: pool.execution("w").current_execution_attempt >= 5)
    kept = pool.execution("w")
    frozen = (kept.id, kept.status, kept.current_execution_attempt, tuple(kept.events))
    wait_for(lambda: pool.execution("w").current_execution_attempt >= kept.current_execution_attempt + 50)
    assert (kept.id, kept.status, kept.current_execution_attempt, tuple(kept.events)) == frozen
    assert pool.stop(5) == []


def test_concurrent_registration_after_start(harness) -> None:
    pool = harness.pool()
    pool.start()
    threads_count, per_thread = 8, 5
    barrier = threading.Barrier(threads_count)
    outcomes: list[str] = []
    lock = threading.Lock()

    def register(index: int) -> None:
        barrier.wait()
        for j in range(per_thread):
            pool.register(FnWorker(f"w-{index}-{j}"))
        try:
            pool.register(FnWorker("contended"))
            outcome = "registered"
        except ValueError:
            outcome = "duplicate"
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=register, args=(i,)) for i in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert sorted(outcomes) == ["duplicate"] * (threads_count - 1) + ["registered"]
    assert len(pool.names()) == threads_count * per_thread + 1
    assert pool.wait(10)
    assert {e.status for e in pool.executions().values()} == {WorkerStatus.SUCCESS}
    assert all(e.current_execution_attempt == 1 for e in pool.executions().values())


def test_concurrent_stop_calls_agree(harness) -> None:
    starts = [threading.Event() for _ in range(4)]
    pool = harness.pool(*(until_cancelled("sync" if i % 2 else "async", f"w{i}", starts[i]) for i in range(4)))
    pool.start()
    assert all(s.wait(5) for s in starts)
    results: list[list[str]] = []
    barrier = threading.Barrier(4)

    def stopper() -> None:
        barrier.wait()
        results.append(pool.stop(5))

    threads = [threading.Thread(target=stopper) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert results == [[], [], [], []]
    assert {e.status for e in pool.executions().values()} == {WorkerStatus.SUCCESS}


@pytest.mark.slow
def test_many_start_stop_cycles() -> None:
    baseline = threading.active_count()
    for cycle in range(200):
        starts = [threading.Event() for _ in range(4)]
        pool = WorkerPool(max_executions_attempts=0, restart_backoff=ZERO_BACKOFF, history_size=8)
        pool.register(until_cancelled("sync", "sync-a", starts[0]))
        pool.register(until_cancelled("sync", "sync-b", starts[1]))
        pool.register(until_cancelled("async", "async-a", starts[2]))
        pool.register(until_cancelled("async", "async-b", starts[3]))
        pool.register(failing("sync", "crashing-sync", succeed_at=3))
        pool.register(failing("async", "crashing-async", succeed_at=3))
        pool.start()
        if cycle % 2:  # every other cycle, stop while the workers are running; else right away
            assert all(s.wait(5) for s in starts), f"cycle {cycle}: workers did not start"
        not_stopped = pool.stop(5)
        assert not_stopped == [], f"cycle {cycle}: {not_stopped}"
        for name, execution in pool.executions().items():
            assert execution.status is not WorkerStatus.RUNNING, (cycle, name, messages(execution))
            if execution.status is WorkerStatus.UNKNOWN:  # stopped before its first attempt began
                assert execution.events == () and cycle % 2 == 0, (cycle, name)
        for name in ("sync-a", "sync-b", "async-a", "async-b"):
            execution = pool.execution(name)
            if cycle % 2:
                assert execution.status is WorkerStatus.SUCCESS, (cycle, name)
                assert messages(execution)[-1] == "stopping execution attempt 1/unlimited with success"
        assert threading.active_count() == baseline, f"cycle {cycle}: stop() left threads behind"
