"""Fixtures of the health tests: history rows made with the ORM, and real subprocesses on the test database.

``runworkers(*args, workers={...})`` and ``checkworkers(*args, workers={...})`` run the commands of
the test project in subprocesses whose ``default`` database is the one pytest-django created for
this session (a SQLite file, see tests/conftest.py, or the PostgreSQL test database), so that the
test reads, with the ORM or the test client, what a real ``runworkers`` wrote. Every process is
killed at teardown, before the database is flushed.
"""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from django_workers.models import Execution, ExecutionEvent, ExecutionStatus, Node
from tests.support import Completed, RunworkersProcess, StartRunworkers, node_factory, on_test_database, run_command

SETTINGS = "tests.scenarios.settings_health"
#: Dotted path prefix of the health test workers.
H = "tests.scenarios.workers_health"
#: The name of the Workers check in django-health-check's answers.
WORKERS_CHECK = "Workers(database=None, hostname=None)"


# -- rows ----------------------------------------------------------------------------------------------


@pytest.fixture
def now() -> datetime:
    return timezone.now()


@pytest.fixture
def make_node(now: datetime) -> Callable[..., Node]:
    return node_factory(now)


@pytest.fixture
def make_execution(now: datetime) -> Callable[..., Execution]:
    seconds = itertools.count()

    def make(node: Node, worker: str = "alpha", attempt: int = 1, max_attempts: int = 3, **fields: Any) -> Execution:
        created = fields.pop("created_at", None) or now - timedelta(minutes=30) + timedelta(seconds=next(seconds))
        values: dict[str, Any] = {
            "id": uuid.uuid4(),
            "node": node,
            "worker": worker,
            "attempt": attempt,
            "max_attempts": max_attempts,
            "status": ExecutionStatus.RUNNING,
            "created_at": created,
            "started_at": created,
        }
        values.update(fields)
        return Execution.objects.create(**values)

    return make


@pytest.fixture
def make_event(now: datetime) -> Callable[..., ExecutionEvent]:
    def make(execution: Execution, message: str, level: str = "INFO") -> ExecutionEvent:
        return ExecutionEvent.objects.create(
            node=execution.node, execution=execution, timestamp=now, level=level, message=message
        )

    return make


def ready(client: Client) -> tuple[int, dict[str, str]]:
    """The status and JSON body of the test project's readiness URL (django-health-check)."""
    response = client.get("/health/ready/", HTTP_ACCEPT="application/json")
    return response.status_code, json.loads(response.content)


# -- subprocesses ------------------------------------------------------------------------------------


@pytest.fixture
def runworkers(transactional_db: None, start: StartRunworkers) -> StartRunworkers:
    """A factory of ``runworkers`` subprocesses on the test database (tests/conftest.py's ``start``).

    It depends on ``transactional_db`` first: the processes are killed before the tables are flushed.
    """

    def run(*args: str, workers: dict[str, Any], env: dict[str, str] | None = None) -> RunworkersProcess:
        return start(*args, workers=workers, env=on_test_database(env), settings=SETTINGS)

    return run


@pytest.fixture
def checkworkers(tmp_path: Path) -> Callable[..., Completed]:
    """Runs ``manage.py checkworkers`` in a subprocess (as an exec probe does); killed on time-out."""

    def run(*args: str, workers: dict[str, Any], env: dict[str, str] | None = None, timeout: float = 60) -> Completed:
        return run_command(
            "checkworkers", *args, tmp_path=tmp_path, settings=SETTINGS, workers=workers, env=env, timeout=timeout
        )

    return run
