"""OpenTelemetry tracing: the per-attempt span, the span annotator, ``ctx_tracer``.

Tracing is observability; its code lives in django_workers/core/tracing.py because the pool opens the spans
(``django_workers.tracing`` re-exports it).

Every test uses a fresh SDK ``TracerProvider`` exporting to memory; none sets the global provider
(the fallback on the global provider is tested in a subprocess, where it can be set once).
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from django_workers import tracing
from django_workers.core import Backoff, Worker, WorkerContext, WorkerPool, WorkerStatus
from django_workers.tracing import (
    TRACER_NAME,
    TRACER_PROVIDER_KEY,
    WorkerSpanProcessor,
    annotate_tracer_provider,
    attempt_span_hook,
    ctx_tracer,
)
from tests.support import ROOT, AsyncFnWorker, FnWorker

LONG = 60.0  # seconds: a wait that the test always interrupts much earlier


# -- helpers ---------------------------------------------------------------------------------


class Traced:
    """A fresh SDK provider whose spans end up in memory."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.tp = TracerProvider(shutdown_on_exit=False)
        self.tp.add_span_processor(SimpleSpanProcessor(self.exporter))

    def spans(self, name: str | None = None) -> list[ReadableSpan]:
        """Finished spans, oldest first (optionally only those called ``name``)."""
        return [s for s in self.exporter.get_finished_spans() if name is None or s.name == name]

    def span(self, name: str) -> ReadableSpan:
        (span,) = self.spans(name)
        return span

    def processors(self) -> tuple[Any, ...]:
        return self.tp._active_span_processor._span_processors  # test-only peek at the SDK


@pytest.fixture
def traced() -> Iterator[Traced]:
    t = Traced()
    yield t
    t.tp.shutdown()


class Pools:
    """Builds pools for one test and stops every one of them at teardown."""

    def __init__(self) -> None:
        self.pools: list[WorkerPool] = []

    def __call__(self, *workers: Worker, provider: Any = None, hook: bool = True, **kwargs: Any) -> WorkerPool:
        kwargs.setdefault("restart_backoff", Backoff(initial=0))
        pool = WorkerPool(tracer_provider=provider, tracing=hook, **kwargs)
        for worker in workers:
            pool.register(worker)
        self.pools.append(pool)
        return pool


@pytest.fixture
def pools() -> Iterator[Pools]:
    p = Pools()
    yield p
    left = [name for pool in p.pools for name in pool.stop(timeout=5.0)]
    assert not left, f"workers still running at teardown: {left}"


def worker(kind: str, name: str, body: Callable[[WorkerContext], Any]) -> Worker:
    """A sync or async worker running ``body(ctx)`` (a plain function in both cases)."""
    if kind == "sync":
        return FnWorker(name, body)

    async def abody(ctx: WorkerContext) -> None:
        body(ctx)

    return AsyncFnWorker(name, abody)


def raise_(exc: BaseException) -> Callable[[WorkerContext], None]:
    def body(ctx: WorkerContext) -> None:
        raise exc

    return body


def attempt_ids(pool: WorkerPool, name: str) -> list[str]:
    """Execution ids of the attempts of ``name``, from the pool's own events, in order."""
    return [e.execution_id for e in pool.execution(name).events if e.message.startswith("starting execution attempt")]


KINDS = ["sync", "async"]


# -- the per-attempt span ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_attempt_span_name_kind_and_attributes(kind: str, traced: Traced, pools: Pools) -> None:
    pool = pools(worker(kind, "mailer", lambda ctx: None), provider=traced.tp, max_executions_attempts=3)
    pool.start()
    assert pool.wait(10)

    span = traced.span("worker mailer")
    assert span.kind is SpanKind.INTERNAL
    assert span.instrumentation_scope is not None
    assert span.instrumentation_scope.name == TRACER_NAME
    assert dict(span.attributes or {}) == {
        "Worker": "mailer",
        "WorkerExecutionID": pool.execution("mailer").id,
        "worker.attempt": 1,
        "worker.max_attempts": 3,
    }
    assert span.status.status_code is StatusCode.UNSET
    assert span.events == ()
    assert span.parent is None
    assert span.end_time is not None


@pytest.mark.parametrize("kind", KINDS)
def test_failed_attempt_span_has_status_error_and_an_exception_event(kind: str, traced: Traced, pools: Pools) -> None:
    pool = pools(worker(kind, "broken", raise_(ValueError("boom"))), provider=traced.tp)
    pool.start()
    assert pool.wait(10)
    assert pool.execution("broken").status is WorkerStatus.ERROR

    span = traced.span("worker broken")
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "ValueError: boom"
    (event,) = span.events
    assert event.name == "exception"
    attributes = dict(event.attributes or {})
    assert attributes["exception.type"] == "ValueError"
    assert attributes["exception.message"] == "boom"
    assert "raise exc" in str(attributes["exception.stacktrace"])


class UnprintableError(Exception):
    def __str__(self) -> str:
        raise ValueError("str() of this exception raises")


@pytest.mark.parametrize("kind", KINDS)
def test_the_span_of_an_unprintable_or_huge_error_is_recorded_safely_and_capped(
    kind: str, traced: Traced, pools: Pools
) -> None:
    from django_workers.core.text import ERROR_TEXT_LIMIT

    pool = pools(
        worker(kind, "unprintable", raise_(UnprintableError())),
        worker(kind, "huge", raise_(RuntimeError("h" * 1_000_000))),
        provider=traced.tp,
    )
    pool.start()
    assert pool.wait(10)
    assert pool.execution("unprintable").status is WorkerStatus.ERROR

    span = traced.span("worker unprintable")
    assert span.status.description == "UnprintableError: <unprintable UnprintableError>"
    (event,) = span.events
    attributes = dict(event.attributes or {})
    assert attributes["exception.message"] == "<unprintable UnprintableError>"
    assert str(attributes["exception.type"]).endswith("UnprintableError")

    (event,) = traced.span("worker huge").events
    attributes = dict(event.attributes or {})
    assert len(str(attributes["exception.message"])) <= ERROR_TEXT_LIMIT + 100
    assert len(str(attributes["exception.stacktrace"])) <= ERROR_TEXT_LIMIT + 100


@pytest.mark.parametrize("kind", KINDS)
def test_a_recovered_panic_is_an_error_too(kind: str, traced: Traced, pools: Pools) -> None:
    pool = pools(worker(kind, "panicky", raise_(SystemExit(3))), provider=traced.tp)
    pool.start()
    assert pool.wait(10)

    span = traced.span("worker panicky")
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "SystemExit: 3"
    assert dict(span.events[0].attributes or {})["exception.type"] == "SystemExit"


@pytest.mark.parametrize("kind", KINDS)
def test_one_span_per_attempt_each_with_its_own_execution_id(kind: str, traced: Traced, pools: Pools) -> None:
    def body(ctx: WorkerContext) -> None:
        if ctx.attempt < 3:
            raise RuntimeError(f"attempt {ctx.attempt} failed")

    pool = pools(worker(kind, "flaky", body), provider=traced.tp, max_executions_attempts=4)
    pool.start()
    assert pool.wait(10)
    assert pool.execution("flaky").status is WorkerStatus.SUCCESS

    spans = traced.spans("worker flaky")
    ids = attempt_ids(pool, "flaky")
    assert len(spans) == len(ids) == 3
    assert len(set(ids)) == 3
    assert [s.attributes["WorkerExecutionID"] for s in spans] == ids  # type: ignore[index]
    assert [s.attributes["worker.attempt"] for s in spans] == [1, 2, 3]  # type: ignore[index]
    assert [s.status.status_code for s in spans] == [StatusCode.ERROR, StatusCode.ERROR, StatusCode.UNSET]
    # Each attempt is its own trace: an attempt span is never the parent of the next one.
    assert all(s.parent is None for s in spans)
    assert len({s.context.trace_id for s in spans}) == 3  # type: ignore[union-attr]


@pytest.mark.parametrize("kind", KINDS)
def test_the_attempt_span_is_current_while_the_worker_runs(kind: str, traced: Traced, pools: Pools) -> None:
    seen: list[trace.Span] = []
    other = traced.tp.get_tracer("some.instrumentation")

    def body(ctx: WorkerContext) -> None:
        seen.append(trace.get_current_span())
        with other.start_as_current_span("child"):
            pass

    pool = pools(worker(kind, "current", body), provider=traced.tp)
    pool.start()
    assert pool.wait(10)

    attempt, child = traced.span("worker current"), traced.span("child")
    assert seen[0].get_span_context() == attempt.context
    assert child.parent is not None
    assert child.parent.span_id == attempt.context.span_id  # type: ignore[union-attr]
    assert trace.get_current_span() is trace.INVALID_SPAN  # nothing leaks into the test's context


def test_an_async_worker_cancelled_by_stop_ends_its_span_without_error(traced: Traced, pools: Pools) -> None:
    started = threading.Event()

    async def abody(ctx: WorkerContext) -> None:
        started.set()
        while not await ctx.asleep(LONG):
            pass

    pool = pools(AsyncFnWorker("consumer", abody), provider=traced.tp)
    pool.start()
    assert started.wait(10)
    assert pool.stop(timeout=10) == []
    assert pool.execution("consumer").status is WorkerStatus.SUCCESS

    span = traced.span("worker consumer")
    assert span.status.status_code is StatusCode.UNSET
    assert span.events == ()


def test_concurrent_async_workers_each_see_their_own_attempt_span(traced: Traced, pools: Pools) -> None:
    annotate_tracer_provider(traced.tp)
    both_running = asyncio.Event()
    running: list[str] = []
    parents: dict[str, int] = {}
    other = traced.tp.get_tracer("some.instrumentation")

    def make(name: str) -> AsyncFnWorker:
        async def abody(ctx: WorkerContext) -> None:
            running.append(name)
            if len(running) == 2:
                both_running.set()
            await both_running.wait()  # both attempt spans are open here, interleaved on one loop
            with other.start_as_current_span(f"child of {name}") as child:
                parents[name] = child.parent.span_id  # type: ignore[attr-defined]

        return AsyncFnWorker(name, abody)

    pool = pools(make("a"), make("b"), provider=traced.tp)
    pool.start()
    assert pool.wait(10)

    for name in ("a", "b"):
        assert parents[name] == traced.span(f"worker {name}").context.span_id  # type: ignore[union-attr]
        assert traced.span(f"child of {name}").attributes["Worker"] == name  # type: ignore[index]


def test_the_hook_never_sets_the_global_provider(traced: Traced, pools: Pools) -> None:
    before = trace.get_tracer_provider()
    pool = pools(worker("sync", "w", lambda ctx: ctx_tracer().start_span("x").end()), provider=traced.tp)
    annotate_tracer_provider(traced.tp)
    pool.start()
    assert pool.wait(10)
    assert trace.get_tracer_provider() is before
    assert [s.name for s in traced.spans()] == ["x", "worker w"]


def test_the_hook_with_a_no_op_provider_costs_a_worker_nothing(pools: Pools) -> None:
    pool = pools(worker("sync", "w", raise_(ValueError("boom"))), provider=trace.NoOpTracerProvider())
    pool.start()
    assert pool.wait(10)
    assert pool.execution("w").status is WorkerStatus.ERROR


@pytest.mark.parametrize("kind", KINDS)
def test_record_exception_false_keeps_the_error_status_without_the_event(
    kind: str, traced: Traced, pools: Pools
) -> None:
    pool = WorkerPool(attempt_hooks=[attempt_span_hook(traced.tp, record_exception=False)])
    pools.pools.append(pool)
    pool.register(worker(kind, "broken", raise_(ValueError("boom"))))
    pool.start()
    assert pool.wait(10)

    span = traced.span("worker broken")
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "ValueError: boom"
    assert span.events == ()


def test_with_a_no_op_provider_the_hook_opens_no_span() -> None:
    ctx = WorkerContext("w", "id-1", 1, 1, threading.Event())
    outer = trace.get_current_span()
    with attempt_span_hook(trace.NoOpTracerProvider())(ctx) as span:
        assert span is trace.INVALID_SPAN
        assert trace.get_current_span() is outer


def test_attempt_span_hook_is_an_attempt_hook_with_a_readable_repr(traced: Traced) -> None:
    hook = attempt_span_hook(traced.tp)
    assert hook.tracer_provider is traced.tp
    assert "AttemptSpanHook" in repr(hook)
    assert attempt_span_hook().tracer_provider is None


# -- the annotator -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("with_attempt_span", [True, False], ids=["attempt-span", "no-attempt-span"])
def test_spans_of_other_tracers_inside_a_worker_are_annotated(
    kind: str, with_attempt_span: bool, traced: Traced, pools: Pools
) -> None:
    assert annotate_tracer_provider(traced.tp) is traced.tp
    other = traced.tp.get_tracer("some.db.instrumentation")

    def body(ctx: WorkerContext) -> None:
        with other.start_as_current_span("SELECT"), other.start_as_current_span("fetch"):
            pass

    pool = pools(worker(kind, "indexer", body), provider=traced.tp, hook=with_attempt_span)
    pool.start()
    assert pool.wait(10)

    execution_id = pool.execution("indexer").id
    for name in ("SELECT", "fetch"):
        attributes = traced.span(name).attributes or {}
        assert attributes["Worker"] == "indexer"
        assert attributes["WorkerExecutionID"] == execution_id
    assert len(traced.spans("worker indexer")) == (1 if with_attempt_span else 0)


@pytest.mark.parametrize("kind", KINDS)
def test_annotated_spans_carry_the_execution_id_of_their_attempt(kind: str, traced: Traced, pools: Pools) -> None:
    annotate_tracer_provider(traced.tp)
    other = traced.tp.get_tracer("some.instrumentation")

    def body(ctx: WorkerContext) -> None:
        other.start_span(f"work {ctx.attempt}").end()
        if ctx.attempt < 2:
            raise ValueError("again")

    pool = pools(worker(kind, "retrying", body), provider=traced.tp, max_executions_attempts=2)
    pool.start()
    assert pool.wait(10)

    ids = attempt_ids(pool, "retrying")
    assert [traced.span(f"work {n}").attributes["WorkerExecutionID"] for n in (1, 2)] == ids  # type: ignore[index]


def test_annotating_three_times_adds_one_processor(traced: Traced, pools: Pools) -> None:
    before = len(traced.processors())
    for _ in range(3):
        assert annotate_tracer_provider(traced.tp) is traced.tp
    processors = traced.processors()
    assert len(processors) == before + 1
    assert sum(isinstance(p, WorkerSpanProcessor) for p in processors) == 1

    pool = pools(worker("sync", "w", lambda ctx: None), provider=traced.tp)
    pool.start()
    assert pool.wait(10)
    annotate_tracer_provider(traced.tp)
    assert len(traced.processors()) == before + 1
    assert traced.span("worker w").attributes["Worker"] == "w"  # type: ignore[index]


def test_annotation_is_tracked_per_provider(traced: Traced) -> None:
    second = Traced()
    try:
        annotate_tracer_provider(traced.tp)
        annotate_tracer_provider(second.tp)
        annotate_tracer_provider(second.tp)
        assert sum(isinstance(p, WorkerSpanProcessor) for p in traced.processors()) == 1
        assert sum(isinstance(p, WorkerSpanProcessor) for p in second.processors()) == 1
    finally:
        second.tp.shutdown()


def test_spans_outside_a_worker_are_not_annotated(traced: Traced, pools: Pools) -> None:
    annotate_tracer_provider(traced.tp)
    tracer = traced.tp.get_tracer("app")
    tracer.start_span("before").end()

    release = threading.Event()
    started = threading.Event()

    def body(ctx: WorkerContext) -> None:
        started.set()
        release.wait(LONG)

    pool = pools(worker("sync", "w", body), provider=traced.tp, hook=False)
    pool.start()
    assert started.wait(10)
    tracer.start_span("while a worker runs").end()  # in the test's thread: not in the worker
    release.set()
    assert pool.wait(10)
    tracer.start_span("after").end()

    for name in ("before", "while a worker runs", "after"):
        assert dict(traced.span(name).attributes or {}) == {}


def test_threads_a_worker_starts_are_annotated_only_with_its_context(traced: Traced, pools: Pools) -> None:
    annotate_tracer_provider(traced.tp)
    tracer = traced.tp.get_tracer("app")

    def body(ctx: WorkerContext) -> None:
        plain = threading.Thread(target=lambda: tracer.start_span("plain thread").end())
        copied = threading.Thread(target=contextvars.copy_context().run, args=(tracer.start_span("x").end,))
        plain.start()
        copied.start()
        plain.join()
        copied.join()

    pool = pools(worker("sync", "w", body), provider=traced.tp, hook=False)
    pool.start()
    assert pool.wait(10)
    assert dict(traced.span("plain thread").attributes or {}) == {}
    assert traced.span("x").attributes["Worker"] == "w"  # type: ignore[index]


@pytest.mark.parametrize(
    ("provider", "hint"),
    [
        (trace.NoOpTracerProvider(), "use an opentelemetry.sdk.trace.TracerProvider"),
        (trace.ProxyTracerProvider(), "set_tracer_provider"),
        (object(), "use an opentelemetry.sdk.trace.TracerProvider"),
    ],
    ids=["no-op", "proxy", "object"],
)
def test_annotating_a_provider_without_span_processors_is_a_clear_type_error(provider: Any, hint: str) -> None:
    with pytest.raises(TypeError, match="has no add_span_processor") as excinfo:
        annotate_tracer_provider(provider)
    assert hint in str(excinfo.value)


def test_a_provider_that_cannot_be_weakly_referenced_is_annotated_once() -> None:
    class SlottedProvider:
        __slots__ = ("_django_workers_annotated", "processors")

        def __init__(self) -> None:
            self.processors: list[Any] = []

        def add_span_processor(self, processor: Any) -> None:
            self.processors.append(processor)

    provider = SlottedProvider()
    for _ in range(3):
        annotate_tracer_provider(provider)  # type: ignore[arg-type]
    assert len(provider.processors) == 1


def test_the_processor_implements_the_sdk_interface() -> None:
    processor = WorkerSpanProcessor()
    assert processor.force_flush() is True
    processor.shutdown()
    processor.on_end(None)
    processor._on_ending(None)
    processor.on_start(None)  # outside a worker: does not touch the span


# -- ctx_tracer ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_ctx_tracer_inside_a_worker_uses_the_pool_provider(kind: str, traced: Traced, pools: Pools) -> None:
    tracers: list[trace.Tracer] = []

    def body(ctx: WorkerContext) -> None:
        tracers.extend([ctx_tracer(), ctx_tracer(ctx)])
        with ctx_tracer().start_as_current_span("unit of work"):
            pass

    pool = pools(worker(kind, "w", body), provider=traced.tp, hook=False)
    pool.start()
    assert pool.wait(10)

    span = traced.span("unit of work")
    assert span.instrumentation_scope is not None
    assert span.instrumentation_scope.name == TRACER_NAME
    assert tracers[0] is tracers[1]  # cached per provider
    assert tracers[0] is tracing.tracer_of(traced.tp)


def test_ctx_tracer_with_an_explicit_context_from_another_thread(traced: Traced) -> None:
    ctx = WorkerContext("w", "id-1", 1, 1, threading.Event(), {TRACER_PROVIDER_KEY: traced.tp})
    ctx_tracer(ctx).start_span("explicit").end()
    assert traced.span("explicit").instrumentation_scope.name == TRACER_NAME  # type: ignore[union-attr]


def test_ctx_tracer_outside_a_worker_or_without_a_pool_provider_is_the_global_tracer(
    traced: Traced, pools: Pools
) -> None:
    global_tracer = tracing.tracer_of(trace.get_tracer_provider())
    assert ctx_tracer() is global_tracer
    seen: list[trace.Tracer] = []
    pool = pools(worker("sync", "w", lambda ctx: seen.append(ctx_tracer())), hook=False)  # no provider
    pool.start()
    assert pool.wait(10)
    assert seen == [global_tracer]
    ctx = WorkerContext("w", "id-1", 1, 1, threading.Event())
    assert ctx_tracer(ctx) is global_tracer
    assert traced.spans() == []


# -- the global provider and the optional dependency --------------------------------------------

GLOBAL_FALLBACK = """
import threading
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from django_workers.core import Worker, WorkerPool
from django_workers.tracing import annotate_tracer_provider, attempt_span_hook, ctx_tracer

outside_before = ctx_tracer()  # taken before the global provider exists: follows it once set

class W(Worker):
    name = "global-worker"
    def run(self, ctx):
        ctx_tracer().start_span("inside").end()

class P(Worker):
    name = "proxy-worker"
    def run(self, ctx):
        pass

# Before a global provider is set, the hook opens no span at all.
from django_workers.core import WorkerContext
with attempt_span_hook()(WorkerContext("w", "id-0", 1, 1, threading.Event())) as span:
    assert span is trace.INVALID_SPAN

pool = WorkerPool(attempt_hooks=[attempt_span_hook()])  # built before the global provider is set
pool.register(W())
# Given the global (proxy) provider itself, taken before one was set: it follows the one set later.
proxy_pool = WorkerPool(attempt_hooks=[attempt_span_hook(trace.get_tracer_provider())])
proxy_pool.register(P())

exporter = InMemorySpanExporter()
provider = TracerProvider(shutdown_on_exit=False)
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(annotate_tracer_provider(provider))

for p in (pool, proxy_pool):
    p.start()
    assert p.wait(10)
    assert p.stop(5) == []
outside_before.start_span("outside before").end()
ctx_tracer().start_span("outside").end()

spans = {s.name: s for s in exporter.get_finished_spans()}
expected = ["inside", "outside", "outside before", "worker global-worker", "worker proxy-worker"]
assert sorted(spans) == expected, sorted(spans)
execution_id = pool.execution("global-worker").id
assert spans["worker global-worker"].attributes["WorkerExecutionID"] == execution_id
assert spans["inside"].attributes["Worker"] == "global-worker"
assert spans["inside"].parent.span_id == spans["worker global-worker"].context.span_id
assert "Worker" not in spans["outside"].attributes
assert spans["outside"].instrumentation_scope.name == "django_workers"
print("ok")
"""


def test_without_a_provider_the_hook_and_ctx_tracer_use_the_global_one() -> None:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "DJANGO_SETTINGS_MODULE"}}
    env["PYTHONPATH"] = str(ROOT)
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", textwrap.dedent(GLOBAL_FALLBACK)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_importing_without_opentelemetry_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    for name in list(sys.modules):
        if name == "opentelemetry" or name.startswith("opentelemetry."):
            monkeypatch.setitem(sys.modules, name, None)  # type: ignore[arg-type]
    monkeypatch.setitem(sys.modules, "opentelemetry", None)  # type: ignore[arg-type]
    monkeypatch.delitem(sys.modules, "django_workers.tracing")
    monkeypatch.delitem(sys.modules, "django_workers.core.tracing")
    with pytest.raises(ImportError, match=r"pip install django-worker-pool\[tracing\]"):
        importlib.import_module("django_workers.tracing")
    with pytest.raises(ImportError, match=r"pip install django-worker-pool\[tracing\]"):
        WorkerPool(tracing=True)  # a pool asked to trace says how to install what it needs
