"""settings.WORKERS parsed into dataclasses, and the pool built from them."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import FrozenInstanceError
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from django_workers import Backoff, WorkerPool, WorkerStatus, db
from django_workers.core.context import WorkerContext
from django_workers.runtime import build_pool
from django_workers.settings import (
    HistorySettings,
    MetricsSettings,
    TracingSettings,
    WorkerSpec,
    WorkersSettings,
    load_settings,
    select_workers,
)
from tests.scenarios.workers_fixtures import PATH, AsyncWorker, ClassicWorker, OptionsWorker, SleepyWorker

FULL = {
    "DEFERRED_START_THRESHOLD": 0.25,
    "MAX_EXECUTIONS_ATTEMPTS": 3,
    "RESTART_BACKOFF": {"INITIAL": 0.5, "MAXIMUM": 8, "MULTIPLIER": 3, "JITTER": 0},
    "STOP_TIMEOUT": 12,
    "HISTORY_SIZE": 20,
    "HISTORY": {"ENABLED": True, "DATABASE": "default", "RETENTION_DAYS": 30},
    "METRICS": {"ENABLED": False, "NAMESPACE": "shop", "SUBSYSTEM": "jobs"},
    "TRACING": {"ENABLED": False},
    "WORKERS": [
        f"{PATH}.ClassicWorker",
        {
            "CLASS": f"{PATH}.OptionsWorker",
            "MAX_EXECUTIONS_ATTEMPTS": 0,
            "DEFERRED_START_THRESHOLD": 3,
            "OPTIONS": {"queue": "emails", "batch_size": 50},
            "RESTART_BACKOFF": {"MAXIMUM": 60},
        },
        {"CLASS": f"{PATH}.OptionsWorker", "OPTIONS": {"queue": "sms"}},
        f"{PATH}.AsyncWorker",
    ],
}


def test_a_full_configuration_is_parsed_into_the_dataclasses() -> None:
    with override_settings(WORKERS=FULL):
        loaded = load_settings()

    assert loaded.deferred_start_threshold == 0.25
    assert loaded.max_executions_attempts == 3
    assert loaded.restart_backoff == Backoff(initial=0.5, maximum=8.0, multiplier=3.0, jitter=0.0)
    assert loaded.stop_timeout == 12.0
    assert isinstance(loaded.stop_timeout, float)
    assert loaded.history_size == 20
    assert loaded.history == HistorySettings(enabled=True, database="default", retention_days=30)
    assert loaded.metrics == MetricsSettings(enabled=False, namespace="shop", subsystem="jobs")
    assert loaded.tracing == TracingSettings(enabled=False)

    classic, emails, sms, async_ = loaded.workers
    assert classic == WorkerSpec(path=f"{PATH}.ClassicWorker", worker_class=ClassicWorker, name="classic")
    assert classic.options == {}
    assert (classic.deferred_start_threshold, classic.max_executions_attempts, classic.restart_backoff) == (
        None,
        None,
        None,
    )
    assert emails.path == f"{PATH}.OptionsWorker"
    assert emails.worker_class is OptionsWorker
    assert emails.name == "consumer-emails"
    assert emails.options == {"queue": "emails", "batch_size": 50}
    assert emails.max_executions_attempts == 0
    assert emails.deferred_start_threshold == 3.0
    assert isinstance(emails.deferred_start_threshold, float)
    # Missing backoff keys of a worker come from the pool's RESTART_BACKOFF.
    assert emails.restart_backoff == Backoff(initial=0.5, maximum=60.0, multiplier=3.0, jitter=0.0)
    assert sms.name == "consumer-sms"
    assert sms.options == {"queue": "sms"}
    assert async_.worker_class is AsyncWorker
    assert loaded.worker_names() == ["classic", "consumer-emails", "consumer-sms", "async"]


def test_the_defaults() -> None:
    with override_settings(WORKERS={"WORKERS": []}):
        loaded = load_settings()
    assert loaded == WorkersSettings()
    assert loaded.deferred_start_threshold == 0.0
    assert loaded.max_executions_attempts == 1
    assert loaded.restart_backoff == Backoff(initial=1.0, maximum=30.0, multiplier=2.0, jitter=0.1)
    assert loaded.stop_timeout == 25.0
    assert loaded.history_size == 100
    assert loaded.history == HistorySettings(enabled=False, database="default", retention_days=7)
    assert loaded.metrics == MetricsSettings(enabled=True, namespace="", subsystem="")
    assert loaded.tracing == TracingSettings(enabled=True)
    assert loaded.workers == ()


def test_partial_sections_keep_the_other_defaults() -> None:
    with override_settings(
        WORKERS={"RESTART_BACKOFF": {"INITIAL": 0}, "HISTORY": {"ENABLED": True}, "METRICS": {}, "WORKERS": []}
    ):
        loaded = load_settings()
    assert loaded.restart_backoff == Backoff(initial=0.0, maximum=30.0, multiplier=2.0, jitter=0.1)
    assert loaded.history == HistorySettings(enabled=True)
    assert loaded.metrics == MetricsSettings()


def test_a_backoff_instance_and_none_overrides_are_accepted() -> None:
    backoff = Backoff(initial=0, maximum=0)
    workers = {
        "RESTART_BACKOFF": backoff,
        "WORKERS": [
            {
                "CLASS": f"{PATH}.ClassicWorker",
                "OPTIONS": None,
                "MAX_EXECUTIONS_ATTEMPTS": None,
                "DEFERRED_START_THRESHOLD": None,
                "RESTART_BACKOFF": Backoff(initial=2, maximum=4),
            }
        ],
    }
    with override_settings(WORKERS=workers):
        loaded = load_settings()
    assert loaded.restart_backoff is backoff
    [spec] = loaded.workers
    assert spec.restart_backoff == Backoff(initial=2, maximum=4)
    assert (spec.options, spec.max_executions_attempts, spec.deferred_start_threshold) == ({}, None, None)


def test_settings_are_read_lazily_on_every_call() -> None:
    with override_settings(WORKERS={"STOP_TIMEOUT": 1, "WORKERS": []}):
        assert load_settings().stop_timeout == 1.0
    with override_settings(WORKERS={"STOP_TIMEOUT": 2, "WORKERS": []}):
        assert load_settings().stop_timeout == 2.0


def test_the_parsed_settings_are_immutable() -> None:
    with override_settings(WORKERS=FULL):
        loaded = load_settings()
    with pytest.raises(FrozenInstanceError):
        loaded.stop_timeout = 1.0  # type: ignore[misc]
    with pytest.raises(FrozenInstanceError):
        loaded.workers[1].name = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        loaded.workers[1].options["queue"] = "other"  # type: ignore[index]
    assert isinstance(loaded.workers, tuple)


def test_the_options_are_copied_from_the_settings() -> None:
    options = {"queue": "emails"}
    with override_settings(WORKERS={"WORKERS": [{"CLASS": f"{PATH}.OptionsWorker", "OPTIONS": options}]}):
        [spec] = load_settings().workers
    options["queue"] = "changed"
    assert spec.options == {"queue": "emails"}


def test_instantiate_passes_the_options_as_keyword_arguments() -> None:
    spec = WorkerSpec(
        path=f"{PATH}.OptionsWorker", worker_class=OptionsWorker, name="consumer-q", options={"queue": "q"}
    )
    first, second = spec.instantiate(), spec.instantiate()
    assert isinstance(first, OptionsWorker)
    assert (first.queue, first.batch_size, first.name) == ("q", 10, "consumer-q")
    assert first is not second


# -- build_pool -------------------------------------------------------------------------------------


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, dict[str, Any]]]:
    """Records every (worker, overrides) that build_pool registers."""
    calls: list[tuple[Any, dict[str, Any]]] = []
    original = WorkerPool.register

    def spy(self: WorkerPool, worker: Any, **overrides: Any) -> WorkerPool:
        calls.append((worker, overrides))
        return original(self, worker, **overrides)

    monkeypatch.setattr(WorkerPool, "register", spy)
    return calls


def test_build_pool_registers_every_worker_with_its_overrides_and_options(
    registered: list[tuple[Any, dict[str, Any]]],
) -> None:
    with override_settings(WORKERS=FULL):
        pool = build_pool()

    assert isinstance(pool, WorkerPool)
    assert not pool.started
    assert pool.names() == ["classic", "consumer-emails", "consumer-sms", "async"]
    assert (pool.deferred_start_threshold, pool.max_executions_attempts, pool.stop_timeout) == (0.25, 3, 12.0)
    assert pool.restart_backoff == Backoff(initial=0.5, maximum=8.0, multiplier=3.0, jitter=0.0)
    assert pool.history_size == 20

    executions = pool.executions()
    assert {name: execution.status for name, execution in executions.items()} == dict.fromkeys(
        pool.names(), WorkerStatus.UNKNOWN
    )
    classic, emails, sms = executions["classic"], executions["consumer-emails"], executions["consumer-sms"]
    assert (classic.max_executions_attempts, classic.deferred_start_threshold) == (3, 0.25)  # pool defaults
    assert (emails.max_executions_attempts, emails.deferred_start_threshold) == (0, 3.0)  # overrides
    assert (sms.max_executions_attempts, sms.deferred_start_threshold) == (3, 0.25)

    workers = {worker.name: (worker, overrides) for worker, overrides in registered}
    emails_worker, emails_overrides = workers["consumer-emails"]
    assert isinstance(emails_worker, OptionsWorker)
    assert (emails_worker.queue, emails_worker.batch_size) == ("emails", 50)
    assert emails_overrides == {
        "deferred_start_threshold": 3.0,
        "max_executions_attempts": 0,
        "restart_backoff": Backoff(initial=0.5, maximum=60.0, multiplier=3.0, jitter=0.0),
        "max_silence": None,
        "restart_on_silence": False,
        "singleton": False,
    }
    sms_worker, sms_overrides = workers["consumer-sms"]
    assert (sms_worker.queue, sms_worker.batch_size) == ("sms", 10)
    assert sms_overrides == {
        "deferred_start_threshold": None,
        "max_executions_attempts": None,
        "restart_backoff": None,
        "max_silence": None,
        "restart_on_silence": False,
        "singleton": False,
    }


def test_build_pool_makes_new_instances_each_time() -> None:
    with override_settings(WORKERS={"WORKERS": [f"{PATH}.ClassicWorker"]}):
        first, second = build_pool(), build_pool()
    assert first is not second
    assert first.names() == second.names() == ["classic"]


def test_build_pool_accepts_settings_and_a_stop_timeout() -> None:
    settings = WorkersSettings(
        stop_timeout=9.0,
        workers=(WorkerSpec(path=f"{PATH}.ClassicWorker", worker_class=ClassicWorker, name="classic"),),
    )
    assert build_pool(settings).stop_timeout == 9.0
    assert build_pool(settings, stop_timeout=2.5).stop_timeout == 2.5
    assert build_pool(settings).names() == ["classic"]


def test_build_pool_raises_improperly_configured_for_invalid_settings() -> None:
    with override_settings(WORKERS={"WORKERS": [f"{PATH}.Missing"]}), pytest.raises(ImproperlyConfigured) as info:
        build_pool()
    assert "django_workers.E008" in str(info.value)


def test_build_pool_reports_a_constructor_that_fails_late() -> None:
    class Flaky(ClassicWorker):
        def __init__(self) -> None:
            raise OSError("no route to host")

    settings = WorkersSettings(workers=(WorkerSpec(path="x.Flaky", worker_class=Flaky, name="classic"),))
    with pytest.raises(ImproperlyConfigured, match=r"'classic' \(x.Flaky\) could not be instantiated: OSError"):
        build_pool(settings)


SELECTION = {
    "WORKERS": [
        f"{PATH}.ClassicWorker",
        f"{PATH}.SleepyWorker",
        {"CLASS": f"{PATH}.OptionsWorker", "OPTIONS": {"queue": "emails"}},
    ]
}


@pytest.mark.parametrize(
    ("only", "exclude", "names"),
    [
        ((), (), ["classic", "sleepy", "consumer-emails"]),
        (["sleepy"], (), ["sleepy"]),
        (["consumer-emails", "classic"], (), ["classic", "consumer-emails"]),  # configured order
        (["sleepy", "sleepy"], (), ["sleepy"]),
        ((), ["sleepy"], ["classic", "consumer-emails"]),
        (["classic", "sleepy"], ["sleepy"], ["classic"]),
        ((), ["classic", "sleepy", "consumer-emails"], []),
    ],
)
def test_only_and_exclude_filter_by_worker_name(only: list[str], exclude: list[str], names: list[str]) -> None:
    with override_settings(WORKERS=SELECTION):
        assert build_pool(only=only, exclude=exclude).names() == names


def test_an_unknown_name_is_a_value_error_naming_the_known_ones() -> None:
    with override_settings(WORKERS=SELECTION), pytest.raises(ValueError) as info:
        build_pool(only=["sleppy"])
    assert str(info.value) == (
        "unknown worker 'sleppy' (did you mean 'sleepy'?); configured workers: classic, sleepy, consumer-emails"
    )


def test_several_unknown_names_are_all_named() -> None:
    with override_settings(WORKERS=SELECTION), pytest.raises(ValueError) as info:
        build_pool(only=["classic"], exclude=["zzz", "emails"])
    assert "unknown workers 'zzz', 'emails' (did you mean 'consumer-emails'?)" in str(info.value)


def test_an_unknown_name_with_no_worker_configured() -> None:
    with override_settings(WORKERS={"WORKERS": []}), pytest.raises(ValueError, match="none"):
        build_pool(only=["classic"])


def test_select_workers_refuses_a_bare_string() -> None:
    with pytest.raises(TypeError):
        select_workers((), only="classic")


@contextlib.contextmanager
def _recording_hook(calls: list[str], ctx: WorkerContext) -> Iterator[None]:
    calls.append(ctx.worker_name)
    yield


def test_the_pool_runs_the_database_hygiene_around_attempts(monkeypatch: pytest.MonkeyPatch) -> None:
    hooked: list[str] = []
    finished: list[object] = []
    monkeypatch.setattr(db, "connection_hygiene", lambda ctx: _recording_hook(hooked, ctx))
    monkeypatch.setattr(db, "close_thread_connections", finished.append)

    with override_settings(WORKERS={"WORKERS": [f"{PATH}.ClassicWorker"]}):
        pool = build_pool()
    pool.start()
    try:
        assert pool.wait(timeout=10)
    finally:
        assert pool.stop(timeout=10) == []

    assert hooked == ["classic"]
    assert finished, "the thread-end listener received the lifecycle events"
    assert pool.execution("classic").status == WorkerStatus.SUCCESS


def test_a_built_pool_stops_its_workers() -> None:
    with override_settings(WORKERS={"WORKERS": [f"{PATH}.SleepyWorker", f"{PATH}.AsyncWorker"]}):
        pool = build_pool(stop_timeout=10)
    pool.start()
    assert pool.stop() == []
    assert pool.names() == [SleepyWorker.name, AsyncWorker.name]
    assert pool.execution(SleepyWorker.name).status == WorkerStatus.SUCCESS
