"""Fixtures of every test: no leaked thread, a SQLite file as test database, pools and runworkers subprocesses.

The plain helpers these fixtures use (and that tests import) are in tests/support.py.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings as hypothesis_settings

from tests.support import SETTINGS, Harness, RunworkersProcess, StartRunworkers, runworkers_environment

# Property-based tests (Hypothesis): a short run in `make test`, a long one on demand with
# HYPOTHESIS_PROFILE=long. No deadline: examples start threads and pools, whose timing is the machine's.
hypothesis_settings.register_profile("default", max_examples=25, deadline=None, print_blob=True)
hypothesis_settings.register_profile("long", max_examples=2_000, deadline=None, print_blob=True)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


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


@pytest.fixture
def harness() -> Iterator[Harness]:
    """Pools (zero restart backoff unless given) and gates of one test: gates opened, then pools stopped."""
    h = Harness()
    try:
        yield h
    finally:
        h.close()


@pytest.fixture
def start(tmp_path: Path) -> Iterator[StartRunworkers]:
    """A factory of ``manage.py runworkers`` subprocesses, all killed (process group included) at teardown.

    ``start(*args, workers={...}, env={...}, settings=..., pythonpath=(...))`` runs the test project's
    ``runworkers *args`` with ``WORKERS = workers`` and the settings module ``settings`` (by default
    tests/scenarios/settings_runworkers.py); see :func:`tests.support.runworkers_environment`. Every process
    is started in a session of its own.
    """
    started: list[RunworkersProcess] = []

    def start(
        *args: str,
        workers: dict[str, Any] | None = None,
        env: dict[str, str] | None = None,
        settings: str = SETTINGS,
        pythonpath: tuple[Path, ...] = (),
    ) -> RunworkersProcess:
        environment = runworkers_environment(
            tmp_path, settings=settings, workers=workers, env=env, pythonpath=pythonpath
        )
        process = RunworkersProcess(list(args), environment)
        started.append(process)
        return process

    try:
        yield start
    finally:
        for process in started:
            process.kill()
