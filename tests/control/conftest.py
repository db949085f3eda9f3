"""Fixtures of the control tests: users, history rows, and real subprocesses on the test database.

``runworkers(*args, workers={...})`` and ``controlworkers(*args, workers={...})`` run the commands of
the test project in subprocesses whose ``default`` database is the one pytest-django created for
this session (a SQLite file, see tests/conftest.py, or the PostgreSQL test database), so that a
request recorded here (``submit()``, the test client) is read by the subprocess, and what the
subprocess records is read here. Every process is killed at teardown, before the database is flushed.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.utils import timezone

from django_workers.models import Node
from tests.history.conftest import switchable  # noqa: F401 - a fixture of the pickup's outage test
from tests.support import Completed, RunworkersProcess, StartRunworkers, node_factory, on_test_database, run_command

#: The settings of the subprocesses: the runworkers scenario on the test's own database.
SETTINGS = "tests.scenarios.settings_control"
#: Dotted path prefix of the workers the subprocesses run.
W = "tests.scenarios.workers_runworkers"

POSTGRESQL = bool(os.environ.get("DATABASE_URL"))

needs_postgresql = pytest.mark.skipif(
    not POSTGRESQL, reason="needs PostgreSQL: set DATABASE_URL (the PostgreSQL pass of `make test` does)"
)


def control_workers(workers: list[Any], heartbeat: float = 0.5, **top: Any) -> dict[str, Any]:
    """A WORKERS setting with history on, the given heartbeat interval (the poll of control requests)."""
    return {
        "MAX_EXECUTIONS_ATTEMPTS": 2,
        "RESTART_BACKOFF": {"INITIAL": 0.05, "MAXIMUM": 0.05},
        "STOP_TIMEOUT": 10,
        "HISTORY": {"ENABLED": True, "HEARTBEAT_INTERVAL": heartbeat, "ORPHAN_GRACE": max(3 * heartbeat, 1.0)},
        "WORKERS": workers,
        **top,
    }


# -- rows and users ------------------------------------------------------------------------------------


@pytest.fixture
def make_node() -> Callable[..., Node]:
    return node_factory(timezone.now())


def make_user(username: str, *, staff: bool = True, superuser: bool = False, perms: tuple[str, ...] = ()) -> User:
    user = User.objects.create_user(username, password="pw", is_staff=staff, is_superuser=superuser)
    if perms:
        user.user_permissions.add(
            *Permission.objects.filter(content_type__app_label="django_workers", codename__in=perms)
        )
    return User.objects.get(pk=user.pk)  # no cached permissions


#: What an operator who controls workers holds: see the executions and the requests, and control.
OPERATOR_PERMISSIONS = ("view_execution", "view_node", "view_controlrequest", "control_workers")
#: What view-only staff hold.
VIEWER_PERMISSIONS = ("view_execution", "view_node", "view_controlrequest")


@pytest.fixture
def operator(transactional_db: None) -> User:
    return make_user("alice", perms=OPERATOR_PERMISSIONS)


@pytest.fixture
def viewer(transactional_db: None) -> User:
    return make_user("victor", perms=VIEWER_PERMISSIONS)


def logged_in(user: User, *, csrf: bool = False) -> Client:
    client = Client(enforce_csrf_checks=csrf)
    client.force_login(user)
    return client


# -- subprocesses --------------------------------------------------------------------------------------


@pytest.fixture
def runworkers(transactional_db: None, start: StartRunworkers) -> StartRunworkers:
    """A factory of ``runworkers`` subprocesses on the test database (tests/conftest.py's ``start``).

    It depends on ``transactional_db`` first: the processes are killed before the tables are flushed.
    """

    def run(*args: str, workers: dict[str, Any], env: dict[str, str] | None = None) -> RunworkersProcess:
        return start(*args, workers=workers, env=on_test_database(env), settings=SETTINGS)

    return run


@pytest.fixture
def controlworkers(tmp_path: Path) -> Callable[..., Completed]:
    """Runs ``manage.py controlworkers`` in a subprocess, as an operator does; killed on time-out."""

    def run(*args: str, workers: dict[str, Any], env: dict[str, str] | None = None, timeout: float = 60) -> Completed:
        return run_command(
            "controlworkers", *args, tmp_path=tmp_path, settings=SETTINGS, workers=workers, env=env, timeout=timeout
        )

    return run


def seconds_since(moment: datetime) -> float:
    return (timezone.now() - moment).total_seconds()
