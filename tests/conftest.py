"""Shared fixtures: every test fails if it leaks a thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest


def wait_for(predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.005) -> None:
    """Poll ``predicate`` until it is truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout} seconds: {predicate}")
        time.sleep(interval)


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix: None, tmp_path_factory: Any) -> None:
    """On SQLite, the test database is a file, not memory: a ``runworkers`` subprocess can share it.

    (The health tests read, through the test client, what a real ``runworkers`` wrote.)
    """
    from django.db import connections

    database = connections.settings["default"]
    if database["ENGINE"] == "django.db.backends.sqlite3" and not database["TEST"].get("NAME"):
        database["TEST"]["NAME"] = str(tmp_path_factory.mktemp("sqlite") / "test.sqlite3")


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Fail any test that leaves a thread running (a pool's worker or event-loop thread)."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 5.0
    leaked: list[threading.Thread] = []
    while time.monotonic() < deadline:
        leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        if not leaked:
            return
        time.sleep(0.01)
    pytest.fail(f"test leaked threads: {[t.name for t in leaked]}")
