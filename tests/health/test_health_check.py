"""The django-health-check check of the web process, through the test project's URLs and the test client."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.apps import apps
from django.test import Client, override_settings
from health_check.base import HealthCheck

from django_workers import WorkerPool
from django_workers.health import Workers
from django_workers.models import ExecutionStatus, Node
from tests.health.conftest import WORKERS_CHECK, H, ready
from tests.support import wait_for

HISTORY_ON: dict[str, Any] = {"HISTORY": {"ENABLED": True}, "WORKERS": []}


def test_the_check_is_a_django_health_check_dataclass() -> None:
    assert issubclass(Workers, HealthCheck)
    assert repr(Workers()) == WORKERS_CHECK
    assert repr(Workers(database="history", hostname="worker-0")) == "Workers(database='history', hostname='worker-0')"
    assert Workers().labels == {"check": "Workers"}


def test_liveness_needs_neither_the_database_nor_the_workers(client: Client) -> None:
    response = client.get("/health/live/", HTTP_ACCEPT="application/json")
    assert (response.status_code, json.loads(response.content)) == (200, {})
    assert client.get("/health/live/").status_code == 200  # the HTML page


@pytest.mark.django_db(transaction=True)
def test_history_disabled_and_no_pool_is_a_failure_that_says_why(client: Client) -> None:
    with override_settings(WORKERS={"WORKERS": []}):
        status, body = ready(client)
    assert status == 500
    assert body["Database(alias='default')"] == "OK"
    assert body[WORKERS_CHECK].startswith(
        "Unavailable: cannot tell: the history is disabled (WORKERS['HISTORY']['ENABLED'] is False) and no "
        "worker pool was started in this process"
    )


@pytest.mark.django_db(transaction=True)
def test_history_mode_healthy_then_exhausted(
    client: Client, make_node: Callable[..., Node], make_execution: Any
) -> None:
    node = make_node(workers=["alpha"])
    make_execution(node, "alpha", attempt=1)
    with override_settings(WORKERS=HISTORY_ON):
        assert ready(client) == (200, {"Database(alias='default')": "OK", WORKERS_CHECK: "OK"})
        make_execution(node, "alpha", attempt=2, status=ExecutionStatus.ERROR)
        make_execution(node, "alpha", attempt=3, status=ExecutionStatus.ERROR)
        status, body = ready(client)
    assert status == 500
    assert body[WORKERS_CHECK] == f"Unavailable: failing workers: alpha on {node} (attempts exhausted, attempt 3/3)"


@pytest.mark.django_db(transaction=True)
def test_history_mode_stale_heartbeat(client: Client, make_node: Callable[..., Node], now: datetime) -> None:
    node = make_node(last_heartbeat=now - timedelta(minutes=5))
    with override_settings(WORKERS=HISTORY_ON):
        status, body = ready(client)
    assert status == 500
    assert body[WORKERS_CHECK].startswith(
        f"Unavailable: no live runworkers process: the last heartbeat, of {node}, is "
    )


@pytest.mark.django_db(transaction=True)
def test_the_check_leaves_no_connection_open_in_its_thread(client: Client, make_node: Callable[..., Node]) -> None:
    # The no_leaked_threads fixture and pytest-django's teardown (which drops the PostgreSQL test
    # database) both fail if the executor thread kept its connection.
    make_node()
    with override_settings(WORKERS=HISTORY_ON):
        for _ in range(3):
            assert ready(client)[0] == 200


@pytest.fixture
def app_pool() -> Iterator[Callable[[dict[str, Any]], WorkerPool]]:
    """Configures WORKERS and starts the app's pool (as a web process running its workers would)."""
    overrides: list[Any] = []

    def start(workers: dict[str, Any]) -> WorkerPool:
        override = override_settings(WORKERS=workers)
        override.enable()
        overrides.append(override)
        pool = apps.get_app_config("django_workers").pool
        pool.start()
        return pool

    yield start
    config = apps.get_app_config("django_workers")
    pool = config.reset_pool()
    try:
        if pool is not None:
            assert pool.stop(5.0) == []
    finally:
        for override in reversed(overrides):
            override.disable()


@pytest.mark.django_db
def test_in_process_pool_mode(client: Client, app_pool: Callable[..., WorkerPool], tmp_path: Path) -> None:
    trigger = tmp_path / "fail"
    pool = app_pool(
        {
            "MAX_EXECUTIONS_ATTEMPTS": 2,
            "RESTART_BACKOFF": {"INITIAL": 0},
            "WORKERS": [f"{H}.Steady", {"CLASS": f"{H}.FailsOnTrigger", "OPTIONS": {"trigger": str(trigger)}}],
        }
    )
    wait_for(lambda: all(execution.status == "running" for execution in pool.executions().values()))
    assert ready(client) == (200, {"Database(alias='default')": "OK", WORKERS_CHECK: "OK"})
    trigger.touch()
    wait_for(lambda: pool.execution("fails-on-trigger").has_event("max execution attempts reached"))
    status, body = ready(client)
    assert status == 500
    assert body[WORKERS_CHECK] == "Unavailable: steady: running, fails-on-trigger: error"


@pytest.mark.django_db
def test_in_process_silent_worker(client: Client, app_pool: Callable[..., WorkerPool], tmp_path: Path) -> None:
    trigger = tmp_path / "quiet"
    pool = app_pool(
        {"WORKERS": [{"CLASS": f"{H}.SilentOnTrigger", "OPTIONS": {"trigger": str(trigger)}, "MAX_SILENCE": 0.3}]}
    )
    wait_for(lambda: pool.execution("silent-on-trigger").status == "running")
    assert ready(client)[0] == 200
    trigger.touch()
    wait_for(lambda: pool.execution("silent-on-trigger").silent)
    status, body = ready(client)
    assert status == 500
    assert body[WORKERS_CHECK] == "Unavailable: silent-on-trigger: running (silent)"


@pytest.mark.django_db
def test_a_pool_built_but_not_started_is_not_used(client: Client) -> None:
    with override_settings(WORKERS={"WORKERS": [f"{H}.Steady"]}):
        apps.get_app_config("django_workers").pool  # built, not started
        try:
            status, body = ready(client)
        finally:
            apps.get_app_config("django_workers").reset_pool()
    assert status == 500
    assert "no worker pool was started in this process" in body[WORKERS_CHECK]
