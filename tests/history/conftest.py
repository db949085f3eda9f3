"""Fixtures of the history tests: recorders that are always stopped, database aliases to break.

Every test here runs on SQLite and, in the PostgreSQL pass (``DATABASE_URL`` set), on the real
PostgreSQL server. In-process tests use pytest-django's test database (``transactional_db``: the
recorder writes from its own thread, so the data must be committed). Subprocess tests get a
database of their own (a SQLite file, or a PostgreSQL database created for the test), migrated
by a real ``manage.py migrate``, and read it through an extra alias registered at run time.
"""

from __future__ import annotations

import contextlib
import copy
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from django.db import connections

from django_workers import Backoff, WorkerPool
from django_workers.core.events import LifecycleEvent, ReportedEvent
from django_workers.history import HistoryRecorder
from tests.history import pgserver
from tests.history.pgserver import PrivateServer
from tests.support import free_port, migrate, runworkers_environment

POSTGRESQL = bool(os.environ.get("DATABASE_URL"))

needs_postgresql = pytest.mark.skipif(
    not POSTGRESQL,
    reason="needs PostgreSQL: set DATABASE_URL (the PostgreSQL pass of `make test` does)",
)

#: Retry quickly in tests: recovery is then observed within a fraction of a second.
FAST_RETRY = Backoff(initial=0.05, maximum=0.2, multiplier=2.0, jitter=0.0)


class Counting:
    """A listener keeping every reported event (what the in-memory report shows), in order."""

    def __init__(self) -> None:
        self.events: list[ReportedEvent] = []
        self.attempts = 0

    def __call__(self, event: LifecycleEvent) -> None:
        if isinstance(event, ReportedEvent):
            self.events.append(event)  # list.append: atomic, fine from several worker threads
            if event.record.message.startswith("starting execution attempt"):
                self.attempts += 1

    def triples(self) -> list[tuple[str, str, Any]]:
        return [(e.execution_id, e.record.message, e.record.timestamp) for e in list(self.events)]


@dataclass
class Scene:
    """Pools and recorders of one test: at teardown the pools stop first, then the recorders.

    Request ``scene`` after the database fixture, so that the recorders stop before the test
    database is flushed.
    """

    pools: list[WorkerPool] = field(default_factory=list)
    recorders: list[HistoryRecorder] = field(default_factory=list)
    gates: list[Any] = field(default_factory=list)

    def pool(self, *workers: Any, **kwargs: Any) -> WorkerPool:
        kwargs.setdefault("restart_backoff", Backoff(initial=0))
        kwargs.setdefault("log", False)
        pool = WorkerPool(**kwargs)
        for worker in workers:
            pool.register(worker)
        self.pools.append(pool)
        return pool

    def recorder(self, pool: WorkerPool, **kwargs: Any) -> HistoryRecorder:
        """A started recorder on ``pool`` (heartbeats rare unless asked: tests drive the rest)."""
        kwargs.setdefault("heartbeat_interval", 30.0)
        kwargs.setdefault("retry_backoff", FAST_RETRY)
        recorder = HistoryRecorder(**kwargs)
        recorder.start(pool)
        self.recorders.append(recorder)
        return recorder

    def close(self) -> None:
        for gate in self.gates:
            gate.set()
        for pool in self.pools:
            pool.stop(timeout=5.0)
        for recorder in self.recorders:
            recorder.stop(timeout=10.0)


@pytest.fixture
def scene() -> Iterator[Scene]:
    s = Scene()
    try:
        yield s
    finally:
        s.close()


# -- a database alias that a test makes unreachable, then reachable again -----------------------------


class SwitchableDatabase:
    """A second alias on the test database, broken (unreachable) or repaired at will.

    Broken means a connection cannot even be opened: SQLite is pointed at a file in a directory
    that does not exist, PostgreSQL at a closed port. The writer thread of a recorder opens its
    connection after ``repair()``, reading the alias's settings then.
    """

    def __init__(self, alias: str = "history_switch") -> None:
        self.alias = alias
        self.good = copy.deepcopy(connections.settings["default"])  # the test database's settings
        self.settings = copy.deepcopy(self.good)
        self.settings["TEST"] = {**self.settings.get("TEST", {}), "MIRROR": "default"}
        self.vendor = "sqlite" if "sqlite" in self.good["ENGINE"] else "postgresql"

    def install(self) -> None:
        connections.settings[self.alias] = self.settings

    def uninstall(self) -> None:
        with contextlib.suppress(Exception):
            connections[self.alias].close()
        with contextlib.suppress(AttributeError, KeyError):
            del connections[self.alias]
        connections.settings.pop(self.alias, None)

    def break_(self) -> None:
        if self.vendor == "sqlite":
            self.settings["NAME"] = str(Path("/nonexistent", uuid.uuid4().hex, "db.sqlite3"))
        else:
            self.settings["HOST"], self.settings["PORT"] = "127.0.0.1", str(free_port())
            self.settings.setdefault("OPTIONS", {})["connect_timeout"] = 2

    def repair(self) -> None:
        for key in ("NAME", "HOST", "PORT"):
            self.settings[key] = self.good[key]
        self.settings["OPTIONS"] = copy.deepcopy(self.good.get("OPTIONS", {}))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test using ``switchable`` needs the test database: say so before pytest-django sets them up.

    pytest-django creates the test databases that the collected tests name in their markers or
    fixture names; ``switchable`` asks for ``transactional_db`` only while the test sets up, so a
    test using it run alone would reach the project's own database. Naming ``transactional_db``
    last keeps it set up by ``switchable`` first, with the marker allowing the extra alias.
    """
    for item in items:
        names = getattr(item, "fixturenames", None)
        if isinstance(names, list) and "switchable" in names and "transactional_db" not in names:
            names.append("transactional_db")


@pytest.fixture
def switchable(request: pytest.FixtureRequest, django_db_setup: None) -> Iterator[SwitchableDatabase]:
    """A :class:`SwitchableDatabase` and ``transactional_db`` allowing it (request it before ``scene``).

    Django refuses connections to aliases a test did not declare, even from other threads: the
    alias is created first (a copy of the test database's settings, a test mirror of ``default``
    so that it is neither created nor flushed), then the test is marked as using it.
    """
    database = SwitchableDatabase()
    database.install()
    try:
        request.applymarker(pytest.mark.django_db(transaction=True, databases=["default", database.alias]))
        request.getfixturevalue("transactional_db")
        yield database
    finally:
        database.uninstall()


# -- a database for runworkers subprocesses --------------------------------------------------------


@dataclass
class ProcessDatabase:
    """The database of the runworkers subprocesses of one test, and an alias to read it here."""

    alias: str
    env: dict[str, str]


@pytest.fixture
def process_database(tmp_path: Path, django_db_blocker: Any) -> Iterator[ProcessDatabase]:
    """A migrated database for runworkers subprocesses: ``env`` for ``start(env=...)``, ``alias`` to read."""
    alias = "history_process"
    extra: dict[str, str] = {}
    name = ""
    if POSTGRESQL:
        import dj_database_url
        import psycopg

        base = dj_database_url.parse(os.environ["DATABASE_URL"])
        name = f"history_{uuid.uuid4().hex[:12]}"
        admin_url = os.environ["DATABASE_URL"].rsplit("/", 1)[0] + "/postgres"
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        extra["DATABASE_URL"] = os.environ["DATABASE_URL"].rsplit("/", 1)[0] + "/" + name
        settings: dict[str, Any] = {**base, "NAME": name}
    else:
        settings = {"ENGINE": "django.db.backends.sqlite3", "NAME": str(tmp_path / "db.sqlite3")}
    env = runworkers_environment(tmp_path, env=extra)
    migrate(env)
    connections.settings[alias] = connections.configure_settings({"default": {}, alias: settings})[alias]
    try:
        with django_db_blocker.unblock():
            yield ProcessDatabase(alias=alias, env=extra)
    finally:
        with contextlib.suppress(Exception):
            connections[alias].close()
        with contextlib.suppress(AttributeError, KeyError):
            del connections[alias]
        connections.settings.pop(alias, None)
        if name:
            import psycopg

            with psycopg.connect(admin_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- a PostgreSQL server of the test's own --------------------------------------------------------------


@dataclass
class PrivateDatabase:
    """A migrated database on a :class:`~tests.history.pgserver.PrivateServer`, and its alias here."""

    server: PrivateServer
    name: str
    alias: str


@pytest.fixture
def private_database(tmp_path: Path, django_db_blocker: Any) -> Iterator[PrivateDatabase]:
    """A migrated history database on a PostgreSQL server of the test's own (to stop, restart, kill).

    Skipped only when no server can be run here (no binaries). The alias is usable from any
    thread (the test uses no pytest-django test database: request this before ``scene``).
    """
    reason = pgserver.unavailable()
    if reason is not None:
        pytest.skip(reason)
    server = PrivateServer()
    alias, name = "history_private", "history"
    try:
        server.start()
        server.create_database(name)
        env = runworkers_environment(tmp_path, env={"DATABASE_URL": server.url(name)})
        migrate(env)
        configured = connections.configure_settings({"default": {}, alias: server.settings(name)})
        connections.settings[alias] = configured[alias]
        with django_db_blocker.unblock():
            yield PrivateDatabase(server, name, alias)
    finally:
        with contextlib.suppress(Exception):
            connections[alias].close()
        with contextlib.suppress(AttributeError, KeyError):
            del connections[alias]
        connections.settings.pop(alias, None)
        server.destroy()


def history_workers(workers: list[Any], **history: Any) -> dict[str, Any]:
    """A WORKERS setting with HISTORY on (fast heartbeats) for the subprocess tests."""
    return {
        "MAX_EXECUTIONS_ATTEMPTS": 3,
        "RESTART_BACKOFF": {"INITIAL": 0.05, "MAXIMUM": 0.05},
        "STOP_TIMEOUT": 10,
        "HISTORY": {"ENABLED": True, "HEARTBEAT_INTERVAL": 0.2, "ORPHAN_GRACE": 1.0, **history},
        "WORKERS": workers,
    }
