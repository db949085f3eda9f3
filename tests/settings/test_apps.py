"""The AppConfig: a lazily built, cached pool; a ready() that does nothing costly."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator

import pytest
from django.apps import apps
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from django_workers import WorkerPool, runtime
from django_workers.apps import DjangoWorkersConfig
from django_workers.checks import check_settings
from tests.scenarios.workers_fixtures import PATH
from tests.support import ROOT

CLASSIC = {"WORKERS": [f"{PATH}.ClassicWorker"]}
SLEEPY = {"WORKERS": [f"{PATH}.SleepyWorker"]}


@pytest.fixture
def config() -> Iterator[DjangoWorkersConfig]:
    """The app config, with WORKERS = CLASSIC (not the test project's demo workers) and no cached pool."""
    app_config = apps.get_app_config("django_workers")
    assert isinstance(app_config, DjangoWorkersConfig)
    with override_settings(WORKERS=CLASSIC):
        assert app_config._pool is None  # entering override_settings reset it
        yield app_config
    app_config.reset_pool()


def test_the_app_config(config: DjangoWorkersConfig) -> None:
    assert config.name == "django_workers"
    assert config.verbose_name == "Workers"
    assert config.default_auto_field == "django.db.models.BigAutoField"


def test_the_pool_is_built_on_first_access_and_cached(config: DjangoWorkersConfig) -> None:
    assert config._pool is None
    pool = config.pool
    assert isinstance(pool, WorkerPool)
    assert not pool.started
    assert pool.names() == ["classic"]
    assert config.pool is pool


def test_the_pool_is_rebuilt_after_override_settings(config: DjangoWorkersConfig) -> None:
    before = config.pool
    with override_settings(WORKERS=SLEEPY):
        inside = config.pool
        assert inside is not before
        assert inside.names() == ["sleepy"]
        with override_settings(WORKERS={"WORKERS": []}):
            assert config.pool.names() == []
        assert config.pool is not inside
        assert config.pool.names() == ["sleepy"]
    after = config.pool
    assert after is not before
    assert after.names() == ["classic"]


def test_other_settings_leave_the_pool_alone(config: DjangoWorkersConfig) -> None:
    pool = config.pool
    with override_settings(USE_TZ=True, SECRET_KEY="another"):
        assert config.pool is pool


def test_reset_pool_returns_the_old_pool(config: DjangoWorkersConfig) -> None:
    assert config.reset_pool() is None
    pool = config.pool
    assert config.reset_pool() is pool
    assert config.pool is not pool


def test_concurrent_first_accesses_build_one_pool(config: DjangoWorkersConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[WorkerPool] = []
    entered = threading.Event()
    release = threading.Event()

    def slow_build_pool() -> WorkerPool:
        entered.set()
        release.wait(10)
        pool = WorkerPool()
        built.append(pool)
        return pool

    monkeypatch.setattr(runtime, "build_pool", slow_build_pool)
    results: list[WorkerPool] = []
    barrier = threading.Barrier(8)

    def access() -> None:
        barrier.wait(10)
        results.append(config.pool)

    threads = [threading.Thread(target=access) for _ in range(8)]
    for thread in threads:
        thread.start()
    assert entered.wait(10)
    release.set()
    for thread in threads:
        thread.join(10)

    assert len(built) == 1
    assert len(results) == 8
    assert all(pool is built[0] for pool in results)


def test_invalid_settings_raise_on_access_and_nothing_is_cached(config: DjangoWorkersConfig) -> None:
    with override_settings(WORKERS={"WORKERS": [f"{PATH}.Missing"]}):
        with pytest.raises(ImproperlyConfigured, match=r"django_workers\.E008"):
            config.pool
        assert config._pool is None
    assert config.pool.names() == ["classic"]


def test_a_started_pool_is_dropped_but_not_stopped_when_the_setting_changes(
    config: DjangoWorkersConfig, caplog: pytest.LogCaptureFixture
) -> None:
    running = config.pool
    running.start()
    try:
        with caplog.at_level(logging.WARNING, logger="django_workers"), override_settings(WORKERS=SLEEPY):
            assert config.pool is not running
            assert config.pool.names() == ["sleepy"]
            assert running.started
            assert not running.stopping
        assert "settings.WORKERS changed while the worker pool was running" in caplog.text
    finally:
        assert running.stop(timeout=10) == []


def test_a_stopped_pool_is_dropped_silently(config: DjangoWorkersConfig, caplog: pytest.LogCaptureFixture) -> None:
    pool = config.pool
    pool.start()
    assert pool.stop(timeout=10) == []
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="django_workers"), override_settings(WORKERS=SLEEPY):
        assert config.pool is not pool
    assert "changed while the worker pool was running" not in caplog.text


def test_ready_registers_the_check_and_touches_nothing(config: DjangoWorkersConfig) -> None:
    module = "tests.scenarios.workers_name_error"
    sys.modules.pop(module, None)
    threads = threading.active_count()
    with override_settings(WORKERS={"WORKERS": [f"{module}.BrokenWorker"]}):
        config.ready()  # idempotent; a broken worker module is not its business
        assert config._pool is None
    assert module not in sys.modules
    assert threading.active_count() == threads
    assert check_settings in checks.registry.registry.get_checks()


@pytest.mark.slow
def test_django_setup_imports_no_worker_module_and_opens_nothing() -> None:
    script = textwrap.dedent(
        """
        import threading, sys
        import django
        django.setup()
        from django.apps import apps
        from django.db import connections
        config = apps.get_app_config("django_workers")
        probe = "tests.scenarios.workers_import_probe"
        print("imported:", probe in sys.modules)
        print("pool:", config._pool)
        print("threads:", threading.active_count())
        print("connected:", any(connection.connection is not None for connection in connections.all()))
        print("names:", config.pool.names())
        print("imported:", probe in sys.modules)
        """
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.scenarios.settings_lazy_probe",
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "testproject")]),
    }
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "imported: False",
        "pool: None",
        "threads: 1",
        "connected: False",
        "names: ['probe']",
        "imported: True",
    ]
