"""One construction of each worker per process: the system checks, load_settings(), build_pool() and the
AppConfig's pool share the instances of the last validation, never a stale one, never one in two pools."""

from __future__ import annotations

from collections.abc import Iterator
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.apps import apps
from django.core.management import call_command
from django.test import override_settings

from django_workers import Worker, WorkerPool
from django_workers.apps import DjangoWorkersConfig
from django_workers.checks import check_settings
from django_workers.runtime import build_pool
from django_workers.settings import E_CONSTRUCTOR_FAILED, load_settings, validate_settings
from django_workers.settings.workers import checkpoint_before_constructing
from tests.scenarios.workers_startup import PATH, Counted, constructions


def counted(record: Path, *names: str) -> dict[str, Any]:
    return {"WORKERS": [{"CLASS": f"{PATH}.Counted", "OPTIONS": {"record": str(record), "name": n}} for n in names]}


@pytest.fixture
def record(tmp_path: Path) -> Path:
    return tmp_path / "constructions"


@pytest.fixture
def config() -> Iterator[DjangoWorkersConfig]:
    """The app config; its pool is dropped at the end (override_settings resets it on the way in and out)."""
    app_config = apps.get_app_config("django_workers")
    assert isinstance(app_config, DjangoWorkersConfig)
    yield app_config
    app_config.reset_pool()


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> list[Worker]:
    """Every worker instance a pool registers, in order."""
    workers: list[Worker] = []
    original = WorkerPool.register

    def spy(self: WorkerPool, worker: Worker, **overrides: Any) -> WorkerPool:
        workers.append(worker)
        return original(self, worker, **overrides)

    monkeypatch.setattr(WorkerPool, "register", spy)
    return workers


@pytest.mark.django_db  # Django 6's own model checks query the database (SQLite's JSON support)
def test_the_checks_and_the_pool_of_a_web_process_construct_each_worker_once(
    record: Path, config: DjangoWorkersConfig
) -> None:
    with override_settings(WORKERS=counted(record, "alpha", "beta")):
        call_command("check", stdout=StringIO(), stderr=StringIO())
        assert constructions(record) == ["alpha", "beta"]
        load_settings()
        assert config.pool.names() == ["alpha", "beta"]
        assert config.pool is config.pool
    assert constructions(record) == ["alpha", "beta"]


def test_each_pool_gets_instances_of_its_own(record: Path, registered: list[Worker]) -> None:
    with override_settings(WORKERS=counted(record, "alpha")):
        first, second = build_pool(), build_pool()
    assert first.names() == second.names() == ["alpha"]
    assert len(registered) == 2
    assert registered[0] is not registered[1]
    assert constructions(record) == ["alpha", "alpha"]


def test_a_setting_change_drops_the_instances_waiting_for_a_pool(
    record: Path, config: DjangoWorkersConfig, registered: list[Worker]
) -> None:
    """A constructor may read any setting: an instance built before a change is not handed out after it."""
    workers = counted(record, "alpha")
    with override_settings(WORKERS=workers, STARTUP_TEST_TAG="before"):
        assert check_settings() == []
    with override_settings(WORKERS=workers, STARTUP_TEST_TAG="after"):
        assert config.pool.names() == ["alpha"]
    [worker] = registered
    assert isinstance(worker, Counted)
    assert worker.tag == "after"
    assert constructions(record) == ["alpha", "alpha"]


def test_new_options_make_a_new_instance(record: Path, tmp_path: Path, config: DjangoWorkersConfig) -> None:
    other = tmp_path / "other"
    with override_settings(WORKERS=counted(record, "alpha")):
        assert check_settings() == []
        with override_settings(WORKERS=counted(other, "alpha")):
            assert config.pool.names() == ["alpha"]
    assert constructions(record) == ["alpha"]
    assert constructions(other) == ["alpha"]


def test_the_checkpoint_runs_before_each_construction_and_may_end_the_validation(record: Path) -> None:
    calls: list[int] = []

    class Interrupted(BaseException):
        pass

    def checkpoint() -> None:
        calls.append(len(constructions(record)))
        if len(calls) == 2:
            raise Interrupted

    with override_settings(WORKERS=counted(record, "alpha", "beta", "gamma")):
        with checkpoint_before_constructing(checkpoint), pytest.raises(Interrupted):
            check_settings()
    assert calls == [0, 1]  # before alpha, then before beta, which is never built
    assert constructions(record) == ["alpha"]

    calls.clear()
    with override_settings(WORKERS=counted(record, "alpha")):
        assert check_settings() == []
        with checkpoint_before_constructing(checkpoint):
            assert check_settings() == []  # alpha is reused: nothing is constructed
    assert calls == []
    assert constructions(record) == ["alpha", "alpha"]


def test_a_constructor_calling_sys_exit_is_a_check_error() -> None:
    """Not an exit of the process with status 1 and no message."""
    validation = validate_settings({"WORKERS": [f"{PATH}.ExitingConstructor"]})
    [message] = validation.errors
    assert message.id == E_CONSTRUCTOR_FAILED
    assert "ExitingConstructor() raised SystemExit: 1" in message.msg
