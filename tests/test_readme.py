"""The README's Python code blocks run, in order, and do what the prose around them says."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from typing import Any

import pytest

from django_workers.settings import validate_settings
from tests.support import ROOT

README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.DOTALL)


def _block(marker: str) -> str:
    matches = [block for block in BLOCKS if marker in block]
    assert len(matches) == 1, f"expected one README python block containing {marker!r}, found {len(matches)}"
    return matches[0]


def test_readme_has_the_spec_snippets() -> None:
    assert len(BLOCKS) == 5
    _block("class CancellableWorker(Worker)")
    _block("pool = WorkerPool(")


def test_worker_and_pool_snippets_run() -> None:
    calls: list[str] = []
    namespace: dict[str, Any] = {"do_some_work": lambda: calls.append("work")}
    exec(compile(_block("class ClassicWorker(Worker)"), "README.md", "exec"), namespace)
    exec(compile(_block("pool = WorkerPool("), "README.md", "exec"), namespace)
    pool = namespace["pool"]
    assert namespace["not_stopped"] == []
    executions = pool.executions()
    assert list(executions) == ["classic-worker", "cancellable-worker"]
    # The classic worker was deferred 3 s, so the stop cancelled its start.
    assert executions["classic-worker"].has_event("deferring execution attempt for 3 seconds")
    assert executions["classic-worker"].current_execution_attempt == 0
    assert executions["cancellable-worker"].max_executions_attempts == 4
    assert executions["cancellable-worker"].deferred_start_threshold == 1.0


def test_settings_snippet_is_valid_apart_from_the_example_modules() -> None:
    namespace: dict[str, Any] = {}
    exec(compile(_block('INSTALLED_APPS = [..., "django_workers"]'), "README.md", "exec"), namespace)
    validation = validate_settings(namespace["WORKERS"])
    # Every key is known and well-typed; only the illustrative ``myapp`` cannot be imported.
    assert [m.id for m in validation.messages] == ["django_workers.E007", "django_workers.E007"]
    assert all("myapp" in m.msg for m in validation.messages)


def test_logging_snippet_stamps_records_of_other_loggers_inside_a_worker() -> None:
    script = textwrap.dedent(
        """
        import logging, logging.config
        {block}
        logging.config.dictConfig(LOGGING)
        from django_workers import Worker, WorkerPool

        class Chatty(Worker):
            name = "chatty"

            def run(self, ctx):
                logging.getLogger("thirdparty.client").warning("hello from a client library")

        pool = WorkerPool(log=False)
        pool.register(Chatty())
        with pool:
            assert pool.wait(10)
        logging.getLogger("thirdparty.client").warning("outside")
        """
    ).format(block=_block("LOGGING = {"))
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT, check=False
    )
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    worker_line = next(line for line in lines if "hello from a client library" in line)
    assert re.match(r"WARNING \[chatty [0-9a-f-]{36}\] thirdparty\.client: ", worker_line), worker_line
    assert "WARNING [ ] thirdparty.client: outside" in lines


@pytest.mark.django_db(transaction=True)
def test_the_fenced_write_of_a_singleton_rejects_a_stale_holder() -> None:
    """The README's OutboxRelay: its guarded UPDATE applies under the newest fence and not under an older one."""
    from django.db import connection

    from django_workers import WorkerPool, WorkerStatus, db
    from tests.support import wait_for

    namespace: dict[str, Any] = {}
    exec(compile(_block("class OutboxRelay(Worker)"), "README.md", "exec"), namespace)
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE relay_checkpoint (id integer PRIMARY KEY, position integer, fence bigint)")
        cursor.execute("INSERT INTO relay_checkpoint VALUES (1, 0, 0)")
    try:

        def row() -> tuple[int, int]:
            with connection.cursor() as cursor:
                cursor.execute("SELECT position, fence FROM relay_checkpoint WHERE id = 1")
                return tuple(cursor.fetchone())

        hygiene: dict[str, Any] = {"attempt_hooks": [db.connection_hygiene], "listeners": [db.close_thread_connections]}
        holder = WorkerPool(log=False, **hygiene)
        holder.register(namespace["OutboxRelay"](), singleton=True)
        holder.lead("outbox-relay", 5)
        holder.start()
        wait_for(lambda: row() == (42, 5), what="the holder's write")
        assert holder.stop(5) == []

        stale = WorkerPool(log=False, **hygiene)
        stale.register(namespace["OutboxRelay"](), singleton=True)
        stale.lead("outbox-relay", 3)  # a holder that slept through the takeover
        stale.start()
        wait_for(lambda: stale.execution("outbox-relay").status is WorkerStatus.SUCCESS, what="the stale run's end")
        assert stale.stop(5) == []
        assert row() == (42, 5), "the stale holder's write changed nothing"
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP TABLE relay_checkpoint")
