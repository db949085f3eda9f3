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
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from django_workers.models import Execution, ExecutionEvent, ExecutionStatus, Node
from tests.runner.runworkers_process import MANAGE, ROOT, RunworkersProcess

SETTINGS = "tests.health.health_settings"
#: Dotted path prefix of the health test workers.
H = "tests.health.health_workers"


# -- rows ----------------------------------------------------------------------------------------------


@pytest.fixture
def now() -> datetime:
    return timezone.now()


@pytest.fixture
def make_node(now: datetime) -> Callable[..., Node]:
    pids = itertools.count(1000)

    def make(**fields: Any) -> Node:
        values: dict[str, Any] = {
            "hostname": "host-a",
            "pid": next(pids),
            "started_at": now - timedelta(hours=1),
            "last_heartbeat": now,
            "version": "0.1.0",
            "workers": ["alpha", "beta"],
        }
        values.update(fields)
        return Node.objects.create(**values)

    return make


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


# -- subprocesses ------------------------------------------------------------------------------------


def subprocess_environment(
    workers: dict[str, Any], tmp_path: Path, env: dict[str, str] | None = None
) -> dict[str, str]:
    """The environment of a test-project command on this session's test database."""
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(str(path) for path in (ROOT, ROOT / "testproject")),
        "DJANGO_SETTINGS_MODULE": SETTINGS,
        "RUNWORKERS_TEST_WORKERS": json.dumps(workers),
        "HEALTH_TEST_DB_NAME": str(connection.settings_dict["NAME"]),
        "SQLITE_PATH": str(tmp_path / "unused.sqlite3"),
        "PYTHONUNBUFFERED": "1",
        **(env or {}),
    }
    for inherited in ("RUN_MAIN", "DJANGO_WORKERS_RELOADER_FD"):
        environment.pop(inherited, None)
    return environment


@pytest.fixture
def runworkers(transactional_db: None, tmp_path: Path) -> Iterator[Callable[..., RunworkersProcess]]:
    """A factory of ``runworkers`` subprocesses on the test database, all killed at teardown.

    It depends on ``transactional_db``: the processes are killed before the tables are flushed.
    """
    started: list[RunworkersProcess] = []

    def start(*args: str, workers: dict[str, Any], env: dict[str, str] | None = None) -> RunworkersProcess:
        process = RunworkersProcess(list(args), subprocess_environment(workers, tmp_path, env))
        started.append(process)
        return process

    try:
        yield start
    finally:
        for process in started:
            process.kill()


@dataclass
class Completed:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def checkworkers(tmp_path: Path) -> Callable[..., Completed]:
    """Runs ``manage.py checkworkers`` in a subprocess (as an exec probe does); killed on time-out."""

    def run(*args: str, workers: dict[str, Any], env: dict[str, str] | None = None, timeout: float = 60) -> Completed:
        process = subprocess.Popen(
            [sys.executable, "-W", "error", str(MANAGE), "checkworkers", *args],
            cwd=ROOT,
            env=subprocess_environment(workers, tmp_path, env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
        return Completed(process.returncode, stdout, stderr)

    return run
