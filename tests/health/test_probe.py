"""Health probe and the one health rule: unknown, exhausted (the field), silent, or error while stopping."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from typing import Any

import pytest

import django_workers
from django_workers.core import Backoff, WorkerContext, WorkerPool, WorkerStatus
from django_workers.health import rule
from django_workers.health.rule import EXHAUSTED, NOT_STARTED, STOPPED_IN_ERROR, problem
from django_workers.probe import ProbeResult, WorkerProbe
from tests.support import FnWorker, Harness, wait_for

#: Long enough that a worker sits in error between two attempts for the whole test.
LONG_BACKOFF = Backoff(initial=600, maximum=600, jitter=0)


class Meltdown(BaseException):
    """A non-Exception: the pool recovers it as a panic."""


def always(exc: Callable[[], BaseException]) -> Callable[[WorkerContext], None]:
    def body(ctx: WorkerContext) -> None:
        raise exc()

    return body


def until_cancelled(inside: threading.Event) -> Callable[[WorkerContext], None]:
    def body(ctx: WorkerContext) -> None:
        inside.set()
        while not ctx.sleep(60):
            pass

    return body


def check(pool: WorkerPool) -> ProbeResult:
    return WorkerProbe(pool).check()


def test_the_result_is_a_frozen_dataclass() -> None:
    result = ProbeResult(True, "a: running")
    assert (result.success, result.message) == (True, "a: running")
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.success = False  # type: ignore[misc]


def test_a_pool_without_workers_is_healthy(harness: Harness) -> None:
    pool = harness.pool()
    assert check(pool) == ProbeResult(True, "")
    pool.start()
    assert check(pool) == ProbeResult(True, "")


def test_workers_not_started_yet_are_unknown_hence_unhealthy(harness: Harness) -> None:
    pool = harness.pool(FnWorker("a"), FnWorker("b"))
    assert check(pool) == ProbeResult(False, "a: unknown, b: unknown")


def test_deferred_and_running_workers_are_healthy(harness: Harness) -> None:
    inside = threading.Event()
    pool = harness.pool(FnWorker("runner", until_cancelled(inside)))
    pool.register(FnWorker("later"), deferred_start_threshold=60)
    pool.start()
    assert inside.wait(10)
    assert check(pool) == ProbeResult(True, "runner: running, later: deferred")
    assert pool.stop(5) == []
    # Cancelled by stop(): a clean end; the deferred worker never started.
    assert check(pool) == ProbeResult(True, "runner: success, later: deferred")


def test_a_transient_error_between_attempts_is_healthy(harness: Harness) -> None:
    pool = harness.pool(
        FnWorker("flaky", always(lambda: ValueError("boom"))), max_executions_attempts=3, restart_backoff=LONG_BACKOFF
    )
    pool.start()
    wait_for(lambda: pool.execution("flaky").has_event("restarting after error"))
    assert pool.execution("flaky").status is WorkerStatus.ERROR
    assert check(pool) == ProbeResult(True, "flaky: error")
    # Once the pool is stopped nothing restarts: the error is final.
    assert pool.stop(5) == []
    assert check(pool) == ProbeResult(False, "flaky: error")


def test_unlimited_attempts_never_exhaust(harness: Harness) -> None:
    pool = harness.pool(
        FnWorker("forever", always(lambda: ValueError("boom"))), max_executions_attempts=0, restart_backoff=LONG_BACKOFF
    )
    pool.start()
    wait_for(lambda: pool.execution("forever").has_event("restarting after error"))
    assert check(pool) == ProbeResult(True, "forever: error")


@pytest.mark.parametrize("exc", [lambda: ValueError("boom"), Meltdown], ids=["error", "panic"])
def test_exhausted_attempts_are_unhealthy(harness: Harness, exc: Any) -> None:
    pool = harness.pool(FnWorker("doomed", always(exc)), max_executions_attempts=2)
    pool.start()
    assert pool.wait(10)
    assert pool.execution("doomed").has_event("max execution attempts reached")
    assert check(pool) == ProbeResult(False, "doomed: error")


def test_a_single_attempt_that_failed_is_exhausted(harness: Harness) -> None:
    pool = harness.pool(FnWorker("once", always(lambda: RuntimeError("no"))))  # default: 1 attempt
    pool.start()
    assert pool.wait(10)
    assert check(pool) == ProbeResult(False, "once: error")


def test_exhaustion_is_the_field_not_the_event_text(harness: Harness) -> None:
    pool = harness.pool(FnWorker("doomed", always(lambda: ValueError("boom"))), max_executions_attempts=2)
    pool.start()
    assert pool.wait(10)
    execution = pool.execution("doomed")
    assert execution.exhausted
    # As if the history bound had dropped every event: the field tells it.
    assert problem(dataclasses.replace(execution, events=()), stopping=False) == EXHAUSTED
    # The event's text alone decides nothing: a snapshot without the field is not exhausted...
    assert execution.has_event("max execution attempts reached")
    assert problem(dataclasses.replace(execution, exhausted=False), stopping=False) == ""
    # ...unless the pool is stopping (nothing restarts then).
    assert problem(dataclasses.replace(execution, exhausted=False), stopping=True) == STOPPED_IN_ERROR
    assert problem(dataclasses.replace(execution, status=WorkerStatus.SUCCESS), stopping=True) == ""


def test_an_error_that_is_not_exhausted_is_healthy(harness: Harness) -> None:
    pool = harness.pool(
        FnWorker("flaky", always(lambda: ValueError("boom"))), max_executions_attempts=3, restart_backoff=LONG_BACKOFF
    )
    pool.start()
    wait_for(lambda: pool.execution("flaky").has_event("restarting after error"))
    execution = pool.execution("flaky")
    assert (execution.status, execution.exhausted) == (WorkerStatus.ERROR, False)
    assert problem(execution, stopping=False) == ""
    # Not the attempt counter either: only the supervisor decides that the attempts are exhausted.
    assert problem(dataclasses.replace(execution, current_execution_attempt=3), stopping=False) == ""
    assert check(pool) == ProbeResult(True, "flaky: error")


def test_the_rule_names_each_problem(harness: Harness) -> None:
    pool = harness.pool(FnWorker("a"))
    execution = pool.execution("a")
    assert problem(execution, stopping=False) == NOT_STARTED == "not started"
    silent = dataclasses.replace(execution, status=WorkerStatus.RUNNING, silent=True, max_silence=2.5)
    assert problem(silent, stopping=False) == "silent (no heartbeat for 2.5 seconds)"
    assert rule.probe_item("a", silent) == "a: running (silent)"
    running = dataclasses.replace(execution, status=WorkerStatus.RUNNING)
    assert problem(running, stopping=True) == ""  # stopping is not a problem in itself
    assert EXHAUSTED == "attempts exhausted"


@pytest.mark.parametrize(
    ("status", "attempt", "max_attempts", "expected"),
    [
        ("error", 3, 3, "attempts exhausted"),
        ("error", 4, 3, "attempts exhausted"),
        ("error", 2, 3, ""),  # a restart is pending
        ("error", 9, 0, ""),  # unlimited attempts never exhaust
        ("success", 3, 3, ""),
        ("running", 3, 3, ""),
    ],
)
def test_the_rule_of_a_recorded_attempt(status: str, attempt: int, max_attempts: int, expected: str) -> None:
    assert rule.recorded_problem(status, attempt, max_attempts) == expected


def test_success_is_healthy(harness: Harness) -> None:
    attempts = 0

    def body(ctx: WorkerContext) -> None:
        nonlocal attempts
        attempts = ctx.attempt
        if ctx.attempt < 3:
            raise ValueError("not yet")

    pool = harness.pool(FnWorker("done", body), max_executions_attempts=3)
    pool.start()
    assert pool.wait(10)
    assert attempts == 3
    assert check(pool) == ProbeResult(True, "done: success")


def test_one_exhausted_worker_makes_the_pool_unhealthy_in_registration_order(
    harness: Harness,
) -> None:
    inside = threading.Event()
    pool = harness.pool(
        FnWorker("zeta", until_cancelled(inside)),
        FnWorker("alpha", always(lambda: ValueError("boom"))),
        FnWorker("mid"),
        cls=django_workers.WorkerPool,
        log=False,
    )
    pool.start()
    assert inside.wait(10)
    wait_for(lambda: pool.execution("alpha").has_event("max execution attempts reached"))
    wait_for(lambda: pool.execution("mid").status is WorkerStatus.SUCCESS)
    assert check(pool) == ProbeResult(False, "zeta: running, alpha: error, mid: success")


def test_a_worker_registered_after_start_is_probed_too(harness: Harness) -> None:
    pool = harness.pool(FnWorker("first"))
    pool.start()
    pool.register(FnWorker("late", always(lambda: ValueError("boom"))))
    assert pool.wait(10)
    assert check(pool) == ProbeResult(False, "first: success, late: error")


# -- paused ------------------------------------------------------------------------------------------


def test_a_paused_worker_is_healthy_and_says_it_is_paused(harness: Harness) -> None:
    pool = harness.pool(FnWorker("held"), FnWorker("gave-up", always(lambda: ValueError("x"))))
    pool.pause("held", by="ops")
    pool.start()
    assert pool.wait(5)
    result = WorkerProbe(pool).check()
    assert result == ProbeResult(False, "held: paused, gave-up: error")

    pool.pause("gave-up", by="ops")  # an exhausted worker held by an operator is no longer a problem
    result = WorkerProbe(pool).check()
    assert result == ProbeResult(True, "held: paused, gave-up: paused")
    assert pool.execution("gave-up").exhausted, "the fact stays; the status says it is held"
