"""The pool's lifecycle: registration, start, executions, attempts, restarts, history."""

from __future__ import annotations

import dataclasses
import os
import threading
import uuid

import pytest

from django_workers.core import Backoff, Worker, WorkerExecution, WorkerPool, WorkerStatus
from tests.core.conftest import EventLog, failing, messages, until_cancelled
from tests.support import AsyncFnWorker, FnWorker, wait_for

# -- construction and registration ------------------------------------------------------------


def test_defaults() -> None:
    pool = WorkerPool()
    assert pool.deferred_start_threshold == 0
    assert pool.max_executions_attempts == 1
    assert pool.stop_timeout == 30.0
    assert not pool.started
    assert pool.executions() == {}


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"deferred_start_threshold": -0.5}, ValueError),
        ({"deferred_start_threshold": float("nan")}, ValueError),
        ({"deferred_start_threshold": "1"}, TypeError),
        ({"deferred_start_threshold": True}, TypeError),
        ({"max_executions_attempts": -1}, ValueError),
        ({"max_executions_attempts": 1.5}, TypeError),
        ({"max_executions_attempts": "2"}, TypeError),
        ({"max_executions_attempts": False}, TypeError),
        ({"stop_timeout": -1}, ValueError),
        ({"stop_timeout": "30"}, TypeError),
        ({"restart_backoff": 1.0}, TypeError),
        ({"history_size": 0}, ValueError),
        ({"listeners": [42]}, TypeError),
    ],
)
def test_constructor_validation(kwargs: dict[str, object], error: type[Exception]) -> None:
    with pytest.raises(error):
        WorkerPool(**kwargs)  # type: ignore[arg-type]


class NoName(Worker):
    def run(self, ctx) -> None:
        pass


class BlankName(Worker):
    name = "   "

    def run(self, ctx) -> None:
        pass


class NumberName(Worker):
    name = 42  # type: ignore[assignment]

    def run(self, ctx) -> None:
        pass


class NoRun(Worker):
    name = "no-run"


class PropertyName(Worker):
    def __init__(self, suffix: str) -> None:
        self.suffix = suffix

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"prop-{self.suffix}"

    def run(self, ctx) -> None:
        pass


@pytest.mark.parametrize(
    ("worker", "error"),
    [
        (object(), TypeError),
        (FnWorker, TypeError),  # the class, not an instance
        ("a-worker", TypeError),
        (NoName(), ValueError),
        (BlankName(), ValueError),
        (NumberName(), TypeError),
        (NoRun(), TypeError),
    ],
)
def test_register_rejects_invalid_workers(worker: object, error: type[Exception]) -> None:
    pool = WorkerPool()
    with pytest.raises(error):
        pool.register(worker)  # type: ignore[arg-type]
    assert pool.names() == []


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"deferred_start_threshold": -1}, ValueError),
        ({"deferred_start_threshold": -0.001}, ValueError),
        ({"deferred_start_threshold": float("inf")}, ValueError),
        ({"max_executions_attempts": -1}, ValueError),
        ({"deferred_start_threshold": True}, TypeError),
        ({"deferred_start_threshold": "3"}, TypeError),
        ({"max_executions_attempts": True}, TypeError),
        ({"max_executions_attempts": "4"}, TypeError),
        ({"max_executions_attempts": 2.0}, TypeError),
        ({"restart_backoff": {"initial": 1}}, TypeError),
    ],
)
def test_register_validates_overrides(overrides: dict[str, object], error: type[Exception]) -> None:
    pool = WorkerPool()
    with pytest.raises(error):
        pool.register(FnWorker("w"), **overrides)  # type: ignore[arg-type]
    assert pool.names() == []


def test_register_accepts_a_name_property_and_chains() -> None:
    pool = WorkerPool()
    assert pool.register(PropertyName("a")).register(PropertyName("b")) is pool
    assert pool.names() == ["prop-a", "prop-b"]


def test_duplicate_name_raises_and_keeps_the_first_registration() -> None:
    pool = WorkerPool()
    pool.register(FnWorker("same"), max_executions_attempts=3)
    with pytest.raises(ValueError, match="same"):
        pool.register(FnWorker("same"), max_executions_attempts=7)
    assert pool.names() == ["same"]
    assert pool.execution("same").max_executions_attempts == 3


def test_duplicate_name_after_start_raises(harness) -> None:
    started = threading.Event()
    pool = harness.pool(until_cancelled("sync", "same", started))
    pool.start()
    assert started.wait(5)
    with pytest.raises(ValueError):
        pool.register(FnWorker("same"))
    assert pool.names() == ["same"]


# -- reading executions -------------------------------------------------------------------------


def test_executions_before_start_list_every_worker_as_unknown() -> None:
    pool = WorkerPool(deferred_start_threshold=1.5, max_executions_attempts=2)
    pool.register(FnWorker("b"))
    pool.register(AsyncFnWorker("a"), max_executions_attempts=0, deferred_start_threshold=0.25)
    pool.register(FnWorker("c"), max_executions_attempts=4)
    executions = pool.executions()
    assert list(executions) == ["b", "a", "c"]  # registration order
    for name, execution in executions.items():
        assert isinstance(execution, WorkerExecution)
        assert execution.name == name
        assert execution.status is WorkerStatus.UNKNOWN
        assert execution.status == "unknown"
        assert execution.current_execution_attempt == 0
        assert execution.events == ()
        assert execution.last_error is None
        assert execution.last_traceback is None
    assert [e.max_executions_attempts for e in executions.values()] == [2, 0, 4]
    assert [e.deferred_start_threshold for e in executions.values()] == [1.5, 0.25, 1.5]
    assert pool.execution("a") == executions["a"]


@pytest.mark.parametrize("name", ["nope", "with space", ""])
def test_execution_of_an_unknown_worker_raises_lookup_error(name: str) -> None:
    pool = WorkerPool()
    pool.register(FnWorker("known"))
    with pytest.raises(LookupError) as excinfo:
        pool.execution(name)
    assert str(excinfo.value) == f"execution for worker {name} was not found"


def test_worker_status_values() -> None:
    assert {status.value for status in WorkerStatus} >= {"unknown", "deferred", "running", "success", "error"}
    assert WorkerStatus("success") is WorkerStatus.SUCCESS
    assert isinstance(WorkerStatus.ERROR, str)
    assert f"{WorkerStatus.RUNNING}" == "running"


# -- start, stop, wait --------------------------------------------------------------------------


def test_start_returns_at_once_and_workers_run_in_the_background(harness) -> None:
    gate = harness.gate()
    entered = threading.Event()

    def body(ctx) -> None:
        entered.set()
        gate.wait(30)

    pool = harness.pool(FnWorker("w", body))
    pool.start()  # must not block on the worker
    assert pool.started
    assert entered.wait(5)
    assert pool.execution("w").status is WorkerStatus.RUNNING
    gate.set()
    assert pool.wait(5)
    assert pool.execution("w").status is WorkerStatus.SUCCESS


def test_start_twice_raises_runtime_error(harness) -> None:
    pool = harness.pool(FnWorker("w"))
    pool.start()
    with pytest.raises(RuntimeError):
        pool.start()
    assert pool.wait(5)
    assert pool.execution("w").current_execution_attempt == 1  # not started a second time


def test_stop_before_start_is_a_no_op(harness) -> None:
    log: list[object] = []
    worker = FnWorker("w")
    pool = harness.pool(worker, listeners=[log.append])
    assert pool.stop() == []
    assert pool.stop(timeout=0) == []
    assert log == []
    assert pool.execution("w").status is WorkerStatus.UNKNOWN
    assert not pool.started
    pool.start()  # the pool is still usable
    assert pool.wait(5)
    assert worker.calls == 1
    assert pool.execution("w").status is WorkerStatus.SUCCESS


def test_register_after_start_starts_the_worker(harness) -> None:
    first = threading.Event()
    pool = harness.pool(until_cancelled("sync", "first", first))
    pool.start()
    assert first.wait(5)
    late_sync, late_async = threading.Event(), threading.Event()
    pool.register(FnWorker("late-sync", lambda ctx: late_sync.set()))

    async def abody(ctx) -> None:
        late_async.set()

    pool.register(AsyncFnWorker("late-async", abody))
    assert late_sync.wait(5)
    assert late_async.wait(5)
    wait_for(lambda: pool.execution("late-async").status is WorkerStatus.SUCCESS)
    wait_for(lambda: pool.execution("late-sync").status is WorkerStatus.SUCCESS)
    assert pool.names() == ["first", "late-sync", "late-async"]
    assert pool.stop(5) == []


def test_register_after_start_honours_the_deferral(harness) -> None:
    pool = harness.pool()
    pool.start()
    worker = FnWorker("late")
    pool.register(worker, deferred_start_threshold=30)
    execution = pool.execution("late")
    assert execution.status is WorkerStatus.DEFERRED
    assert messages(execution) == ["deferring execution attempt for 30 seconds"]
    assert pool.stop(5) == []
    assert worker.calls == 0


def test_wait_blocks_until_every_worker_is_done(harness) -> None:
    gate = harness.gate()
    pool = harness.pool(FnWorker("quick"), FnWorker("slow", lambda ctx: gate.wait(30)))
    pool.start()
    assert pool.wait(timeout=0.05) is False  # "slow" is still running
    assert pool.execution("slow").status is WorkerStatus.RUNNING
    gate.set()
    assert pool.wait(timeout=5) is True
    assert {e.status for e in pool.executions().values()} == {WorkerStatus.SUCCESS}


def test_wait_does_not_stop_anything(harness) -> None:
    started = threading.Event()
    pool = harness.pool(until_cancelled("sync", "w", started))
    pool.start()
    assert started.wait(5)
    assert pool.wait(timeout=0.01) is False
    assert not pool.stopping
    assert pool.execution("w").status is WorkerStatus.RUNNING


def test_context_manager_starts_and_stops(harness) -> None:
    started = threading.Event()
    pool = harness.pool(until_cancelled("sync", "w", started), stop_timeout=5)
    with pool as entered:
        assert entered is pool
        assert pool.started
        assert started.wait(5)
        assert pool.execution("w").status is WorkerStatus.RUNNING
    assert pool.stopping
    assert pool.execution("w").status is WorkerStatus.SUCCESS
    assert pool.wait(0)


def test_context_manager_stops_on_exception(harness) -> None:
    started = threading.Event()
    pool = harness.pool(until_cancelled("async", "w", started), stop_timeout=5)
    with pytest.raises(KeyError), pool:
        assert started.wait(5)
        raise KeyError("boom in the with block")
    assert pool.execution("w").status is WorkerStatus.SUCCESS


def test_start_returns_with_the_sync_workers_first_attempt_begun(harness) -> None:
    # The first attempt of a sync worker begins in the thread that calls start() (or register()
    # after it), before the worker's thread exists; later attempts begin in the worker's thread.
    gate = harness.gate()
    threads: list[tuple[int, str]] = []

    def on_event(event) -> None:
        if type(event).__name__ == "AttemptStarted":
            threads.append((event.attempt, threading.current_thread().name))

    def body(ctx) -> None:
        if ctx.attempt == 1:
            raise ValueError("first attempt fails")
        gate.wait(10)

    late_gate = harness.gate()
    pool = harness.pool(
        FnWorker("sync", body),
        until_cancelled("async", "async-one"),
        max_executions_attempts=2,
        listeners=[on_event],
    )
    pool.start()
    # No waiting: start() has returned, and the sync worker is already running its first attempt.
    execution = pool.execution("sync")
    assert execution.status in (WorkerStatus.RUNNING, WorkerStatus.ERROR), messages(execution)
    assert messages(execution)[0] == "starting execution attempt 1/2"
    assert execution.id
    pool.register(FnWorker("late", lambda ctx: late_gate.wait(10)))
    assert messages(pool.execution("late")) == ["starting execution attempt 1/2"]
    wait_for(lambda: pool.execution("sync").current_execution_attempt == 2)
    # The report changes first, then the listeners hear of it: wait for on_event too.
    wait_for(lambda: (2, "worker:sync") in threads, what="the second attempt's event")
    caller = threading.current_thread().name
    sync_starts = [(attempt, name) for attempt, name in threads if name != "worker-pool:event-loop"]
    # "sync" attempt 1 and "late" attempt 1 from this thread; "sync" attempt 2 from its own.
    assert sorted(sync_starts) == [(1, caller), (1, caller), (2, "worker:sync")]


def test_a_sync_worker_begun_by_start_runs_even_if_stopped_before_its_thread_does(harness) -> None:
    # stop() right after start(): the first attempt had begun, so the worker runs it, seeing
    # ctx.cancelled at once, and it ends in success; nothing is restarted.
    seen: list[bool] = []

    def body(ctx) -> None:
        seen.append(ctx.cancelled)

    pool = harness.pool(FnWorker("w", body), max_executions_attempts=3)
    pool.start()
    assert pool.stop(5) == []
    execution = pool.execution("w")
    assert execution.status is WorkerStatus.SUCCESS
    assert messages(execution) == ["starting execution attempt 1/3", "stopping execution attempt 1/3 with success"]
    assert len(seen) == 1


# -- attempts and restarts ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_success_is_final_even_with_attempts_left(harness, kind: str) -> None:
    worker = failing(kind, "w", succeed_at=1)
    pool = harness.pool(worker, max_executions_attempts=5)
    pool.start()
    assert pool.wait(5)
    assert worker.calls == 1
    assert messages(pool.execution("w")) == [
        "starting execution attempt 1/5",
        "stopping execution attempt 1/5 with success",
    ]


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_default_is_a_single_attempt(harness, kind: str) -> None:
    worker = failing(kind, "w")
    pool = harness.pool(worker)
    pool.start()
    assert pool.wait(5)
    assert worker.calls == 1
    execution = pool.execution("w")
    assert execution.status is WorkerStatus.ERROR
    assert messages(execution) == [
        "starting execution attempt 1/1",
        "stopping execution attempt 1/1 with error: boom",
        "max execution attempts reached",
    ]


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_restarts_until_max_attempts(harness, kind: str) -> None:
    worker = failing(kind, "w", exc=lambda ctx: ValueError(f"failure #{ctx.attempt}"))
    pool = harness.pool(worker, max_executions_attempts=3)
    pool.start()
    assert pool.wait(5)
    assert worker.calls == 3
    execution = pool.execution("w")
    assert execution.status is WorkerStatus.ERROR
    assert execution.current_execution_attempt == 3
    assert execution.max_executions_attempts == 3
    assert execution.last_error == "failure #3"
    assert messages(execution) == [
        "starting execution attempt 1/3",
        "stopping execution attempt 1/3 with error: failure #1",
        "restarting after error",
        "starting execution attempt 2/3",
        "stopping execution attempt 2/3 with error: failure #2",
        "restarting after error",
        "starting execution attempt 3/3",
        "stopping execution attempt 3/3 with error: failure #3",
        "max execution attempts reached",
    ]


def test_per_worker_max_attempts_override(harness) -> None:
    a, b = failing("sync", "a"), failing("sync", "b")
    pool = harness.pool(max_executions_attempts=2)
    pool.register(a)
    pool.register(b, max_executions_attempts=4)
    pool.start()
    assert pool.wait(5)
    assert (a.calls, b.calls) == (2, 4)


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_unlimited_attempts(harness, kind: str) -> None:
    worker = failing(kind, "w", exc=lambda ctx: ValueError(f"fail {ctx.attempt}"), succeed_at=51)
    pool = harness.pool(worker, max_executions_attempts=0, history_size=500)
    pool.start()
    assert pool.wait(10)
    assert worker.calls == 51
    execution = pool.execution("w")
    assert execution.status is WorkerStatus.SUCCESS
    assert execution.max_executions_attempts == 0
    assert execution.current_execution_attempt == 51
    msgs = messages(execution)
    assert msgs.count("restarting after error") == 50
    assert [m for m in msgs if m.startswith("starting")] == [
        f"starting execution attempt {n}/unlimited" for n in range(1, 52)
    ]
    assert "stopping execution attempt 50/unlimited with error: fail 50" in msgs
    assert msgs[-1] == "stopping execution attempt 51/unlimited with success"
    assert "max execution attempts reached" not in msgs


def test_every_attempt_has_a_new_uuid4(harness) -> None:
    ids: list[str] = []

    def body(ctx) -> None:
        ids.append(ctx.execution_id)
        raise RuntimeError("again")

    pool = harness.pool(FnWorker("w", body), max_executions_attempts=4)
    pool.start()
    assert pool.wait(5)
    assert len(ids) == 4
    assert len(set(ids)) == 4
    for value in ids:
        parsed = uuid.UUID(value)
        assert parsed.version == 4
        assert str(parsed) == value
    execution = pool.execution("w")
    assert execution.id == ids[-1]
    starts = [e for e in execution.events if e.message.startswith("starting")]
    assert [e.execution_id for e in starts] == ids
    current = None
    for event in execution.events:  # every event carries the id of the attempt it is about
        if event.message.startswith("starting execution attempt "):
            current = ids[int(event.message.split()[3].split("/")[0]) - 1]
        assert event.execution_id == current


@pytest.mark.parametrize("count", [1, 17, 300])
def test_execution_ids_are_distinct_canonical_version_4_uuids(harness, count: int) -> None:
    pool = harness.pool(*(failing("sync", f"w{i}") for i in range(count)), max_executions_attempts=3)
    pool.start()
    assert pool.wait(30)
    ids = [event.execution_id for execution in pool.executions().values() for event in execution.events]
    distinct = set(ids)
    assert len(distinct) == 3 * count  # one per attempt, every attempt's events share it
    for text in distinct:
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant, str(parsed)) == (4, uuid.RFC_4122, text)


def test_a_forked_child_never_reuses_the_ids_its_parent_made_in_advance() -> None:
    from django_workers.core import supervisor

    supervisor._new_execution_id()  # the parent now holds ids made in advance
    spare = set(supervisor._spare_ids)
    assert spare
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report one new id and leave at once
        try:
            os.write(write, supervisor._new_execution_id().encode())
        finally:
            os._exit(0)
    os.close(write)
    child_id = os.read(read, 100).decode()
    os.close(read)
    assert os.waitpid(pid, 0)[1] == 0
    assert uuid.UUID(child_id).version == 4
    assert child_id not in spare


def test_ids_differ_between_workers_and_pools(harness) -> None:
    pool1 = harness.pool(FnWorker("a"), FnWorker("b"))
    pool2 = harness.pool(FnWorker("a"))
    pool1.start()
    pool2.start()
    assert pool1.wait(5) and pool2.wait(5)
    ids = [pool1.execution("a").id, pool1.execution("b").id, pool2.execution("a").id]
    assert len(set(ids)) == 3
    assert all(ids)


# -- snapshots --------------------------------------------------------------------------------


def test_snapshots_are_immutable(harness) -> None:
    pool = harness.pool(failing("sync", "w"))
    pool.start()
    assert pool.wait(5)
    execution = pool.execution("w")
    assert dataclasses.is_dataclass(execution)
    with pytest.raises(dataclasses.FrozenInstanceError):
        execution.status = WorkerStatus.SUCCESS  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        execution.events = ()  # type: ignore[misc]
    assert isinstance(execution.events, tuple)
    with pytest.raises(AttributeError):
        execution.events[0].message = "rewritten"  # type: ignore[misc]
    executions = pool.executions()
    executions.clear()  # the returned dict is the caller's own
    assert pool.names() == ["w"]
    assert pool.execution("w") == execution


def test_snapshots_do_not_change_after_the_fact(harness) -> None:
    gate = harness.gate()
    entered = threading.Event()

    def body(ctx) -> None:
        entered.set()
        gate.wait(30)
        raise RuntimeError("later failure")

    pool = harness.pool(FnWorker("w", body), max_executions_attempts=2)
    before_start = pool.executions()
    pool.start()
    assert entered.wait(5)
    while_running = pool.execution("w")
    gate.set()
    assert pool.wait(5)
    assert before_start["w"].status is WorkerStatus.UNKNOWN and before_start["w"].events == ()
    assert while_running.status is WorkerStatus.RUNNING
    assert messages(while_running) == ["starting execution attempt 1/2"]
    assert while_running.last_error is None
    after = pool.execution("w")
    assert after.status is WorkerStatus.ERROR
    assert len(after.events) > len(while_running.events)


def test_has_event(harness) -> None:
    pool = harness.pool(failing("sync", "w"))
    pool.start()
    assert pool.wait(5)
    execution = pool.execution("w")
    assert execution.has_event("stopping execution attempt 1/1 with error: boom")
    assert execution.has_event("max execution attempts reached")
    assert not execution.has_event("stopping execution attempt 1/1 with error")  # exact match only
    assert not execution.has_event("restarting after error")


def test_history_is_bounded_and_keeps_the_newest(harness) -> None:
    log = EventLog()
    worker = failing("sync", "w", exc=lambda ctx: ValueError(f"e{ctx.attempt}"))
    pool = harness.pool(worker, max_executions_attempts=4, history_size=5, listeners=[log])
    pool.start()
    assert pool.wait(5)
    execution = pool.execution("w")
    assert len(execution.events) == 5
    assert messages(execution) == [
        "stopping execution attempt 3/4 with error: e3",
        "restarting after error",
        "starting execution attempt 4/4",
        "stopping execution attempt 4/4 with error: e4",
        "max execution attempts reached",
    ]
    everything = log.reported_messages("w")
    assert len(everything) == 12
    assert everything[-5:] == messages(execution)


def test_history_bound_holds_under_unlimited_restarts(harness) -> None:
    pool = harness.pool(
        failing("sync", "w", succeed_at=300), max_executions_attempts=0, history_size=10, restart_backoff=Backoff(0)
    )
    pool.start()
    assert pool.wait(10)
    execution = pool.execution("w")
    assert len(execution.events) == 10
    assert execution.events[-1].message == "stopping execution attempt 300/unlimited with success"
