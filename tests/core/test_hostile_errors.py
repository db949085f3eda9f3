"""Hostile worker code: exceptions whose text raises, is huge or cannot be encoded; generator run().

Every error text the pool keeps or writes (events, ``last_error``, tracebacks, log lines) is taken
safely and capped at ``ERROR_TEXT_LIMIT`` characters with a visible cut mark
(``django_workers.core.text``). The regression tests come first; then a property-based test
(Hypothesis) generates hostile exceptions of every kind at once.

The property test runs a bounded number of examples in ``make test``; set
``HYPOTHESIS_PROFILE=long`` for a longer run (tests/conftest.py registers the profiles).
"""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from django_workers.core import Worker, WorkerContext, WorkerStatus
from django_workers.core.events import AttemptFailed, AttemptStarted, LifecycleEvent
from django_workers.core.logs import WorkerLogFilter
from django_workers.core.text import ERROR_TEXT_LIMIT, cap, cap_middle, safe_repr, safe_str
from tests.support import FnWorker, Harness, collect_logs, wait_for

#: The most characters a capped text may have: the limit plus the cut mark.
CAPPED = ERROR_TEXT_LIMIT + 100


class UnprintableError(Exception):
    """An exception whose ``__str__`` and ``__repr__`` raise."""

    def __str__(self) -> str:
        raise ValueError("str() of this exception raises")

    def __repr__(self) -> str:
        raise ValueError("repr() of this exception raises")


class UnprintablePanic(BaseException):
    """A panic (not an Exception) whose ``__repr__`` raises."""

    def __repr__(self) -> str:
        raise RuntimeError("repr() of this panic raises")


def utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@pytest.fixture
def formatted() -> Iterator[io.StringIO]:
    """Everything the ``django_workers`` logger writes during the test, formatted."""
    with formatted_logs() as stream:
        yield stream


@contextmanager
def formatted_logs() -> Iterator[io.StringIO]:
    """Everything the ``django_workers`` logger writes, formatted as a plain StreamHandler would."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(worker)s %(message)s"))
    handler.addFilter(WorkerLogFilter())
    logger = logging.getLogger("django_workers")
    previous = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


# -- the text primitives ------------------------------------------------------------------------------


def test_safe_str_and_repr_fall_back_to_the_type_name() -> None:
    assert safe_str(UnprintableError()) == "<unprintable UnprintableError>"
    assert safe_repr(UnprintableError()) == "<unprintable UnprintableError>"
    assert safe_str(ValueError("fine")) == "fine"


def test_cap_marks_the_cut_and_keeps_short_text_whole() -> None:
    assert cap("short") == "short"
    text = cap("x" * (ERROR_TEXT_LIMIT + 5000))
    assert text.startswith("x" * ERROR_TEXT_LIMIT)
    assert text.endswith("[5,000 more characters cut]")
    middle = cap_middle("a" * ERROR_TEXT_LIMIT + "b" * 5000 + "END")
    assert middle.startswith("a") and middle.endswith("END")
    assert "[5,003 characters cut]" in middle
    assert len(middle) <= CAPPED


def test_lone_surrogates_are_escaped() -> None:
    text = safe_str(ValueError("bad \ud800 text"))
    assert utf8(text)
    assert "\\ud800" in text


# -- item 1: an unprintable exception must not end supervision -------------------------------------


def test_an_unprintable_exception_is_restarted_like_any_other(harness: Harness, formatted: io.StringIO) -> None:
    def fn(ctx: WorkerContext) -> None:
        raise UnprintableError

    worker = FnWorker("unprintable", fn)
    pool = harness.pool(worker, max_executions_attempts=0)
    pool.start()
    wait_for(lambda: worker.calls >= 3, what="three attempts of the unprintable worker")
    pool.stop()
    execution = pool.execution("unprintable")
    failed = [e.message for e in execution.events if "with error" in e.message]
    assert failed, execution.events
    assert all(m.endswith("/unlimited with error: <unprintable UnprintableError>") for m in failed)
    assert execution.has_event("restarting after error")
    assert execution.last_error == "<unprintable UnprintableError>"
    assert execution.last_traceback is not None
    assert "UnprintableError" in execution.last_traceback
    output = formatted.getvalue()
    assert "ERROR unprintable stopping execution attempt 1/unlimited with error: <unprintable UnprintableError>" in (
        output
    )
    assert "Traceback (most recent call last)" in output


def test_a_panic_whose_repr_raises_is_recovered_and_exhausts_the_attempts(harness: Harness) -> None:
    def fn(ctx: WorkerContext) -> None:
        raise UnprintablePanic

    worker = FnWorker("panicky", fn)
    pool = harness.pool(worker, max_executions_attempts=2)
    pool.start()
    assert pool.wait(timeout=10)
    execution = pool.execution("panicky")
    assert execution.status is WorkerStatus.ERROR
    assert execution.exhausted
    assert execution.has_event("stopping execution attempt 2/2 with recovered panic: <unprintable UnprintablePanic>")
    assert execution.has_event("max execution attempts reached")


# -- item 2: error text is capped everywhere the pool keeps or writes it ------------------------------


def test_a_huge_message_is_capped_in_events_report_traceback_and_log(harness: Harness, formatted: io.StringIO) -> None:
    huge = "m" * 2_000_000

    def fn(ctx: WorkerContext) -> None:
        raise RuntimeError(huge)

    worker = FnWorker("huge", fn)
    pool = harness.pool(worker, max_executions_attempts=5)
    pool.start()
    assert pool.wait(timeout=30)
    execution = pool.execution("huge")
    assert execution.exhausted
    for event in execution.events:
        assert len(event.message) <= CAPPED
    assert execution.last_error is not None
    assert len(execution.last_error) <= CAPPED
    assert execution.last_error.endswith(f"[{2_000_000 - ERROR_TEXT_LIMIT:,} more characters cut]")
    assert execution.last_traceback is not None
    assert len(execution.last_traceback) <= CAPPED
    assert execution.last_traceback.startswith("Traceback (most recent call last)")
    assert "characters cut" in execution.last_traceback
    # Five failed attempts, each logged with its message and traceback: bounded, not 5 x 4 MB.
    output = formatted.getvalue()
    assert output.count("Traceback (most recent call last)") == 5
    assert len(output) <= 5 * 2 * CAPPED + 10_000


def test_the_log_record_keeps_the_exception_for_handlers_that_want_it(harness: Harness) -> None:
    def fn(ctx: WorkerContext) -> None:
        raise RuntimeError("x" * 100_000)

    with collect_logs() as logs:
        pool = harness.pool(FnWorker("kept", fn))
        pool.start()
        assert pool.wait(timeout=10)
    (record,) = logs.matching("with error", logging.ERROR)
    assert record.exc_info is not None and isinstance(record.exc_info[1], RuntimeError)
    assert record.exc_text is not None and len(record.exc_text) <= CAPPED
    assert record.worker == "kept"  # type: ignore[attr-defined]
    assert len(logging.Formatter().format(record)) <= 2 * CAPPED


# -- property: hostile exceptions of every kind -----------------------------------------------------


def hostile_exception(
    message: str, str_raises: bool, panic: bool, chain: int, cyclic: bool, depth: int
) -> BaseException:
    """An exception with the given hostile traits, raised (so it has a traceback)."""
    base: type[BaseException] = BaseException if panic else Exception

    def text(self: BaseException) -> str:
        if str_raises:
            raise ValueError("hostile __str__")
        return message

    cls = type("Hostile", (base,), {"__str__": text, "__repr__": text})

    def deep(n: int) -> None:
        if n <= 0:
            raise cls(message)
        deep(n - 1)

    try:
        deep(depth)
    except BaseException as exc:
        error = exc
    link: BaseException = error
    for i in range(chain):
        cause = ValueError(f"cause {i}")
        link.__cause__ = cause
        link = cause
    if cyclic:
        link.__context__ = error
    return error


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(
    message=st.one_of(
        st.text(max_size=50),
        st.builds(lambda n, c: c * n, st.integers(0, 300_000), st.sampled_from(["x", "\x00", "\ud800", "é"])),
    ),
    str_raises=st.booleans(),
    panic=st.booleans(),
    chain=st.integers(0, 30),
    cyclic=st.booleans(),
    depth=st.integers(0, 200),
)
@example(message="\ud800\x00", str_raises=False, panic=True, chain=0, cyclic=True, depth=0)
@example(message="x" * 300_000, str_raises=False, panic=False, chain=30, cyclic=False, depth=200)
@example(message="", str_raises=True, panic=True, chain=3, cyclic=True, depth=5)
def test_hostile_exceptions_never_break_supervision(
    message: str, str_raises: bool, panic: bool, chain: int, cyclic: bool, depth: int
) -> None:
    exc = hostile_exception(message, str_raises, panic, chain, cyclic, depth)
    seen: list[LifecycleEvent] = []

    def fn(ctx: WorkerContext) -> None:
        raise exc

    worker = FnWorker("hostile", fn)
    harness = Harness()
    errors_before = _handler_errors()
    try:
        with formatted_logs() as formatted:
            pool = harness.pool(worker, max_executions_attempts=3, history_size=10)
            pool.add_listener(seen.append)
            pool.start()
            assert pool.wait(timeout=30), "supervision ended"
    finally:
        harness.close()
    execution = pool.execution("hostile")
    assert execution.status is WorkerStatus.ERROR
    assert execution.exhausted
    # Every attempt is accounted for: three started, three failed.
    assert sum(isinstance(e, AttemptStarted) for e in seen) == 3
    assert sum(isinstance(e, AttemptFailed) for e in seen) == 3
    texts = [e.message for e in execution.events] + [execution.last_error or "", execution.last_traceback or ""]
    for text in texts:
        assert len(text) <= CAPPED
        assert utf8(text)
    output = formatted.getvalue()
    assert output.count("Traceback (most recent call last)") == 3
    assert len(output) <= 3 * 2 * CAPPED + 10_000
    assert _handler_errors() == errors_before, "a log handler failed to format a record"


_errors: list[int] = [0]


def _handler_errors() -> int:
    return _errors[0]


@pytest.fixture(autouse=True)
def count_handler_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    """Count ``Handler.handleError`` calls (a record that could not be formatted or written)."""
    original = logging.Handler.handleError

    def counting(self: logging.Handler, record: logging.LogRecord) -> None:
        _errors[0] += 1
        original(self, record)

    monkeypatch.setattr(logging.Handler, "handleError", counting)


def test_handler_errors_are_counted() -> None:
    """The counter the property test relies on sees a record that cannot be formatted."""
    logger = logging.getLogger("tests.hostile.counter")
    handler = logging.StreamHandler(io.StringIO())
    logger.addHandler(handler)
    logger.propagate = False
    before = _handler_errors()
    stderr, sys.stderr = sys.stderr, io.StringIO()
    try:
        logger.error("%d", "not a number")
    finally:
        sys.stderr = stderr
        logger.removeHandler(handler)
        logger.propagate = True
    assert _handler_errors() == before + 1


# -- a generator run() would never run its body: refused at register() ------------------------------


class GeneratorWorker(Worker):
    name = "generator"

    def run(self, ctx: WorkerContext) -> Any:
        yield ctx


class AsyncGeneratorWorker(Worker):
    name = "async-generator"

    async def run(self, ctx: WorkerContext) -> Any:
        yield ctx


@pytest.mark.parametrize(
    ("worker", "kind"),
    [(GeneratorWorker(), "a generator function"), (AsyncGeneratorWorker(), "an async generator function")],
)
def test_register_refuses_a_generator_run(worker: Worker, kind: str, harness: Harness) -> None:
    pool = harness.pool()
    with pytest.raises(TypeError, match=f"run is {kind} .*calling it runs none of its body"):
        pool.register(worker)
    assert pool.names() == []
