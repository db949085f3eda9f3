"""METRICS and TRACING from the settings: validation, the pool build_pool makes, the services, spans.

In-process: the pool runs in this process and its spans go to an in-memory exporter.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.checks import CheckMessage
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings
from opentelemetry.trace import StatusCode
from prometheus_client import REGISTRY, CollectorRegistry, Counter

from django_workers import runtime
from django_workers import settings as conf
from django_workers.checks import check_settings
from django_workers.http import HttpServer
from django_workers.metrics import WorkerMetrics
from django_workers.observability.exposition import MultiprocessCleanup, process_metrics
from django_workers.runtime import build_pool, build_services
from django_workers.settings import MetricsSettings, TracingSettings, load_settings
from django_workers.tracing import ATTR_WORKER, ATTR_WORKER_EXECUTION_ID, AttemptSpanHook, WorkerSpanProcessor
from tests.observability.conftest import series, worker_series
from tests.scenarios import workers_observability

P = "tests.scenarios.workers_observability"
PROVIDER = f"{P}.memory_provider"


def workers(**keys: Any) -> dict[str, Any]:
    return {"WORKERS": [f"{P}.Succeeding"], **keys}


def messages(value: dict[str, Any]) -> list[CheckMessage]:
    with override_settings(WORKERS=value):
        return check_settings()


def ids(value: dict[str, Any]) -> list[str]:
    return [message.id or "" for message in messages(value)]


@pytest.fixture(autouse=True)
def fresh_providers(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test starts without cached providers, and with no exported span."""
    monkeypatch.setattr(runtime, "_tracer_providers", {})
    workers_observability.EXPORTER.clear()
    yield
    workers_observability.EXPORTER.clear()


# -- validation --------------------------------------------------------------------------------


def test_the_new_keys_are_parsed_with_their_defaults() -> None:
    with override_settings(WORKERS=workers()):
        parsed = load_settings()
    assert parsed.metrics == MetricsSettings(enabled=True, namespace="", subsystem="", port=None, address="127.0.0.1")
    assert parsed.tracing == TracingSettings(enabled=True, provider=None)
    full = workers(
        METRICS={"ENABLED": True, "NAMESPACE": "shop", "SUBSYSTEM": "jobs", "PORT": 9100, "ADDRESS": "0.0.0.0"},
        TRACING={"ENABLED": True, "PROVIDER": PROVIDER},
    )
    with override_settings(WORKERS=full):
        parsed = load_settings()
    assert parsed.metrics == MetricsSettings(True, "shop", "jobs", 9100, "0.0.0.0")
    assert parsed.tracing == TracingSettings(True, PROVIDER)
    assert messages(full) == []
    assert messages(workers(METRICS={"PORT": None}, TRACING={"PROVIDER": None})) == []


@pytest.mark.parametrize(
    ("value", "check_id", "parts"),
    [
        (
            workers(METRICS={"PORT": "9100"}),
            "django_workers.E002",
            ("WORKERS['METRICS']['PORT'] must be an int", "(str)"),
        ),
        (workers(METRICS={"PORT": True}), "django_workers.E002", ("must be an int", "True (bool)")),
        (
            workers(METRICS={"PORT": -1}),
            "django_workers.E003",
            ("WORKERS['METRICS']['PORT'] must be a TCP port number from 0 to 65535", "got -1"),
        ),
        (
            workers(METRICS={"PORT": 65536}),
            "django_workers.E003",
            ("WORKERS['METRICS']['PORT'] must be a TCP port number from 0 to 65535", "got 65536"),
        ),
        (workers(METRICS={"ADDRESS": 127}), "django_workers.E002", ("WORKERS['METRICS']['ADDRESS'] must be a str",)),
        (workers(METRICS={"PROT": 9100}), "django_workers.W001", ("did you mean 'PORT'?",)),
        (workers(TRACING={"PROVIDR": PROVIDER}), "django_workers.W001", ("did you mean 'PROVIDER'?",)),
        (
            workers(TRACING={"PROVIDER": 42}),
            "django_workers.E002",
            ("WORKERS['TRACING']['PROVIDER'] must be a dotted path",),
        ),
        (workers(TRACING={"PROVIDER": "provider"}), "django_workers.E016", ("not a dotted path 'module.function'",)),
        (
            workers(TRACING={"PROVIDER": "myproject_nowhere.telemetry.provider"}),
            "django_workers.E016",
            ("there is no module named 'myproject_nowhere'",),
        ),
        (
            workers(TRACING={"PROVIDER": f"{P}.memory_provder"}),
            "django_workers.E016",
            ("has no attribute 'memory_provder'", "did you mean 'memory_provider'?"),
        ),
        (
            workers(TRACING={"PROVIDER": "tests.scenarios.workers_name_error.provider"}),
            "django_workers.E016",
            ("importing module 'tests.scenarios.workers_name_error' raised NameError",),
        ),
        (
            workers(TRACING={"PROVIDER": f"{P}.NOT_CALLABLE"}),
            "django_workers.E017",
            ("is not callable but", "(TracerProvider)"),
        ),
    ],
)
def test_each_mistake_is_one_check_message(value: dict[str, Any], check_id: str, parts: tuple[str, ...]) -> None:
    found = messages(value)
    assert [message.id for message in found] == [check_id], found
    (message,) = found
    for part in parts:
        assert part in message.msg, message.msg
    assert message.hint


def test_a_valid_disabled_configuration_needs_nothing() -> None:
    assert ids(workers(METRICS={"ENABLED": False, "PORT": 9100}, TRACING={"ENABLED": False})) == []


# -- build_pool: metrics ------------------------------------------------------------------------


def test_enabled_metrics_are_one_registered_object_per_process_and_prefix() -> None:
    with override_settings(WORKERS=workers(METRICS={"NAMESPACE": "exposition_tests"})):
        first, second = build_pool(), build_pool()
    assert isinstance(first.metrics, WorkerMetrics)
    assert first.metrics is second.metrics is process_metrics("exposition_tests")
    assert first.metrics.namespace == "exposition_tests"
    # Registered once in the default registry, and counting (from start(), at 0).
    assert REGISTRY.get_sample_value(
        "exposition_tests_worker_executions_total", {"worker": "succeeding", "status": "started"}
    ) in (None, 0.0)
    with override_settings(WORKERS=workers(METRICS={"NAMESPACE": "exposition_tests", "SUBSYSTEM": "other"})):
        third = build_pool()
    assert third.metrics is not first.metrics
    assert third.metrics is not None and third.metrics.subsystem == "other"


def test_a_name_clash_in_the_default_registry_is_a_configuration_error() -> None:
    clash = Counter("exposition_clash_worker_executions", "taken", registry=REGISTRY)
    try:
        with override_settings(WORKERS=workers(METRICS={"NAMESPACE": "exposition_clash"})):
            with pytest.raises(ImproperlyConfigured, match="already uses these names"):
                build_pool()
    finally:
        REGISTRY.unregister(clash)


def test_disabled_metrics_cost_nothing() -> None:
    with override_settings(WORKERS=workers(METRICS={"ENABLED": False})):
        pool = build_pool()
    assert pool.metrics is None
    assert not any(isinstance(listener, WorkerMetrics) for listener in pool.listeners)


def test_a_pool_built_from_the_settings_counts_its_attempts() -> None:
    value = {
        "MAX_EXECUTIONS_ATTEMPTS": 2,
        "RESTART_BACKOFF": {"INITIAL": 0},
        "METRICS": {"NAMESPACE": "exposition_counts"},
        "TRACING": {"ENABLED": False},
        "WORKERS": [f"{P}.Succeeding", f"{P}.Failing"],
    }
    with override_settings(WORKERS=value):
        pool = build_pool()
    with pool:
        assert pool.wait(10)
    registry = CollectorRegistry()
    assert pool.metrics is not None
    # The same counters, served from another registry (as an endpoint would).
    for collector in pool.metrics.collectors:
        registry.register(collector)
    samples = {
        (name, labels): value
        for family in registry.collect()
        for name, labels, value in ((s.name, tuple(sorted(s.labels.items())), s.value) for s in family.samples)
    }
    prefix = "exposition_counts_"
    assert worker_series(samples, "succeeding", prefix) == series(started=1, success=1)
    assert worker_series(samples, "failing", prefix) == series(started=2, restarted=1, error=2)


# -- build_services: the endpoint ------------------------------------------------------------------


def services_for(value: dict[str, Any], **overrides: Any) -> list[Any]:
    with override_settings(WORKERS=value):
        parsed = load_settings()
        pool = build_pool(parsed)
        return list(build_services(parsed, pool, **overrides))


def metrics_only(services: list[Any]) -> list[Any]:
    return [
        service
        for service in services
        if isinstance(service, MultiprocessCleanup) or (isinstance(service, HttpServer) and service.metrics is not None)
    ]


def test_no_port_no_endpoint() -> None:
    assert metrics_only(services_for(workers())) == []


def test_the_settings_port_and_address_make_an_endpoint_that_the_options_override() -> None:
    (endpoint,) = metrics_only(services_for(workers(METRICS={"PORT": 9100, "ADDRESS": "0.0.0.0"})))
    assert (endpoint.port, endpoint.address, endpoint.paths) == (9100, "0.0.0.0", ("/metrics",))
    assert endpoint.name == "HTTP server on http://0.0.0.0:9100 (/metrics)"
    (endpoint,) = metrics_only(services_for(workers(METRICS={"PORT": 9100}), metrics_port=9200, metrics_address="::1"))
    assert (endpoint.port, endpoint.address) == (9200, "::1")
    assert endpoint.url == "http://[::1]:9200"


def test_metrics_options_without_metrics_are_a_value_error() -> None:
    with pytest.raises(ValueError, match=r"metrics are disabled \(WORKERS\['METRICS'\]\['ENABLED'\] is False\)"):
        services_for(workers(METRICS={"ENABLED": False}), metrics_port=9100)
    assert metrics_only(services_for(workers(METRICS={"ENABLED": False, "PORT": 9100}))) == []


def test_multiprocess_mode_adds_the_cleanup_and_django_prometheus_replaces_the_endpoint(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(runtime, "django_prometheus_export", lambda: None)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    services = metrics_only(services_for(workers()))
    assert [type(service) for service in services] == [MultiprocessCleanup]
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")
    with monkeypatch.context() as exported:
        exported.setattr(runtime, "django_prometheus_export", lambda: "127.0.0.1:8001 (PROMETHEUS_METRICS_EXPORT_PORT)")
        assert metrics_only(services_for(workers(METRICS={"PORT": 9100}))) == []
    assert [type(s) for s in metrics_only(services_for(workers(METRICS={"PORT": 9100})))] == [HttpServer]


# -- build_pool: tracing -----------------------------------------------------------------------------


def test_tracing_with_a_provider_factory_makes_one_span_per_attempt() -> None:
    value = {
        "MAX_EXECUTIONS_ATTEMPTS": 2,
        "RESTART_BACKOFF": {"INITIAL": 0},
        "METRICS": {"ENABLED": False},
        "TRACING": {"ENABLED": True, "PROVIDER": PROVIDER},
        "WORKERS": [f"{P}.Succeeding", f"{P}.Failing"],
    }
    with override_settings(WORKERS=value):
        pool = build_pool()
    assert pool.tracer_provider is runtime.tracer_provider(PROVIDER)
    with pool:
        assert pool.wait(10)
    spans = workers_observability.EXPORTER.get_finished_spans()
    attempts = [span for span in spans if span.name.startswith("worker ")]
    assert sorted(span.name for span in attempts) == ["worker failing", "worker failing", "worker succeeding"]
    executions = {execution.name: execution for execution in pool.executions().values()}
    ok = next(span for span in attempts if span.name == "worker succeeding")
    assert ok.attributes is not None
    assert ok.attributes[ATTR_WORKER] == "succeeding"
    assert ok.attributes[ATTR_WORKER_EXECUTION_ID] == executions["succeeding"].id
    assert ok.status.status_code == StatusCode.UNSET
    failed = [span for span in attempts if span.name == "worker failing"]
    assert [span.status.status_code for span in failed] == [StatusCode.ERROR, StatusCode.ERROR]
    assert [span.attributes["worker.attempt"] for span in failed if span.attributes] == [1, 2]
    assert all(event.name == "exception" for span in failed for event in span.events)
    # A span of the worker itself: child of the attempt span, annotated by the pool's processor.
    (child,) = [span for span in spans if span.name == "unit of work"]
    assert child.parent is not None and child.parent.span_id == ok.context.span_id
    assert child.attributes is not None and child.attributes[ATTR_WORKER] == "succeeding"


def test_the_factory_is_called_once_per_process() -> None:
    before = workers_observability.CALLS["memory_provider"]
    with override_settings(WORKERS=workers(TRACING={"PROVIDER": PROVIDER})):
        first, second = build_pool(), build_pool()
    assert workers_observability.CALLS["memory_provider"] == before + 1
    assert first.tracer_provider is second.tracer_provider
    # Annotated once (by the pool), however many pools use it.
    processors = first.tracer_provider._active_span_processor._span_processors  # type: ignore[union-attr]
    assert sum(isinstance(processor, WorkerSpanProcessor) for processor in processors) == 1


def test_tracing_without_a_provider_uses_the_global_one_and_sets_nothing() -> None:
    with override_settings(WORKERS=workers()):
        pool = build_pool()
    assert pool.tracer_provider is None
    hooks = [hook for hook in pool.attempt_hooks if isinstance(hook, AttemptSpanHook)]
    assert len(hooks) == 1 and hooks[0].tracer_provider is None


def test_disabled_tracing_has_no_span_hook_and_calls_no_factory() -> None:
    before = workers_observability.CALLS["memory_provider"]
    with override_settings(WORKERS=workers(TRACING={"ENABLED": False, "PROVIDER": PROVIDER})):
        pool = build_pool()
    assert pool.tracer_provider is None
    assert not any(isinstance(hook, AttemptSpanHook) for hook in pool.attempt_hooks)
    assert workers_observability.CALLS["memory_provider"] == before


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        ("broken_provider", r"raised RuntimeError: no collector configured"),
        ("not_a_provider", r"returned \{'not': 'a provider'\} \(dict\), which is not a TracerProvider"),
    ],
)
def test_a_factory_that_fails_is_a_configuration_error(factory: str, message: str) -> None:
    with override_settings(WORKERS=workers(TRACING={"PROVIDER": f"{P}.{factory}"})):
        with pytest.raises(ImproperlyConfigured, match=message):
            build_pool()


def test_the_new_check_ids_are_documented() -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "settings.md").read_text()
    for check_id in (
        conf.E_TRACER_PROVIDER_NOT_FOUND,
        conf.E_TRACER_PROVIDER_NOT_CALLABLE,
        conf.W_NO_OPENTELEMETRY,
        conf.W_NO_PROMETHEUS_CLIENT,
    ):
        assert f"| `{check_id}` |" in text, check_id
    for key in ("`PORT`", "`ADDRESS`", "`PROVIDER`"):
        assert key in text
