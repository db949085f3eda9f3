"""Every number has a range: values the checks used to accept and that crashed later are refused.

Each value of issue 11, item 6 has a regression test here: the system checks report it (``E003``,
with the range in the hint), the command options refuse it with a ``CommandError``, and the Python
API (``WorkerPool``, ``register()``, ``Backoff``) raises ``ValueError`` at once instead of an
``OverflowError`` later in a worker's thread. ``ctx.sleep(float("inf"))`` waits until the stop;
``ctx.sleep(nan)`` is a ``ValueError``. The ranges are stated once, in
``django_workers.settings.values`` (and ``django_workers.core.limits`` for the engine), and
justified in docs/settings.md.
"""

from __future__ import annotations

import asyncio
import math
import re
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.core import checks
from django.core.management import call_command
from django.core.management.base import CommandError

from django_workers import Backoff, WorkerPool, WorkerStatus
from django_workers import settings as conf
from django_workers.core.context import WorkerContext
from django_workers.settings import values
from tests.scenarios.workers_fixtures import PATH
from tests.support import FnWorker, Harness, wait_for

CLASSIC = f"{PATH}.ClassicWorker"
HUGE_INT = 10**400  # more digits than float() converts (OverflowError) or repr() prints by default


def messages(workers: dict[str, Any]) -> list[checks.CheckMessage]:
    return list(conf.validate_settings({"WORKERS": [CLASSIC], **workers}, databases={"default": {}}).messages)


def only_message(workers: dict[str, Any]) -> checks.CheckMessage:
    found = messages(workers)
    assert len(found) == 1, "\n".join(map(str, found))
    return found[0]


# -- the settings: each value of the issue is an E003 naming the bound, the hint naming the range ----------


@pytest.mark.parametrize(
    ("workers", "text", "hint"),
    [
        (
            {"HISTORY_SIZE": 2**70},
            "WORKERS['HISTORY_SIZE'] must be <= 1000000, got 1180591620717411303424.",
            "Use a value from 1 to 1000000.",
        ),
        (
            {"STOP_TIMEOUT": 1e300},
            "WORKERS['STOP_TIMEOUT'] must be <= 86400 seconds (a day), got 1e+300.",
            "Use a value more than 0 and at most 86400 seconds (a day).",
        ),
        (
            {"DEFERRED_START_THRESHOLD": 1e300},
            "WORKERS['DEFERRED_START_THRESHOLD'] must be <= 86400 seconds (a day), got 1e+300.",
            "Use a value from 0 to 86400 seconds (a day).",
        ),
        (
            {"RESTART_BACKOFF": {"MAXIMUM": 1e300}},
            "Backoff maximum must be <= 86400 seconds (a day), got 1e+300",
            "MAXIMUM from INITIAL to 86400",
        ),
        (
            {"RESTART_BACKOFF": {"INITIAL": 1e300, "MAXIMUM": 1e300}},
            "Backoff initial must be <= 86400 seconds (a day), got 1e+300",
            "Use INITIAL from 0 (restart at once) to 86400 seconds (a day)",
        ),
        (
            {"RESTART_BACKOFF": {"MULTIPLIER": 1e300}},
            "Backoff multiplier must be <= 100, got 1e+300",
            "MULTIPLIER from 1 to 100",
        ),
        (
            {"HISTORY": {"RETENTION_DAYS": 10**6}},
            "WORKERS['HISTORY']['RETENTION_DAYS'] must be <= 36500 days (a century), got 1000000.",
            "Use a value from 1 to 36500 days (a century).",
        ),
        (
            {"HISTORY": {"HEARTBEAT_INTERVAL": 1e300}},
            "WORKERS['HISTORY']['HEARTBEAT_INTERVAL'] must be <= 3600 seconds (an hour), got 1e+300.",
            "Use a value from 0.1 to 3600 seconds (an hour).",
        ),
        (
            {"HISTORY": {"HEARTBEAT_INTERVAL": 1e-9}},
            "WORKERS['HISTORY']['HEARTBEAT_INTERVAL'] must be >= 0.1 seconds, got 1e-09.",
            "Use a value from 0.1 to 3600 seconds (an hour).",
        ),
        (
            {"MAX_EXECUTIONS_ATTEMPTS": 2**64},
            "WORKERS['MAX_EXECUTIONS_ATTEMPTS'] must be <= 1000000, got 18446744073709551616.",
            "0 means unlimited attempts",
        ),
        (
            {"HISTORY": {"ORPHAN_GRACE": 1e300}},
            "WORKERS['HISTORY']['ORPHAN_GRACE'] must be <= 86400 seconds (a day), got 1e+300.",
            "Use a value more than 0 and at most 86400 seconds (a day).",
        ),
        (
            {"HISTORY": {"BUFFER_SIZE": 2**70}},
            "WORKERS['HISTORY']['BUFFER_SIZE'] must be <= 1000000, got 1180591620717411303424.",
            "Use a value from 1 to 1000000.",
        ),
        (
            {"HISTORY": {"BATCH_SIZE": 10**6}},
            "WORKERS['HISTORY']['BATCH_SIZE'] must be <= 10000, got 1000000.",
            "Use a value from 1 to 10000.",
        ),
        (
            {"WORKERS": [{"CLASS": CLASSIC, "DEFERRED_START_THRESHOLD": 1e300}]},
            "WORKERS['WORKERS'][0]['DEFERRED_START_THRESHOLD'] must be <= 86400 seconds (a day), got 1e+300.",
            "Use a value from 0 to 86400 seconds (a day).",
        ),
        (
            {"WORKERS": [{"CLASS": CLASSIC, "MAX_SILENCE": 1e300}]},
            "WORKERS['WORKERS'][0]['MAX_SILENCE'] must be <= 86400 seconds (a day), got 1e+300.",
            "Use a value more than 0 and at most 86400 seconds (a day).",
        ),
        (
            {"WORKERS": [{"CLASS": CLASSIC, "MAX_EXECUTIONS_ATTEMPTS": HUGE_INT}]},
            "WORKERS['WORKERS'][0]['MAX_EXECUTIONS_ATTEMPTS'] must be <= 1000000, got an int of 1329 bits.",
            "Use a value from 0 to 1000000.",
        ),
        (
            {"STOP_TIMEOUT": HUGE_INT},
            "WORKERS['STOP_TIMEOUT'] must be <= 86400 seconds (a day), got an int of 1329 bits.",
            "at most 86400 seconds (a day)",
        ),
        (
            {"RESTART_BACKOFF": {"JITTER": -HUGE_INT}},
            "Backoff jitter must be between 0 and 1 inclusive, got a negative int of 1329 bits",
            "JITTER from 0 to 1",
        ),
    ],
)
def test_a_number_beyond_its_range_is_an_error_naming_the_range(workers: dict[str, Any], text: str, hint: str) -> None:
    message = only_message(workers)

    assert message.id == "django_workers.E003"
    assert message.level == checks.ERROR
    assert text in message.msg
    assert hint in message.hint
    assert conf.validate_settings({"WORKERS": [CLASSIC], **workers}).settings is None


@pytest.mark.parametrize(
    "workers",
    [
        {"HISTORY_SIZE": 1_000_000, "MAX_EXECUTIONS_ATTEMPTS": 1_000_000},
        {"STOP_TIMEOUT": 86_400, "DEFERRED_START_THRESHOLD": 86_400.0},
        {"RESTART_BACKOFF": {"INITIAL": 86_400, "MAXIMUM": 86_400, "MULTIPLIER": 100, "JITTER": 1}},
        {"HISTORY": {"RETENTION_DAYS": 36_500, "HEARTBEAT_INTERVAL": 3_600, "ORPHAN_GRACE": 86_400}},
        {"HISTORY": {"BUFFER_SIZE": 1_000_000, "BATCH_SIZE": 10_000}},
        {"STOP_TIMEOUT": 5e-324, "DEFERRED_START_THRESHOLD": -0.0, "MAX_EXECUTIONS_ATTEMPTS": 0},
        {"WORKERS": [{"CLASS": CLASSIC, "MAX_SILENCE": 86_400, "DEFERRED_START_THRESHOLD": 0}]},
    ],
)
def test_the_bounds_themselves_are_accepted(workers: dict[str, Any]) -> None:
    validation = conf.validate_settings({"WORKERS": [CLASSIC], **workers}, databases={"default": {}})
    assert validation.messages == ()
    assert validation.settings is not None


def test_a_heartbeat_interval_below_a_second_is_a_warning_saying_how_often_it_writes() -> None:
    message = only_message({"HISTORY": {"HEARTBEAT_INTERVAL": 0.25}})

    assert message.id == "django_workers.W006"
    assert message.level == checks.WARNING
    assert message.msg == (
        "WORKERS['HISTORY']['HEARTBEAT_INTERVAL'] is 0.25 seconds: each runworkers process writes its node "
        "row to the database 4 times a second."
    )
    assert "Use 1 second or more in production" in message.hint
    assert messages({"HISTORY": {"HEARTBEAT_INTERVAL": 1}}) == []


def test_the_ranges_and_the_new_warning_are_documented() -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "settings.md").read_text()
    assert f"| `{conf.W_FREQUENT_HEARTBEAT}` | warning |" in text
    assert "## Ranges" in text
    for bound in ("86400", "36500", "1000000", "10000", "3600", "0.1"):
        assert f"`{bound}`" in text or f" {bound} " in text, bound


def test_the_ranges_say_what_they_accept() -> None:
    assert values.STOP_TIMEOUT.describe() == "more than 0 and at most 86400 seconds (a day)"
    assert values.HEARTBEAT_INTERVAL.describe() == "from 0.1 to 3600 seconds (an hour)"
    assert values.RETENTION_DAYS.violation(36_501) == "must be <= 36500 days (a century)"
    assert values.RETENTION_DAYS.violation(0) == "must be >= 1 days"
    assert values.ORPHAN_GRACE.violation(0) == "must be > 0 seconds"
    assert values.HISTORY_SIZE.violation(1) is None


# -- the command options -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (("--older-than", "800000"), "--older-than must be <= 36500 days (a century), got '800000'"),
        (("--older-than", "1e300"), "--older-than must be <= 36500 days (a century), got '1e300'"),
        (("--older-than", "1", "--batch-size", "1000000000"), "--batch-size must be an int <= 10000, got '1000000000'"),
        (("--older-than", "1", "--batch-size", "9" * 5000), f"--batch-size must be an int >= 1, got '{'9' * 5000}'"),
    ],
    ids=["older-than", "older-than-1e300", "batch-size", "batch-size-digits"],
)
def test_pruneworkerhistory_refuses_numbers_beyond_their_range(args: tuple[str, ...], error: str) -> None:
    with pytest.raises(CommandError) as raised:
        call_command("pruneworkerhistory", *args, "--database", "default")
    assert str(raised.value) == error


def test_pruneworkerhistory_takes_the_bounds() -> None:
    assert values.parse_number("36500", "--older-than", values.PRUNE_OLDER_THAN) == 36_500.0
    assert values.parse_number("0", "--older-than", values.PRUNE_OLDER_THAN) == 0.0
    assert values.parse_int("10000", "--batch-size", values.PRUNE_BATCH_SIZE) == 10_000


def test_runworkers_refuses_a_stop_timeout_beyond_a_day() -> None:
    # --list: on a build that accepted the value, the command lists the workers and returns.
    with pytest.raises(CommandError, match=r"--stop-timeout must be <= 86400 seconds \(a day\), got '1e300'"):
        call_command("runworkers", "--stop-timeout", "1e300", "--list", "--skip-checks")
    assert values.parse_number("86400", "--stop-timeout") == 86_400.0


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("1e300", "--timeout must be <= 86400 seconds (a day), got '1e300'"),
        ("0", "--timeout must be a number of seconds > 0, got '0'"),
        ("nan", "--timeout must be a number of seconds > 0, got 'nan'"),
        ("-inf", "--timeout must be a number of seconds > 0, got '-inf'"),
    ],
)
def test_parse_number_names_the_bound_crossed(value: str, error: str) -> None:
    with pytest.raises(ValueError) as raised:
        values.parse_number(value, "--timeout", positive=True)
    assert str(raised.value) == error


# -- the Python API: refused at once, not in a worker's thread --------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"stop_timeout": 1e300}, "stop_timeout must be >= 0 and <= 86400 seconds, got 1e+300"),
        ({"deferred_start_threshold": 1e300}, "deferred_start_threshold must be >= 0 and <= 86400 seconds, got 1e+300"),
        ({"deferred_start_threshold": HUGE_INT}, "must be >= 0 and <= 86400 seconds, got an int of 1329 bits"),
        ({"deferred_start_threshold": math.inf}, "deferred_start_threshold must be a finite number of seconds"),
        ({"history_size": 2**70}, "history_size must be >= 1 and <= 1,000,000 (events kept in memory per worker)"),
        ({"max_executions_attempts": 2**64}, "max_executions_attempts must be >= 0 and <= 1,000,000"),
    ],
    ids=["stop_timeout", "deferred", "deferred-huge-int", "deferred-inf", "history_size", "attempts"],
)
def test_worker_pool_refuses_numbers_beyond_the_engine_bounds(kwargs: dict[str, Any], error: str) -> None:
    with pytest.raises(ValueError, match=re.escape(error)):
        WorkerPool(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"deferred_start_threshold": 1e300}, "deferred_start_threshold must be >= 0 and <= 86400 seconds"),
        ({"max_silence": 1e300}, "max_silence must be >= 0 and <= 86400 seconds"),
        ({"max_silence": math.nan}, "max_silence must be a finite number of seconds"),
        ({"max_executions_attempts": HUGE_INT}, "max_executions_attempts must be >= 0 and <= 1,000,000"),
    ],
)
def test_register_refuses_numbers_beyond_the_engine_bounds(kwargs: dict[str, Any], error: str) -> None:
    pool = WorkerPool()
    with pytest.raises(ValueError, match=re.escape(error)):
        pool.register(FnWorker("w"), **kwargs)
    assert pool.names() == []


@pytest.mark.parametrize(
    ("kwargs", "error", "exception"),
    [
        ({"maximum": 1e300}, "Backoff maximum must be <= 86400 seconds (a day), got 1e+300", ValueError),
        ({"initial": 1e300, "maximum": 1e300}, "Backoff initial must be <= 86400 seconds (a day)", ValueError),
        (
            {"initial": HUGE_INT},
            "Backoff initial must be <= 86400 seconds (a day), got an int of 1329 bits",
            ValueError,
        ),
        ({"maximum": -HUGE_INT}, "Backoff maximum (a negative int of 1329 bits) must be >= initial (1.0)", ValueError),
        ({"multiplier": 1e300}, "Backoff multiplier must be <= 100, got 1e+300", ValueError),
        ({"jitter": HUGE_INT}, "Backoff jitter must be between 0 and 1 inclusive, got an int of 1329 bits", ValueError),
        ({"initial": "x" * 10_000}, "Backoff initial must be a number of seconds (int or float), got 'xxxx", TypeError),
    ],
)
def test_backoff_refuses_numbers_beyond_the_engine_bounds(
    kwargs: dict[str, Any], error: str, exception: type[Exception]
) -> None:
    with pytest.raises(exception) as raised:
        Backoff(**kwargs)
    assert str(raised.value).startswith(error)
    assert len(str(raised.value)) < 200  # a huge value is not copied into the message


def test_stop_refuses_a_timeout_beyond_a_day(harness: Harness) -> None:
    pool = harness.pool(FnWorker("w", lambda ctx: ctx.sleep(30)))
    pool.start()
    with pytest.raises(ValueError, match="timeout must be >= 0 and <= 86400 seconds"):
        pool.stop(timeout=1e300)
    assert not pool.stopping  # refused before anything was stopped
    assert pool.stop(timeout=5) == []


# -- ctx.sleep / ctx.asleep ----------------------------------------------------------------------------------


def waiting_in_event_wait(thread: threading.Thread) -> bool:
    """Whether ``thread`` is blocked inside ``threading.Event.wait`` (its stack says so)."""
    frame = sys._current_frames().get(thread.ident or -1)
    while frame is not None:
        if frame.f_code.co_name == "wait" and frame.f_code.co_filename.endswith("threading.py"):
            return True
        frame = frame.f_back
    return False


def context(cancel: threading.Event) -> WorkerContext:
    return WorkerContext("w", "execution-id", 1, 1, cancel)


@pytest.mark.parametrize(
    "seconds", [math.inf, 1e300, threading.TIMEOUT_MAX, HUGE_INT], ids=["inf", "1e300", "TIMEOUT_MAX", "huge-int"]
)
def test_sleep_beyond_the_longest_timed_wait_waits_until_the_stop(seconds: float) -> None:
    cancel = threading.Event()
    ctx = context(cancel)
    outcome: list[object] = []

    def sleeper() -> None:
        try:
            outcome.append(ctx.sleep(seconds))
        except Exception as exc:  # recorded: the assertion below says what it was
            outcome.append(exc)

    thread = threading.Thread(target=sleeper)
    thread.start()
    try:
        wait_for(lambda: outcome or waiting_in_event_wait(thread), what="the sleeper waits")
        assert outcome == []  # neither returned at once nor raised
    finally:
        cancel.set()
        thread.join(5)
    assert outcome == [True]


def test_a_worker_sleeping_forever_is_woken_by_the_stop(harness: Harness) -> None:
    threads: list[threading.Thread] = []

    def body(ctx: WorkerContext) -> bool:
        threads.append(threading.current_thread())
        assert ctx.sleep(float("inf")) is True
        return True

    pool = harness.pool(FnWorker("forever", body))
    pool.start()
    wait_for(lambda: threads and waiting_in_event_wait(threads[0]), what="the worker sleeps")
    assert pool.stop(timeout=5) == []
    execution = pool.execution("forever")
    assert execution.status is WorkerStatus.SUCCESS, execution.last_error


@pytest.mark.parametrize("method", ["sleep", "asleep"])
def test_sleep_refuses_nan(method: str) -> None:
    ctx = context(threading.Event())
    call: Callable[[], object] = (
        (lambda: ctx.sleep(math.nan)) if method == "sleep" else (lambda: asyncio.run(ctx.asleep(math.nan)))
    )
    with pytest.raises(ValueError, match=rf"ctx\.{method}\(\) got NaN seconds; pass a number"):
        call()


@pytest.mark.parametrize("seconds", ["1", None, True, [1]])
def test_sleep_refuses_what_is_not_a_number(seconds: object) -> None:
    ctx = context(threading.Event())
    with pytest.raises(TypeError, match=r"ctx\.sleep\(\) takes a number of seconds"):
        ctx.sleep(seconds)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"ctx\.asleep\(\) takes a number of seconds"):
        asyncio.run(ctx.asleep(seconds))  # type: ignore[arg-type]


@pytest.mark.parametrize("seconds", [-1, -math.inf, -HUGE_INT, 0, -0.0])
def test_a_negative_sleep_waits_zero_seconds(seconds: float) -> None:
    ctx = context(threading.Event())
    assert ctx.sleep(seconds) is False
    assert asyncio.run(ctx.asleep(seconds)) is False


def test_asleep_forever_waits_until_its_task_is_cancelled() -> None:
    ctx = context(threading.Event())

    async def scenario() -> None:
        task = asyncio.create_task(ctx.asleep(math.inf))
        for _ in range(10):
            await asyncio.sleep(0)
        assert not task.done()
        task.cancel()  # what the pool's stop does to the task of an async worker
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())


# -- the engine's and the recorder's own waits, from Python ---------------------------------------


@pytest.mark.parametrize("timeout", [1e300, float("inf"), 10**400])
def test_pool_wait_with_an_endless_timeout_waits_without_one(harness: Harness, timeout: float) -> None:
    gate = harness.gate()
    pool = harness.pool(FnWorker("w", lambda ctx: gate.wait(10)))
    pool.start()
    outcome: list[bool] = []
    waiter = threading.Thread(target=lambda: outcome.append(pool.wait(timeout)))
    waiter.start()
    gate.set()
    waiter.join(10)
    assert outcome == [True], "it waited (no OverflowError) and saw the worker end"


def test_pool_wait_refuses_nan(harness: Harness) -> None:
    pool = harness.pool(FnWorker("w"))
    with pytest.raises(ValueError, match="wait\\(\\) got NaN seconds"):
        pool.wait(float("nan"))


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        (1e300, ValueError, "heartbeat_interval must be > 0 and <= 86400 seconds, got 1e+300"),
        (0, ValueError, "heartbeat_interval must be > 0 and <= 86400 seconds, got 0"),
        (float("nan"), ValueError, "heartbeat_interval must be a finite number of seconds"),
        ("10", TypeError, "heartbeat_interval must be a number of seconds"),
    ],
)
def test_the_recorders_heartbeat_interval_is_bounded_from_python(value: Any, error: type, message: str) -> None:
    from django_workers.history import HistoryRecorder

    with pytest.raises(error, match=re.escape(message)):
        HistoryRecorder(heartbeat_interval=value)
