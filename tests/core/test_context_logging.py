"""Worker context accessors, correlated log records, the log filter, and contextvars."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading

import pytest

from django_workers import WorkerLogFilter
from django_workers.core import (
    WorkerContext,
    WorkerStatus,
    ctx_logger,
    ctx_worker_execution_id,
    ctx_worker_name,
    current_context,
)
from tests.support import AsyncFnWorker, FnWorker, RecordCollector, collect_logs

KINDS = ["sync", "async"]

CALLER_VALUE: contextvars.ContextVar[str] = contextvars.ContextVar("caller_value", default="unset")
PER_ATTEMPT: contextvars.ContextVar[str | None] = contextvars.ContextVar("per_attempt", default=None)


def make_worker(kind: str, name: str, body) -> FnWorker | AsyncFnWorker:
    """A worker running the sync ``body(ctx)``: in its thread, or inside a coroutine on the loop."""
    if kind == "sync":
        return FnWorker(name, body)

    async def abody(ctx):
        await asyncio.sleep(0)
        return body(ctx)

    return AsyncFnWorker(name, abody)


# -- accessors ------------------------------------------------------------------------------------


def test_accessors_outside_a_worker() -> None:
    assert ctx_worker_name() == ""
    assert ctx_worker_execution_id() == ""
    assert ctx_logger() is logging.getLogger("django_workers")
    assert current_context() is None


@pytest.mark.parametrize("kind", KINDS)
def test_accessors_inside_a_worker(harness, kind: str) -> None:
    seen: dict[str, object] = {}

    def body(ctx: WorkerContext) -> None:
        seen.update(
            ctx=ctx,
            cancelled=ctx.cancelled,
            name=ctx_worker_name(),
            name_ctx=ctx_worker_name(ctx),
            id=ctx_worker_execution_id(),
            id_ctx=ctx_worker_execution_id(ctx),
            logger=ctx_logger(),
            logger_ctx=ctx_logger(ctx),
            current=current_context(),
        )

    pool = harness.pool(make_worker(kind, "accessor-worker", body), max_executions_attempts=4)
    pool.start()
    assert pool.wait(5)
    ctx = seen["ctx"]
    assert isinstance(ctx, WorkerContext)
    execution = pool.execution("accessor-worker")
    assert seen["name"] == seen["name_ctx"] == ctx.worker_name == "accessor-worker"
    assert seen["id"] == seen["id_ctx"] == ctx.execution_id == execution.id
    assert seen["current"] is ctx
    assert seen["logger"] is seen["logger_ctx"] is ctx.logger
    assert ctx.attempt == 1
    assert seen["cancelled"] is False
    assert ctx.cancelled is False  # nobody stopped the pool yet
    assert pool.stop(5) == []
    assert ctx.cancelled is True
    # back outside: nothing leaked into the caller's context
    assert ctx_worker_name() == ""
    assert ctx_worker_execution_id() == ""
    assert current_context() is None
    # with an explicit context, the accessors work anywhere
    assert ctx_worker_name(ctx) == "accessor-worker"
    assert ctx_worker_execution_id(ctx) == execution.id


def test_accessors_follow_each_attempt(harness) -> None:
    seen: list[tuple[str, str, int]] = []

    def body(ctx) -> None:
        seen.append((ctx_worker_name(), ctx_worker_execution_id(), ctx.attempt))
        if ctx.attempt < 3:
            raise RuntimeError("again")

    pool = harness.pool(FnWorker("w", body), max_executions_attempts=3)
    pool.start()
    assert pool.wait(5)
    assert [s[2] for s in seen] == [1, 2, 3]
    assert len({s[1] for s in seen}) == 3
    assert seen[-1][1] == pool.execution("w").id


def test_two_workers_see_their_own_context(harness) -> None:
    seen: dict[str, tuple[str, str]] = {}

    def body(ctx) -> None:
        seen[ctx.worker_name] = (ctx_worker_name(), ctx_worker_execution_id())

    pool = harness.pool(
        make_worker("sync", "s1", body),
        make_worker("sync", "s2", body),
        make_worker("async", "a1", body),
        make_worker("async", "a2", body),
    )
    pool.start()
    assert pool.wait(5)
    for name in ("s1", "s2", "a1", "a2"):
        assert seen[name] == (name, pool.execution(name).id)


# -- log records -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_ctx_logger_records_carry_the_worker_attributes(harness, kind: str) -> None:
    ids: list[str] = []

    def body(ctx) -> None:
        ids.append(ctx.execution_id)
        ctx_logger().info("hello %s", "there")
        ctx_logger(ctx).warning("with extra", extra={"order": 7})
        ctx.logger.error("through the property")
        if ctx.attempt == 1:
            raise RuntimeError("retry")

    pool = harness.pool(make_worker(kind, "logging-worker", body), max_executions_attempts=2)
    with collect_logs() as logs:
        pool.start()
        assert pool.wait(5)
    mine = [r for r in logs.records if r.getMessage() in {"hello there", "with extra", "through the property"}]
    assert len(mine) == 6
    for record in mine:
        assert record.name == "django_workers"
        assert record.worker == "logging-worker"
    assert [r.workerExecutionID for r in mine] == [ids[0]] * 3 + [ids[1]] * 3  # no stale id after restart
    assert [r.order for r in mine if r.getMessage() == "with extra"] == [7, 7]
    assert {r.levelno for r in mine} == {logging.INFO, logging.WARNING, logging.ERROR}


def test_a_caller_cannot_override_the_worker_attributes_by_accident(harness) -> None:
    def body(ctx) -> None:
        ctx_logger().info("spoof", extra={"worker": "somebody-else"})

    pool = harness.pool(FnWorker("real", body))
    with collect_logs() as logs:
        pool.start()
        assert pool.wait(5)
    (record,) = logs.matching("spoof")
    assert record.worker == "real"


@pytest.mark.parametrize("kind", KINDS)
def test_pool_records_about_a_worker_carry_its_attributes(harness, kind: str) -> None:
    def raising_in_the_worker_body(ctx) -> None:
        if ctx.attempt == 1:
            raise ValueError("first attempt fails")

    pool = harness.pool(
        make_worker(kind, "w", raising_in_the_worker_body),
        max_executions_attempts=2,
        deferred_start_threshold=0.01,
    )
    with collect_logs() as logs:
        pool.start()
        assert pool.wait(5)
        assert pool.stop(5) == []
    execution = pool.execution("w")
    by_message = {}
    for record in logs.records:
        message = record.getMessage()
        for event in execution.events:
            if message.startswith(event.message):
                by_message[event.message] = record
                assert record.worker == "w", message
                assert record.workerExecutionID == event.execution_id, message
    assert set(by_message) == {event.message for event in execution.events}
    failed = by_message["stopping execution attempt 1/2 with error: first attempt fails"]
    assert failed.levelno == logging.ERROR
    assert failed.exc_info is not None and failed.exc_info[0] is ValueError
    formatted = logging.Formatter().format(failed)
    assert "raising_in_the_worker_body" in formatted
    assert "Traceback (most recent call last)" in formatted
    assert by_message["restarting after error"].levelno == logging.WARNING
    # the records about the pool as a whole are there too
    assert any("worker pool started" in r.getMessage() for r in logs.records)
    assert any("worker pool stopped" in r.getMessage() for r in logs.records)


def test_pool_logging_can_be_turned_off(harness) -> None:
    pool = harness.pool(FnWorker("w"), log=False)
    with collect_logs() as logs:
        pool.start()
        assert pool.wait(5)
    assert logs.records == []


@pytest.mark.parametrize("kind", KINDS)
def test_pool_logging_follows_a_level_changed_while_running(harness, kind: str) -> None:
    # The logging listener reads its logger's level at every event: a change takes effect at the next one.
    logger = logging.getLogger("django_workers")

    def turn_info_on(ctx) -> None:
        if ctx.attempt == 2:
            logger.setLevel(logging.INFO)
        raise ValueError(f"boom {ctx.attempt}")

    async def aturn_info_on(ctx) -> None:
        turn_info_on(ctx)

    worker = FnWorker("w", turn_info_on) if kind == "sync" else AsyncFnWorker("w", aturn_info_on)
    pool = harness.pool(worker, max_executions_attempts=3)
    with collect_logs(level=logging.CRITICAL) as logs:
        pool.start()
        assert pool.wait(5)
    logged = [r.getMessage() for r in logs.records]
    assert logged == [
        "stopping execution attempt 2/3 with error: boom 2",
        "restarting after error (in 0.000 seconds)",
        "starting execution attempt 3/3",
        "stopping execution attempt 3/3 with error: boom 3",
        "max execution attempts reached",
    ]
    assert len(pool.execution("w").events) == 9  # the report has every event, logged or not


def test_workers_left_running_at_stop_are_logged_at_error_even_when_info_is_off(harness) -> None:
    gate = harness.gate()
    entered = threading.Event()

    def body(ctx) -> None:
        entered.set()
        gate.wait()  # ignores the stop

    pool = harness.pool(FnWorker("stuck", body))
    with collect_logs(level=logging.WARNING) as logs:
        pool.start()
        assert entered.wait(5)
        assert pool.stop(0.05) == ["stuck"]
    summary = logs.matching("worker pool stopped; still running: stuck", level=logging.ERROR)
    assert len(summary) == 1
    assert not logs.matching("worker pool stopped", level=logging.INFO)
    gate.set()


def test_the_library_installs_only_a_null_handler() -> None:
    handlers = [h for h in logging.getLogger("django_workers").handlers if not isinstance(h, RecordCollector)]
    assert handlers
    assert all(isinstance(h, logging.NullHandler) for h in handlers)


# -- the filter for any logger -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_log_filter_stamps_third_party_records_inside_a_worker(harness, kind: str) -> None:
    ids: list[str] = []

    def body(ctx) -> None:
        ids.append(ctx.execution_id)
        logging.getLogger("thirdparty.client").warning("calling the API")

    pool = harness.pool(make_worker(kind, "api-poller", body))
    with collect_logs("thirdparty.client", filters=(WorkerLogFilter(),)) as logs:
        pool.start()
        assert pool.wait(5)
        logging.getLogger("thirdparty.client").warning("outside any worker")
    inside, outside = logs.matching("calling the API"), logs.matching("outside any worker")
    assert len(inside) == 1 and len(outside) == 1
    assert (inside[0].worker, inside[0].workerExecutionID) == ("api-poller", ids[0])
    assert (outside[0].worker, outside[0].workerExecutionID) == ("", "")
    formatted = logging.Formatter("%(worker)s|%(workerExecutionID)s|%(message)s").format(inside[0])
    assert formatted == f"api-poller|{ids[0]}|calling the API"


def test_log_filter_keeps_attributes_already_on_the_record(harness) -> None:
    def body(ctx) -> None:
        logging.getLogger("thirdparty.client").warning("explicit", extra={"worker": "explicit-name"})
        ctx_logger().warning("from the worker logger")

    pool = harness.pool(FnWorker("w", body))
    log_filter = WorkerLogFilter()
    with (
        collect_logs("thirdparty.client", filters=(log_filter,)) as third,
        collect_logs("django_workers", filters=(log_filter,)) as ours,
    ):
        pool.start()
        assert pool.wait(5)
    (explicit,) = third.matching("explicit")
    assert explicit.worker == "explicit-name"
    assert explicit.workerExecutionID == ""
    (own,) = ours.matching("from the worker logger")
    assert (own.worker, own.workerExecutionID) == ("w", pool.execution("w").id)


def test_log_filter_never_drops_a_record() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "msg", None, None)
    assert WorkerLogFilter().filter(record)
    assert record.worker == "" and record.workerExecutionID == ""


# -- contextvars -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_a_context_variable_set_by_the_caller_is_visible_in_the_worker(harness, kind: str) -> None:
    seen: list[str] = []
    pool = harness.pool(make_worker(kind, "w", lambda ctx: seen.append(CALLER_VALUE.get())), max_executions_attempts=1)
    token = CALLER_VALUE.set("request-42")
    try:
        pool.start()
    finally:
        CALLER_VALUE.reset(token)
    assert pool.wait(5)
    assert seen == ["request-42"]


def test_each_sync_attempt_gets_a_fresh_copy_of_the_context(harness) -> None:
    seen: list[tuple[str | None, str]] = []

    def body(ctx) -> None:
        seen.append((PER_ATTEMPT.get(), CALLER_VALUE.get()))
        PER_ATTEMPT.set(f"set by attempt {ctx.attempt}")
        CALLER_VALUE.set("overwritten by the worker")
        if ctx.attempt < 3:
            raise RuntimeError("again")

    pool = harness.pool(FnWorker("w", body), max_executions_attempts=3)
    token = CALLER_VALUE.set("from the caller")
    try:
        pool.start()
        assert pool.wait(5)
        assert CALLER_VALUE.get() == "from the caller"  # the worker did not write into the caller's context
    finally:
        CALLER_VALUE.reset(token)
    assert seen == [(None, "from the caller")] * 3
    assert PER_ATTEMPT.get() is None
    assert pool.execution("w").status is WorkerStatus.SUCCESS


def test_a_worker_cannot_change_the_callers_context_async(harness) -> None:
    async def abody(ctx) -> None:
        CALLER_VALUE.set("overwritten by the worker")

    pool = harness.pool(AsyncFnWorker("w", abody))
    pool.start()
    assert pool.wait(5)
    assert CALLER_VALUE.get() == "unset"
