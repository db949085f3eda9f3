"""Execution-report events (exact SPEC wording), panics, failures, listeners and attempt hooks."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from django_workers.core import Backoff, WorkerPool, WorkerStatus, ctx_worker_name
from django_workers.core.events import (
    AttemptFailed,
    AttemptsExhausted,
    AttemptStarted,
    AttemptSucceeded,
    PoolStarted,
    PoolStopped,
    PoolStopping,
    ReportedEvent,
    WorkerDeferred,
    WorkerFinished,
    WorkerRestarting,
)
from tests.core.conftest import EventLog, failing, messages, until_cancelled
from tests.support import AsyncFnWorker, FnWorker, collect_logs, wait_for

KINDS = ["sync", "async"]


class Meltdown(BaseException):
    """A custom BaseException: a panic, not an error."""


def raise_something_specific(ctx) -> None:
    raise LookupError(f"no such row (attempt {ctx.attempt})")


# -- one test per row of the SPEC table ------------------------------------------------------


def test_deferral_message_and_status(harness) -> None:
    pool = harness.pool(FnWorker("w"), deferred_start_threshold=30)
    pool.start()
    execution = pool.execution("w")
    assert execution.status is WorkerStatus.DEFERRED
    assert messages(execution) == ["deferring execution attempt for 30 seconds"]
    assert pool.stop(5) == []


@pytest.mark.parametrize(
    ("threshold", "text"), [(0.3, "0.3"), (1.5, "1.5"), (3, "3"), (0.125, "0.125"), (2.0, "2"), (1e-3, "0.001")]
)
def test_deferral_message_uses_g_formatting(harness, threshold: float, text: str) -> None:
    pool = harness.pool()
    pool.register(FnWorker("w"), deferred_start_threshold=threshold)
    pool.register(FnWorker("other"))  # not deferred
    pool.start()
    assert pool.execution("w").events[0].message == f"deferring execution attempt for {text} seconds"
    assert pool.execution("other").events[0].message == "starting execution attempt 1/1"
    assert pool.stop(5) == []


@pytest.mark.parametrize("kind", KINDS)
def test_starting_message_and_running_status(harness, kind: str) -> None:
    started = threading.Event()
    pool = harness.pool(until_cancelled(kind, "w", started), max_executions_attempts=7)
    pool.start()
    assert started.wait(5)
    execution = pool.execution("w")
    assert execution.status is WorkerStatus.RUNNING
    assert messages(execution) == ["starting execution attempt 1/7"]
    assert execution.current_execution_attempt == 1


@pytest.mark.parametrize("kind", KINDS)
def test_success_message_and_status(harness, kind: str) -> None:
    pool = harness.pool(failing(kind, "w", succeed_at=1), max_executions_attempts=2)
    pool.start()
    assert pool.wait(5)
    execution = pool.execution("w")
    assert execution.status is WorkerStatus.SUCCESS
    assert messages(execution) == ["starting execution attempt 1/2", "stopping execution attempt 1/2 with success"]
    assert execution.last_error is None
    assert execution.last_traceback is None


@pytest.mark.parametrize("kind", KINDS)
def test_error_message_uses_str_of_the_exception(harness, kind: str) -> None:
    pool = harness.pool(failing(kind, "w", exc=lambda ctx: KeyError("missing-key")), max_executions_attempts=1)
    pool.start()
    assert pool.wait(5)
    execution = pool.execution("w")
    assert execution.status is WorkerStatus.ERROR
    # str(KeyError("missing-key")) == "'missing-key'": the message uses str(), whatever it gives
    assert execution.has_event("stopping execution attempt 1/1 with error: 'missing-key'")
    assert execution.last_error == "'missing-key'"


@pytest.mark.parametrize("kind", KINDS)
def test_error_with_an_empty_message(harness, kind: str) -> None:
    pool = harness.pool(failing(kind, "w", exc=lambda ctx: RuntimeError()))
    pool.start()
    assert pool.wait(5)
    assert pool.execution("w").has_event("stopping execution attempt 1/1 with error: ")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("exc", "text"),
    [
        (lambda ctx: SystemExit(3), "SystemExit(3)"),
        (lambda ctx: KeyboardInterrupt(), "KeyboardInterrupt()"),
        (lambda ctx: Meltdown("core"), "Meltdown('core')"),
        (lambda ctx: GeneratorExit(), "GeneratorExit()"),
    ],
    ids=["SystemExit", "KeyboardInterrupt", "custom", "GeneratorExit"],
)
def test_panics_are_recovered_with_repr_in_the_message(harness, kind: str, exc, text: str) -> None:
    log = EventLog()
    bystander_started = threading.Event()
    pool = harness.pool(
        failing(kind, "w", exc=exc, succeed_at=3),
        until_cancelled(kind, "bystander", bystander_started),
        max_executions_attempts=3,
        listeners=[log],
    )
    pool.start()
    log.wait_until(lambda events: any(isinstance(e, WorkerFinished) and e.worker == "w" for e in events))
    execution = pool.execution("w")
    assert messages(execution) == [
        "starting execution attempt 1/3",
        f"stopping execution attempt 1/3 with recovered panic: {text}",
        "restarting after panic recovery",
        "starting execution attempt 2/3",
        f"stopping execution attempt 2/3 with recovered panic: {text}",
        "restarting after panic recovery",
        "starting execution attempt 3/3",
        "stopping execution attempt 3/3 with success",
    ]
    assert execution.status is WorkerStatus.SUCCESS
    failed = log.of(AttemptFailed, "w")
    assert [f.failure.panic for f in failed] == [True, True]
    assert all(isinstance(e, WorkerRestarting) and e.after_panic for e in log.of(WorkerRestarting, "w"))
    # the process (and the pool) carries on: the other worker is untouched
    assert bystander_started.wait(5)
    assert pool.execution("bystander").status is WorkerStatus.RUNNING
    assert pool.stop(5) == []
    assert pool.execution("bystander").status is WorkerStatus.SUCCESS


@pytest.mark.parametrize("kind", KINDS)
def test_panic_on_the_last_attempt_exhausts(harness, kind: str) -> None:
    pool = harness.pool(failing(kind, "w", exc=lambda ctx: SystemExit("bye")), max_executions_attempts=2)
    pool.start()
    assert pool.wait(5)
    execution = pool.execution("w")
    assert execution.status is WorkerStatus.ERROR
    assert messages(execution)[-3:] == [
        "starting execution attempt 2/2",
        "stopping execution attempt 2/2 with recovered panic: SystemExit('bye')",
        "max execution attempts reached",
    ]
    assert "SystemExit" in (execution.last_error or "")


@pytest.mark.parametrize("kind", KINDS)
def test_restarting_after_error_then_exhausted(harness, kind: str) -> None:
    pool = harness.pool(failing(kind, "w"), max_executions_attempts=2)
    pool.start()
    assert pool.wait(5)
    execution = pool.execution("w")
    assert execution.status is WorkerStatus.ERROR
    assert messages(execution) == [
        "starting execution attempt 1/2",
        "stopping execution attempt 1/2 with error: boom",
        "restarting after error",
        "starting execution attempt 2/2",
        "stopping execution attempt 2/2 with error: boom",
        "max execution attempts reached",
    ]


def test_status_is_error_while_waiting_for_a_restart(harness) -> None:
    pool = harness.pool(failing("sync", "w"), max_executions_attempts=2, restart_backoff=Backoff(initial=30))
    pool.start()
    wait_for(lambda: pool.execution("w").has_event("restarting after error"))
    assert pool.execution("w").status is WorkerStatus.ERROR
    assert not pool.execution("w").exhausted  # a restart is pending
    assert pool.stop(5) == []
    assert not pool.execution("w").exhausted  # stopped, not exhausted


@pytest.mark.parametrize("kind", KINDS)
def test_exhausted_is_a_field_set_with_the_last_allowed_failure_only(harness, kind: str) -> None:
    limited = failing(kind, "limited")
    unlimited = failing(kind, "unlimited", succeed_at=3)
    pool = harness.pool(limited, max_executions_attempts=2)
    pool.register(unlimited, max_executions_attempts=0)
    seen: list[bool] = []
    pool.add_listener(lambda event: seen.append(pool.execution("limited").exhausted))
    pool.start()
    assert pool.wait(5)
    assert pool.execution("limited").exhausted
    assert pool.execution("limited").status is WorkerStatus.ERROR
    assert not pool.execution("unlimited").exhausted  # failed twice, then succeeded
    assert pool.execution("unlimited").status is WorkerStatus.SUCCESS
    assert False in seen and seen[-1]  # not exhausted before the last attempt failed


def test_str_of_an_event_is_yokais(harness) -> None:
    pool = harness.pool(FnWorker("w"))
    pool.start()
    assert pool.wait(5)
    event = pool.execution("w").events[0]
    assert str(event) == f"[{event.execution_id} - {event.timestamp:%Y-%m-%d %H:%M:%S}] starting execution attempt 1/1"
    fixed = type(event)("id-1", "hello", datetime(2026, 1, 2, 3, 4, 5, 678, tzinfo=UTC))
    assert str(fixed) == "[id-1 - 2026-01-02 03:04:05] hello"


@pytest.mark.parametrize("kind", KINDS)
def test_unlimited_denominator(harness, kind: str) -> None:
    pool = harness.pool(failing(kind, "w", succeed_at=3), max_executions_attempts=0)
    pool.start()
    assert pool.wait(5)
    assert messages(pool.execution("w")) == [
        "starting execution attempt 1/unlimited",
        "stopping execution attempt 1/unlimited with error: boom",
        "restarting after error",
        "starting execution attempt 2/unlimited",
        "stopping execution attempt 2/unlimited with error: boom",
        "restarting after error",
        "starting execution attempt 3/unlimited",
        "stopping execution attempt 3/unlimited with success",
    ]


# -- failures: last_error, last_traceback ------------------------------------------------------


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_last_error_and_traceback(harness, kind: str) -> None:
    if kind == "sync":
        worker = FnWorker("w", raise_something_specific)
    else:

        async def async_raiser_deep_inside(ctx) -> None:
            await asyncio.sleep(0)
            raise_something_specific(ctx)

        worker = AsyncFnWorker("w", async_raiser_deep_inside)
    pool = harness.pool(worker, max_executions_attempts=2)
    pool.start()
    assert pool.wait(5)
    execution = pool.execution("w")
    assert execution.last_error == "no such row (attempt 2)"
    traceback_text = execution.last_traceback
    assert traceback_text is not None
    assert "raise_something_specific" in traceback_text
    assert "LookupError: no such row (attempt 2)" in traceback_text
    assert traceback_text.startswith("Traceback (most recent call last)")
    if kind == "async":
        assert "async_raiser_deep_inside" in traceback_text


def test_last_error_survives_a_later_success(harness) -> None:
    pool = harness.pool(
        failing("sync", "w", exc=lambda ctx: ValueError("transient"), succeed_at=2), max_executions_attempts=2
    )
    pool.start()
    assert pool.wait(5)
    execution = pool.execution("w")
    assert execution.status is WorkerStatus.SUCCESS
    assert execution.last_error == "transient"  # "last error", not "current error"
    assert "ValueError: transient" in (execution.last_traceback or "")


def test_event_timestamps_are_utc_and_ordered(harness) -> None:
    before = datetime.now(UTC)
    pool = harness.pool(failing("sync", "w"), max_executions_attempts=3)
    pool.start()
    assert pool.wait(5)
    after = datetime.now(UTC)
    events = pool.execution("w").events
    assert len(events) == 9
    for event in events:
        assert event.timestamp.tzinfo is not None
        assert event.timestamp.utcoffset() == timedelta(0)
        assert before - timedelta(seconds=1) <= event.timestamp <= after + timedelta(seconds=1)
    stamps = [e.timestamp for e in events]
    assert stamps == sorted(stamps)


# -- listeners -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_listener_receives_typed_events_in_order(harness, kind: str) -> None:
    log = EventLog()
    error = ValueError("first attempt fails")
    if kind == "sync":

        def body(ctx) -> None:
            if ctx.attempt == 1:
                raise error

        worker = FnWorker("w", body)
    else:

        async def abody(ctx) -> None:
            if ctx.attempt == 1:
                raise error

        worker = AsyncFnWorker("w", abody)
    pool = harness.pool(worker, max_executions_attempts=2, listeners=[log])
    pool.start()
    assert pool.wait(5)
    assert pool.stop(5) == []
    events = log.worker_events("w")
    assert [type(e) for e in events] == [
        AttemptStarted,
        AttemptFailed,
        WorkerRestarting,
        AttemptStarted,
        AttemptSucceeded,
        WorkerFinished,
    ]
    assert [e.attempt for e in events] == [1, 1, 1, 2, 2, 2]
    assert {e.max_attempts for e in events} == {2}
    execution = pool.execution("w")
    first_id, second_id = execution.events[0].execution_id, execution.id
    assert first_id != second_id
    assert [e.execution_id for e in events] == [first_id] * 3 + [second_id] * 3
    reported = [e for e in events if isinstance(e, ReportedEvent)]
    assert [e.record for e in reported] == list(execution.events)  # the same lines as the report
    assert [e.status for e in reported] == [
        WorkerStatus.RUNNING,
        WorkerStatus.ERROR,
        WorkerStatus.ERROR,
        WorkerStatus.RUNNING,
        WorkerStatus.SUCCESS,
    ]
    failed = events[1]
    assert failed.failure.exception is error
    assert failed.failure.panic is False
    assert failed.duration >= 0
    restarting = events[2]
    assert (restarting.restart, restarting.delay, restarting.after_panic) == (1, 0, False)
    assert events[4].duration >= 0
    assert events[5].status is WorkerStatus.SUCCESS
    # pool events
    pool_events = log.of(PoolStarted | PoolStopping | PoolStopped)
    assert [type(e) for e in pool_events] == [PoolStarted, PoolStopping, PoolStopped]
    assert pool_events[0].workers == ("w",)
    assert pool_events[2].not_stopped == ()
    everything = log.snapshot()
    assert everything.index(pool_events[1]) > everything.index(events[-1])  # stop came after the finish


def test_listener_sees_the_deferral_and_exhaustion(harness) -> None:
    log = EventLog()
    pool = harness.pool(failing("sync", "w"), deferred_start_threshold=0.01, listeners=[log])
    pool.start()
    assert pool.wait(5)
    events = log.worker_events("w")
    assert [type(e) for e in events] == [
        WorkerDeferred,
        AttemptStarted,
        AttemptFailed,
        AttemptsExhausted,
        WorkerFinished,
    ]
    deferred = events[0]
    assert deferred.delay == 0.01
    assert deferred.status is WorkerStatus.DEFERRED
    assert deferred.execution_id == events[1].execution_id  # the deferral carries attempt 1's id
    assert events[3].record.message == "max execution attempts reached"
    assert events[4].status is WorkerStatus.ERROR


def test_add_listener(harness) -> None:
    log = EventLog()
    pool = harness.pool(FnWorker("w"), log=False)
    pool.add_listener(log)
    assert pool.listeners == (log,)
    pool.start()
    assert pool.wait(5)
    assert [type(e) for e in log.worker_events("w")] == [AttemptStarted, AttemptSucceeded, WorkerFinished]
    with pytest.raises(TypeError):
        pool.add_listener("not callable")  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", KINDS)
class Picky(EventLog):
    """An event log that declares the events it handles."""

    def __init__(self, event_types: object) -> None:
        super().__init__()
        self.event_types = event_types


@pytest.mark.parametrize("kind", KINDS)
def test_a_listener_declaring_event_types_gets_those_only(harness, kind: str) -> None:
    failures = Picky({AttemptFailed, PoolStopped})
    reported = Picky([ReportedEvent])  # a union counts as its members
    everything = EventLog()
    pool = harness.pool(
        failing(kind, "w", succeed_at=2), max_executions_attempts=2, listeners=[failures, reported, everything]
    )
    pool.start()
    assert pool.wait(5)
    assert pool.stop(5) == []
    assert [type(e) for e in failures.snapshot()] == [AttemptFailed, PoolStopped]
    assert [type(e) for e in reported.snapshot()] == [
        AttemptStarted,
        AttemptFailed,
        WorkerRestarting,
        AttemptStarted,
        AttemptSucceeded,
    ]
    assert {WorkerFinished, PoolStarted, PoolStopping, PoolStopped} <= {type(e) for e in everything.snapshot()}


@pytest.mark.parametrize(
    ("event_types", "named"),
    [
        ("AttemptFailed", "a collection of event classes"),
        (AttemptFailed, "a collection of event classes"),
        (42, "a collection of event classes"),
        ([AttemptFailed, ValueError], "ValueError"),
        ({"AttemptFailed"}, "'AttemptFailed'"),
    ],
)
def test_invalid_event_types_are_refused_when_the_listener_is_added(event_types: object, named: str) -> None:
    pool = WorkerPool()
    with pytest.raises(TypeError, match="event_types") as raised:
        pool.add_listener(Picky(event_types))
    assert named in str(raised.value)
    assert "AttemptFailed" in str(raised.value) or "e.g." in str(raised.value)  # it shows what is accepted
    with pytest.raises(TypeError, match="event_types"):
        WorkerPool(listeners=[Picky(event_types)])


@pytest.mark.parametrize("kind", KINDS)
def test_a_raising_listener_breaks_nothing(harness, kind: str) -> None:
    calls: list[str] = []

    def broken(event) -> None:
        calls.append(type(event).__name__)
        raise RuntimeError("listener is broken")

    log = EventLog()
    pool = harness.pool(failing(kind, "w", succeed_at=2), max_executions_attempts=2, listeners=[broken, log])
    with collect_logs() as logs:
        pool.start()
        assert pool.wait(5)
        assert pool.stop(5) == []
    execution = pool.execution("w")
    assert execution.status is WorkerStatus.SUCCESS
    assert messages(execution)[-1] == "stopping execution attempt 2/2 with success"
    # the broken listener was called for everything, and the next listener still got everything
    assert calls.count("AttemptStarted") == 2
    assert [type(e) for e in log.worker_events("w")][-1] is WorkerFinished
    failures = logs.matching("listener", level=logging.ERROR)
    assert failures, "a failing listener must be logged"
    assert all(r.exc_info and r.exc_info[0] is RuntimeError for r in failures)


def test_an_object_listener_unhashable_and_failing_is_named_in_the_log(harness) -> None:
    @dataclasses.dataclass  # eq=True: instances are unhashable
    class Strict:
        seen: list[str] = dataclasses.field(default_factory=list)

        def __call__(self, event) -> None:
            self.seen.append(type(event).__name__)
            if isinstance(event, AttemptStarted):
                raise RuntimeError("strict listener")

    strict = Strict()
    pool = harness.pool(FnWorker("w"), listeners=[strict], log=False)
    with collect_logs() as logs:
        pool.start()
        assert pool.wait(5)
    assert pool.listeners == (strict,)
    assert strict.seen[:3] == ["PoolStarted", "AttemptStarted", "AttemptSucceeded"]
    (failure,) = logs.matching("failed on AttemptStarted", level=logging.ERROR)
    assert failure.getMessage() == f"worker pool listener {strict!r} failed on AttemptStarted"


def test_a_listener_runs_in_the_thread_of_the_worker(harness) -> None:
    threads: dict[str, str] = {}

    def listener(event) -> None:
        if isinstance(event, AttemptSucceeded):
            threads[event.worker] = threading.current_thread().name

    seen: dict[str, str] = {}

    def body(ctx) -> None:
        seen["w"] = threading.current_thread().name

    pool = harness.pool(FnWorker("w", body), listeners=[listener])
    pool.start()
    assert pool.wait(5)
    assert threads["w"] == seen["w"]
    assert seen["w"] != threading.current_thread().name


# -- attempt hooks -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_attempt_hooks_wrap_each_attempt_and_see_the_exception(harness, kind: str) -> None:
    trail: list[tuple] = []
    error = ValueError("attempt 1 fails")

    @contextlib.contextmanager
    def hook(ctx):
        trail.append(("enter", ctx.attempt, ctx_worker_name(), threading.current_thread().name))
        try:
            yield
        except BaseException as exc:
            trail.append(("exit", ctx.attempt, exc))
            raise
        trail.append(("exit", ctx.attempt, None))

    if kind == "sync":

        def body(ctx) -> None:
            trail.append(("run", ctx.attempt, threading.current_thread().name))
            if ctx.attempt == 1:
                raise error

        worker = FnWorker("w", body)
    else:

        async def abody(ctx) -> None:
            trail.append(("run", ctx.attempt, threading.current_thread().name))
            await asyncio.sleep(0)
            if ctx.attempt == 1:
                raise error

        worker = AsyncFnWorker("w", abody)
    pool = harness.pool(worker, max_executions_attempts=2, attempt_hooks=[hook])
    pool.start()
    assert pool.wait(5)
    thread = trail[1][2]
    assert trail == [
        ("enter", 1, "w", thread),
        ("run", 1, thread),
        ("exit", 1, error),
        ("enter", 2, "w", thread),
        ("run", 2, thread),
        ("exit", 2, None),
    ]
    assert pool.execution("w").status is WorkerStatus.SUCCESS


def test_attempt_hooks_nest_in_order(harness) -> None:
    trail: list[str] = []

    def make(label: str):
        @contextlib.contextmanager
        def hook(ctx):
            trail.append(f"enter {label}")
            yield
            trail.append(f"exit {label}")

        return hook

    pool = harness.pool(FnWorker("w", lambda ctx: trail.append("run")), attempt_hooks=[make("a"), make("b")])
    pool.start()
    assert pool.wait(5)
    assert trail == ["enter a", "enter b", "run", "exit b", "exit a"]


def test_a_failing_hook_fails_the_attempt_not_the_pool(harness) -> None:
    @contextlib.contextmanager
    def hook(ctx):
        if ctx.attempt == 1:
            raise ConnectionError("database unreachable")
        yield

    worker = FnWorker("w")
    pool = harness.pool(worker, max_executions_attempts=2, attempt_hooks=[hook])
    pool.start()
    assert pool.wait(5)
    execution = pool.execution("w")
    assert execution.has_event("stopping execution attempt 1/2 with error: database unreachable")
    assert execution.status is WorkerStatus.SUCCESS
    assert worker.calls == 1  # attempt 1 never reached run()


def test_attempt_hooks_must_be_callable() -> None:
    with pytest.raises(TypeError):
        WorkerPool(attempt_hooks=[object()])  # type: ignore[list-item]


def test_duration_of_an_attempt(harness) -> None:
    log = EventLog()
    pool = harness.pool(FnWorker("w", lambda ctx: time.sleep(0.05)), listeners=[log])  # the subject is duration
    pool.start()
    assert pool.wait(5)
    (succeeded,) = log.of(AttemptSucceeded, "w")
    assert 0.04 <= succeeded.duration < 5
