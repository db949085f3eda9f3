"""Prometheus metrics: exact series and values after known sequences of attempts on real pools."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import math
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

import django_workers
from django_workers.core import WorkerContext
from django_workers.core.events import AttemptFailed, AttemptSucceeded, PoolStarted, WorkerStopTimedOut
from django_workers.core.execution import WorkerStatus
from django_workers.metrics import DURATION_BUCKETS, WorkerMetrics, worker_label
from django_workers.observability import metrics as observability_metrics
from django_workers.observability.exposition import process_metrics
from tests.core.conftest import EventLog, failing, until_cancelled
from tests.support import ROOT, AsyncFnWorker, FnWorker, Harness

STATUSES = ("started", "restarted", "success", "error")


class Meltdown(BaseException):
    """A non-Exception: the pool recovers it as a panic."""


def fail_until(success_at: int | None, exc: Callable[[], BaseException] = lambda: ValueError("boom")):
    def body(ctx: WorkerContext) -> None:
        if success_at is None or ctx.attempt < success_at:
            raise exc()

    return body


class Durations:
    """A listener keeping the durations the pool reported, by worker and outcome."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_outcome: dict[tuple[str, str], list[float]] = {}

    def __call__(self, event: Any) -> None:
        if isinstance(event, AttemptSucceeded | AttemptFailed):
            outcome = "success" if isinstance(event, AttemptSucceeded) else "error"
            with self.lock:
                self.by_outcome.setdefault((event.worker, outcome), []).append(event.duration)


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def executions(registry: CollectorRegistry, worker: str, prefix: str = "") -> dict[str, float | None]:
    return {
        status: value(registry, f"{prefix}worker_executions_total", worker=worker, status=status) for status in STATUSES
    }


def series(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every exported sample but the ``_created`` timestamps, keyed by name and sorted labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for metric in registry.collect()
        for sample in metric.samples
        if not sample.name.endswith("_created")
    }


def zero_series(
    worker: str, prefix: str = "", state: str = "deferred"
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The series of a worker that never ran an attempt: counts at 0, its status gauge at ``state``."""
    expected: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for status in observability_metrics.STATUSES:
        value = 1.0 if status == state else 0.0
        expected[(f"{prefix}worker_status", (("status", status), ("worker", worker)))] = value
    for status in STATUSES:
        expected[(f"{prefix}worker_executions_total", (("status", status), ("worker", worker)))] = 0.0
    expected[(f"{prefix}workers_running", (("worker", worker),))] = 0.0
    for status in ("error", "success"):
        labels = (("status", status), ("worker", worker))
        for bound in DURATION_BUCKETS:
            le = "+Inf" if math.isinf(bound) else repr(float(bound))
            key = (("le", le), ("status", status), ("worker", worker))
            expected[(f"{prefix}worker_execution_duration_seconds_bucket", key)] = 0.0
        expected[(f"{prefix}worker_execution_duration_seconds_count", labels)] = 0.0
        expected[(f"{prefix}worker_execution_duration_seconds_sum", labels)] = 0.0
    return expected


UNLABELLED = {
    ("worker_recorder_dropped_events_total", ()): 0.0,
    ("worker_last_heartbeat_timestamp_seconds", ()): 0.0,
}


# -- names, labels, registration ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "label"),
    [("My Worker-1", "my_worker_1"), ("classic-worker", "classic_worker"), ("a b-c_D", "a_b_c_d"), ("x", "x")],
)
def test_worker_label_normalisation(name: str, label: str) -> None:
    assert worker_label(name) == label


def test_nothing_exported_before_a_pool_starts(registry: CollectorRegistry) -> None:
    WorkerMetrics().register(registry)
    assert series(registry) == UNLABELLED


def test_series_of_registered_workers_exist_at_zero_from_start(registry: CollectorRegistry, harness: Harness) -> None:
    metrics = WorkerMetrics().register(registry)
    # Deferred for a minute: start() publishes the pool's start, and no attempt runs before stop().
    pool = harness.pool(FnWorker("My Worker-1"), FnWorker("other"), deferred_start_threshold=60, listeners=[metrics])
    pool.start()
    assert series(registry) == {**UNLABELLED, **zero_series("my_worker_1"), **zero_series("other")}
    assert pool.stop(5) == []
    assert series(registry) == {**UNLABELLED, **zero_series("my_worker_1"), **zero_series("other")}


def test_namespace_and_subsystem_prefix_every_name(registry: CollectorRegistry, harness: Harness) -> None:
    metrics = WorkerMetrics(namespace="shop", subsystem="jobs").register(registry)
    pool = harness.pool(FnWorker("w"), listeners=[metrics])
    pool.start()
    assert pool.wait(10)
    assert executions(registry, "w", "shop_jobs_") == {"started": 1, "restarted": 0, "success": 1, "error": 0}
    names = {name for name, _ in series(registry)}
    assert names == {
        "shop_jobs_worker_executions_total",
        "shop_jobs_workers_running",
        "shop_jobs_worker_status",
        "shop_jobs_worker_execution_duration_seconds_bucket",
        "shop_jobs_worker_execution_duration_seconds_count",
        "shop_jobs_worker_execution_duration_seconds_sum",
        "shop_jobs_worker_recorder_dropped_events_total",
        "shop_jobs_worker_last_heartbeat_timestamp_seconds",
    }


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"namespace": "shop"}, "shop_worker_executions_total"),
        ({"subsystem": "jobs"}, "jobs_worker_executions_total"),
        ({"namespace": "_a1", "subsystem": "B_2"}, "_a1_b_2_worker_executions_total"),
    ],
)
def test_one_prefix_alone(registry: CollectorRegistry, kwargs: dict[str, str], name: str) -> None:
    metrics = WorkerMetrics(**kwargs).register(registry)
    metrics(PoolStarted(("w",)))
    assert value(registry, name, worker="w", status="started") == 0


@pytest.mark.parametrize(
    ("kwargs", "name", "prefixes"),
    [
        ({"namespace": "My-App"}, "my_app_worker_executions_total", ("my_app", "")),
        ({"subsystem": "Night Jobs"}, "night_jobs_worker_executions_total", ("", "night_jobs")),
        ({"namespace": "my app", "subsystem": "a-B c"}, "my_app_a_b_c_worker_executions_total", ("my_app", "a_b_c")),
        ({"namespace": "SHOP"}, "shop_worker_executions_total", ("shop", "")),
    ],
)
def test_namespace_and_subsystem_are_sanitised_as_yokai_does(
    registry: CollectorRegistry, kwargs: dict[str, str], name: str, prefixes: tuple[str, str]
) -> None:
    metrics = WorkerMetrics(**kwargs).register(registry)
    assert (metrics.namespace, metrics.subsystem) == prefixes
    metrics(PoolStarted(("My Worker",)))
    assert value(registry, name, worker="my_worker", status="started") == 0


@pytest.mark.parametrize("bad", ["1shop", "ns:sub", "café", "a.b", "9 lives"])
@pytest.mark.parametrize("kind", ["namespace", "subsystem"])
def test_prefixes_that_sanitising_cannot_make_valid_raise_value_error(kind: str, bad: str) -> None:
    with pytest.raises(ValueError, match=rf"the metrics {kind} .* is not valid in a Prometheus metric name"):
        WorkerMetrics(**{kind: bad})


def test_a_prefix_that_is_not_a_string_raises_type_error() -> None:
    with pytest.raises(TypeError, match="the metrics namespace must be a str"):
        WorkerMetrics(namespace=None)  # type: ignore[arg-type]


def test_the_executions_counter_has_yokais_help_text(registry: CollectorRegistry) -> None:
    WorkerMetrics(namespace="shop").register(registry)
    helps = {family.name: family.documentation for family in registry.collect()}
    assert helps["shop_worker_executions"] == "Total number of workers executions"


def test_one_process_metrics_object_per_sanitised_prefix() -> None:
    # Registered into the default registry once, whatever spelling of the prefix asks for it.
    first = process_metrics("Process-Metrics Test")
    assert first.namespace == "process_metrics_test"
    assert process_metrics("process_metrics_test") is first
    assert process_metrics("PROCESS-METRICS-TEST") is first


def test_registering_twice_into_one_registry_raises(registry: CollectorRegistry) -> None:
    metrics = WorkerMetrics(namespace="shop")
    assert metrics.register(registry) is metrics
    already = r"this WorkerMetrics \(namespace='shop', subsystem=''\) is already registered"
    with pytest.raises(ValueError, match=already):
        metrics.register(registry)


def test_a_second_metrics_object_with_the_same_names_raises_and_leaves_the_registry_unchanged(
    registry: CollectorRegistry,
) -> None:
    WorkerMetrics().register(registry)
    before = series(registry)
    with pytest.raises(ValueError, match="already uses these names; give this one a different namespace or subsystem"):
        WorkerMetrics().register(registry)
    assert series(registry) == before
    WorkerMetrics(subsystem="other").register(registry)  # another prefix is fine


def test_a_clash_on_a_later_metric_rolls_back_the_earlier_ones(registry: CollectorRegistry) -> None:
    from prometheus_client import Gauge

    Gauge("worker_last_heartbeat_timestamp_seconds", "taken", registry=registry)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        WorkerMetrics().register(registry)
    assert {name for name, _ in series(registry)} == {"worker_last_heartbeat_timestamp_seconds"}


def test_one_object_in_two_registries_and_unregister(registry: CollectorRegistry) -> None:
    other = CollectorRegistry()
    metrics = WorkerMetrics().register(registry).register(other)
    metrics.record_dropped(2)
    assert value(registry, "worker_recorder_dropped_events_total") == 2
    assert value(other, "worker_recorder_dropped_events_total") == 2
    metrics.unregister(other)
    assert series(other) == {}
    with pytest.raises(LookupError, match="not registered"):
        metrics.unregister(other)
    metrics.register(other)  # again, after unregister
    assert value(other, "worker_recorder_dropped_events_total") == 2


# -- counting real attempts ---------------------------------------------------------------------


def test_failing_twice_then_succeeding(registry: CollectorRegistry, harness: Harness) -> None:
    metrics = WorkerMetrics().register(registry)
    durations = Durations()
    pool = harness.pool(
        FnWorker("My Worker-1", fail_until(3)), max_executions_attempts=3, listeners=[metrics, durations]
    )
    pool.start()
    assert pool.wait(10)
    assert pool.execution("My Worker-1").status is WorkerStatus.SUCCESS
    assert executions(registry, "my_worker_1") == {"started": 3, "restarted": 2, "success": 1, "error": 2}
    assert value(registry, "workers_running", worker="my_worker_1") == 0
    hist = "worker_execution_duration_seconds"
    assert value(registry, f"{hist}_count", worker="my_worker_1", status="error") == 2
    assert value(registry, f"{hist}_count", worker="my_worker_1", status="success") == 1
    assert value(registry, f"{hist}_sum", worker="my_worker_1", status="error") == pytest.approx(
        sum(durations.by_outcome["My Worker-1", "error"])
    )
    assert value(registry, f"{hist}_sum", worker="my_worker_1", status="success") == pytest.approx(
        sum(durations.by_outcome["My Worker-1", "success"])
    )
    # Attempts that fail at once land in the first bucket.
    assert value(registry, f"{hist}_bucket", worker="my_worker_1", status="error", le="0.01") == 2
    assert value(registry, f"{hist}_bucket", worker="my_worker_1", status="error", le="+Inf") == 2


def test_exhausting_attempts(registry: CollectorRegistry, harness: Harness) -> None:
    metrics = WorkerMetrics().register(registry)
    pool = harness.pool(FnWorker("doomed", fail_until(None)), max_executions_attempts=3, listeners=[metrics])
    pool.start()
    assert pool.wait(10)
    assert pool.execution("doomed").has_event("max execution attempts reached")
    assert executions(registry, "doomed") == {"started": 3, "restarted": 2, "success": 0, "error": 3}
    assert value(registry, "worker_execution_duration_seconds_count", worker="doomed", status="error") == 3
    assert value(registry, "worker_execution_duration_seconds_count", worker="doomed", status="success") == 0


def test_a_recovered_panic_counts_as_an_error(registry: CollectorRegistry, harness: Harness) -> None:
    metrics = WorkerMetrics().register(registry)
    pool = harness.pool(
        FnWorker("panicky", fail_until(2, Meltdown)),
        FnWorker("exits", fail_until(None, lambda: SystemExit(3))),
        max_executions_attempts=2,
        listeners=[metrics],
    )
    pool.start()
    assert pool.wait(10)
    assert pool.execution("panicky").has_event("restarting after panic recovery")
    assert executions(registry, "panicky") == {"started": 2, "restarted": 1, "success": 1, "error": 1}
    assert executions(registry, "exits") == {"started": 2, "restarted": 1, "success": 0, "error": 2}


def test_running_gauge_is_one_during_an_attempt_then_zero(registry: CollectorRegistry, harness: Harness) -> None:
    metrics = WorkerMetrics().register(registry)
    inside, release = threading.Event(), harness.gate()

    def body(ctx: WorkerContext) -> None:
        inside.set()
        release.wait(60)

    pool = harness.pool(FnWorker("blocker", body), FnWorker("idle"), listeners=[metrics])
    pool.start()
    assert inside.wait(10)
    assert value(registry, "workers_running", worker="blocker") == 1
    assert executions(registry, "blocker") == {"started": 1, "restarted": 0, "success": 0, "error": 0}
    release.set()
    assert pool.wait(10)
    assert value(registry, "workers_running", worker="blocker") == 0
    assert value(registry, "workers_running", worker="idle") == 0
    assert executions(registry, "blocker") == {"started": 1, "restarted": 0, "success": 1, "error": 0}


def test_async_workers_are_counted_the_same_way(registry: CollectorRegistry, harness: Harness) -> None:
    metrics = WorkerMetrics().register(registry)
    inside, release = threading.Event(), harness.gate()

    async def body(ctx: WorkerContext) -> None:
        if ctx.attempt == 1:
            raise ValueError("first attempt fails")
        inside.set()
        while not release.is_set():
            await asyncio.sleep(0.005)

    pool = harness.pool(AsyncFnWorker("async-one", body), max_executions_attempts=2, listeners=[metrics])
    pool.start()
    assert inside.wait(10)
    assert value(registry, "workers_running", worker="async_one") == 1
    release.set()
    assert pool.wait(10)
    assert value(registry, "workers_running", worker="async_one") == 0
    assert executions(registry, "async_one") == {"started": 2, "restarted": 1, "success": 1, "error": 1}


def test_a_worker_stopped_by_the_pool_counts_as_success(registry: CollectorRegistry, harness: Harness) -> None:
    metrics = WorkerMetrics().register(registry)
    inside = threading.Event()

    def body(ctx: WorkerContext) -> None:
        inside.set()
        while not ctx.sleep(60):
            pass

    pool = harness.pool(FnWorker("loop", body), listeners=[metrics])
    pool.start()
    assert inside.wait(10)
    assert pool.stop(5) == []
    assert executions(registry, "loop") == {"started": 1, "restarted": 0, "success": 1, "error": 0}
    assert value(registry, "workers_running", worker="loop") == 0


def test_a_worker_registered_after_start_gets_its_series(registry: CollectorRegistry, harness: Harness) -> None:
    metrics = WorkerMetrics().register(registry)
    pool = harness.pool(listeners=[metrics])
    pool.start()
    pool.register(FnWorker("late"))
    assert pool.wait(10)
    assert executions(registry, "late") == {"started": 1, "restarted": 0, "success": 1, "error": 0}


def test_user_facing_pool_with_metrics_as_a_listener(registry: CollectorRegistry, harness: Harness) -> None:
    metrics = WorkerMetrics().register(registry)
    pool = harness.pool(
        FnWorker("w", fail_until(2)), cls=django_workers.WorkerPool, max_executions_attempts=2, listeners=[metrics]
    )
    pool.start()
    assert pool.wait(10)
    assert executions(registry, "w") == {"started": 2, "restarted": 1, "success": 1, "error": 1}


@pytest.mark.skipif(
    "metrics" not in inspect.signature(django_workers.WorkerPool).parameters,
    reason="WorkerPool(metrics=...) is not wired yet",
)
def test_worker_pool_metrics_argument(registry: CollectorRegistry, harness: Harness) -> None:
    metrics = WorkerMetrics().register(registry)
    pool = harness.pool(FnWorker("w"), cls=django_workers.WorkerPool, metrics=metrics)
    assert pool.metrics is metrics  # type: ignore[attr-defined]
    pool.start()
    assert pool.wait(10)
    assert executions(registry, "w") == {"started": 1, "restarted": 0, "success": 1, "error": 0}


def test_events_it_does_not_count_are_ignored(registry: CollectorRegistry) -> None:
    metrics = WorkerMetrics().register(registry)
    before = series(registry)
    metrics(WorkerStopTimedOut("w", "id", 1, 1, None, WorkerStatus.RUNNING, 1.0, ""))  # type: ignore[arg-type]
    assert series(registry) == before


# -- recorder metrics ---------------------------------------------------------------------------


def test_record_dropped_and_set_heartbeat(registry: CollectorRegistry) -> None:
    from datetime import UTC, datetime

    metrics = WorkerMetrics(namespace="ns").register(registry)
    metrics.record_dropped()
    metrics.record_dropped(4)
    metrics.record_dropped(0)
    assert value(registry, "ns_worker_recorder_dropped_events_total") == 5
    metrics.set_heartbeat(1_700_000_000.5)
    assert value(registry, "ns_worker_last_heartbeat_timestamp_seconds") == 1_700_000_000.5
    metrics.set_heartbeat(datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC))
    assert value(registry, "ns_worker_last_heartbeat_timestamp_seconds") == 1704164645.0
    import time

    before = time.time()
    metrics.set_heartbeat()
    heartbeat = value(registry, "ns_worker_last_heartbeat_timestamp_seconds")
    assert heartbeat is not None and before <= heartbeat <= time.time()


@pytest.mark.parametrize("bad", [-1, 1.5, True, "2"])
def test_record_dropped_rejects_anything_but_a_count(bad: object) -> None:
    with pytest.raises(ValueError, match="record_dropped"):
        WorkerMetrics().record_dropped(bad)  # type: ignore[arg-type]


def test_set_heartbeat_rejects_naive_datetimes_and_non_numbers() -> None:
    from datetime import datetime

    metrics = WorkerMetrics()
    with pytest.raises(ValueError, match="timezone-aware"):
        metrics.set_heartbeat(datetime(2024, 1, 1))
    with pytest.raises(TypeError, match="Unix time"):
        metrics.set_heartbeat("now")  # type: ignore[arg-type]


# -- packaging: optional dependency, multiprocess mode --------------------------------------------


def test_a_clear_import_error_without_prometheus_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # None: "import prometheus_client" fails
    monkeypatch.delitem(sys.modules, "django_workers.metrics")
    monkeypatch.delitem(sys.modules, "django_workers.observability.metrics")
    for module in ("django_workers.metrics", "django_workers.observability.metrics"):
        with pytest.raises(ImportError) as info:
            importlib.import_module(module)
        assert str(info.value) == (
            "django_workers.metrics needs prometheus-client: pip install django-worker-pool[metrics]"
        )
        assert info.value.name == "prometheus_client"


def test_the_public_path_is_the_observability_module() -> None:
    assert WorkerMetrics is observability_metrics.WorkerMetrics
    assert WorkerMetrics.__module__ == "django_workers.observability.metrics"


def run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    environ.update(env, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_core_and_the_probe_do_not_import_prometheus_client() -> None:
    result = run_python(
        """
        import sys
        import django_workers, django_workers.core, django_workers.core.logs, django_workers.probe
        import django_workers.health, django_workers.health.rule, django_workers.observability.names
        print(sorted(m for m in sys.modules if m.startswith("prometheus_client")))
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


MULTIPROCESS_SCRIPT = """
    import sys
    from django_workers.core import Backoff, Worker, WorkerPool
    from django_workers.metrics import WorkerMetrics

    class Flaky(Worker):
        name = "flaky-one"

        def run(self, ctx):
            if ctx.attempt == 1:
                raise ValueError("first attempt fails")

    metrics = WorkerMetrics(namespace="mp")
    pool = WorkerPool(max_executions_attempts=2, restart_backoff=Backoff(initial=0), listeners=[metrics])
    pool.register(Flaky())
    pool.start()
    assert pool.wait(10)
    assert pool.stop(5) == []
    metrics.set_heartbeat(float(sys.argv[1]))
    metrics.record_dropped(1)
"""


def test_multiprocess_mode_aggregates_over_processes(tmp_path: Path) -> None:
    for heartbeat in ("1000", "3000", "2000"):
        code = MULTIPROCESS_SCRIPT.replace("float(sys.argv[1])", heartbeat)
        result = run_python(code, PROMETHEUS_MULTIPROC_DIR=str(tmp_path))
        assert result.returncode == 0, result.stderr
    files = sorted(p.name.rsplit("_", 1)[0] for p in tmp_path.glob("*.db"))
    assert set(files) == {"counter", "gauge_livesum", "gauge_max", "histogram"}
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(tmp_path))
    labels = {"worker": "flaky_one"}
    got = {status: value(registry, "mp_worker_executions_total", status=status, **labels) for status in STATUSES}
    assert got == {"started": 6, "restarted": 3, "success": 3, "error": 3}
    assert value(registry, "mp_worker_execution_duration_seconds_count", status="error", **labels) == 3
    assert value(registry, "mp_worker_recorder_dropped_events_total") == 3
    assert value(registry, "mp_worker_last_heartbeat_timestamp_seconds") == 3000
    assert value(registry, "mp_workers_running", **labels) == 0


# -- the status gauge ----------------------------------------------------------------------------


def status_of(registry: CollectorRegistry, label: str) -> dict[str, float]:
    return {
        dict(key)["status"]: value
        for (name, key), value in series(registry).items()
        if name == "worker_status" and dict(key)["worker"] == label
    }


def test_the_status_gauge_shows_one_status_at_a_time_exhausted_and_paused_included(
    registry: CollectorRegistry, harness: Harness
) -> None:
    metrics = WorkerMetrics().register(registry)
    log = EventLog()
    pool = harness.pool(
        failing("sync", "gives-up"),
        until_cancelled("sync", "held"),
        max_executions_attempts=2,
        listeners=[metrics, log],
    )
    pool.start()
    log.wait_until(lambda events: any(type(e).__name__ == "AttemptsExhausted" for e in events))
    gave_up = status_of(registry, "gives_up")
    assert gave_up == {status: float(status == "exhausted") for status in observability_metrics.STATUSES}
    log.wait_until(lambda events: any(type(e).__name__ == "AttemptStarted" and e.worker == "held" for e in events))
    assert status_of(registry, "held")["running"] == 1.0

    pool.pause("held", by="alice")
    log.wait_until(lambda events: any(type(e).__name__ == "WorkerPaused" for e in events))
    held = status_of(registry, "held")
    assert held == {status: float(status == "paused") for status in observability_metrics.STATUSES}

    pool.restart("gives-up")
    log.wait_until(lambda events: sum(type(e).__name__ == "AttemptsExhausted" for e in events) == 2)
    assert sum(status_of(registry, "gives_up").values()) == 1.0
