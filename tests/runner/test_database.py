"""Database hygiene of ``runworkers``: killed connections, the connection budget, nothing left behind.

The PostgreSQL tests run in the PostgreSQL pass of ``make test`` (``DATABASE_URL`` set); the
scenario settings give the subprocess's connections an ``application_name`` of their own, so
``pg_stat_activity`` tells exactly which connections it holds.
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support import RunworkersProcess, StartRunworkers, W, wait_for

pytestmark = pytest.mark.slow

DATABASE_WORKERS = {
    "MAX_EXECUTIONS_ATTEMPTS": 3,
    "RESTART_BACKOFF": {"INITIAL": 0.1, "MAXIMUM": 0.1},
    "STOP_TIMEOUT": 10,
    "WORKERS": [f"{W}.DatabaseHolder", f"{W}.DatabaseLooper", f"{W}.DatabaseVisitor"],
}

needs_postgresql = pytest.mark.skipif(
    not os.environ.get("DATABASE_URL"),
    reason="needs PostgreSQL: set DATABASE_URL (the PostgreSQL pass of `make test` does)",
)


def backend(process: RunworkersProcess, pattern: str) -> int:
    match = process.expect(pattern)
    assert match is not None
    return int(match.group(1))


def test_orm_workers_run_and_stop_cleanly(start: StartRunworkers) -> None:
    process = start("-v", "2", workers=DATABASE_WORKERS)  # -v 2: every worker's final status, not only a summary
    backend(process, r"holder attempt 1 uses backend (\d+)")
    backend(process, r"looper attempt 1 uses backend (\d+)")
    backend(process, r"visitor used backend (\d+)")
    process.send(signal.SIGTERM)
    assert process.wait() == 0
    log = process.stderr
    for name in ("holder", "looper", "visitor"):
        assert f"worker {name} final status: success after attempt 1/3" in log
    assert "Traceback" not in log


@pytest.fixture
def postgres() -> Iterator[Any]:
    import psycopg

    with psycopg.connect(
        os.environ["DATABASE_URL"], autocommit=True, application_name="runworkers-tests-probe"
    ) as conn:
        yield conn


def backends_of(conn: Any, application_name: str) -> set[int]:
    rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s", (application_name,)).fetchall()
    return {row[0] for row in rows}


@needs_postgresql
def test_a_killed_connection_fails_the_attempt_and_the_next_attempt_recovers(
    start: StartRunworkers, postgres: Any
) -> None:
    name = f"runworkers-{uuid.uuid4().hex[:12]}"
    # -v 2: every worker's final status, not only a summary.
    process = start("-v", "2", workers=DATABASE_WORKERS, env={"RUNWORKERS_TEST_APPLICATION_NAME": name})
    holder = backend(process, r"holder attempt 1 uses backend (\d+)")
    looper = backend(process, r"looper attempt 1 uses backend (\d+)")
    assert {holder, looper} <= backends_of(postgres, name)

    process.mark()
    for pid in (holder, looper):
        postgres.execute("SELECT pg_terminate_backend(%s)", (pid,))

    # The holder used its connection across the kill: that attempt fails, the next one reconnects.
    process.expect(r"\[holder .* stopping execution attempt 1/3 with error: .*terminat")
    process.expect(r"\[holder .* restarting after error")
    new_holder = backend(process, r"holder attempt 2 uses backend (\d+)")
    # The looper works in units of work with CONN_HEALTH_CHECKS: it reconnects, no attempt fails.
    new_looper = backend(process, r"looper attempt 1 uses backend (\d+)")
    assert new_holder != holder
    assert new_looper != looper
    wait_for(
        lambda: backends_of(postgres, name) == {new_holder, new_looper}, interval=0.05, what="only the new connections"
    )

    process.send(signal.SIGTERM)
    assert process.wait() == 0
    log = process.stderr
    assert "worker holder final status: success after attempt 2/3" in log
    assert "worker looper final status: success after attempt 1/3" in log
    assert not [line for line in process.lines["stderr"] if "[looper " in line and "with error" in line]


@needs_postgresql
def test_one_connection_per_database_worker_and_none_left_after_the_stop(start: StartRunworkers, postgres: Any) -> None:
    name = f"runworkers-{uuid.uuid4().hex[:12]}"
    # -v 2: every worker's final status, not only a summary.
    process = start("-v", "2", workers=DATABASE_WORKERS, env={"RUNWORKERS_TEST_APPLICATION_NAME": name})
    holder = backend(process, r"holder attempt 1 uses backend (\d+)")
    looper = backend(process, r"looper attempt 1 uses backend (\d+)")
    visitor = backend(process, r"visitor used backend (\d+)")

    # The visitor returned: its thread's connection is closed although the process runs on. The
    # main thread holds none: the budget is one connection per sync worker that uses the ORM.
    wait_for(
        lambda: backends_of(postgres, name) == {holder, looper}, interval=0.05, what="one connection per running worker"
    )
    assert visitor not in backends_of(postgres, name)
    assert process.alive()

    process.send(signal.SIGTERM)
    assert process.wait() == 0
    wait_for(lambda: not backends_of(postgres, name), timeout=5, interval=0.05, what="no connection left")
