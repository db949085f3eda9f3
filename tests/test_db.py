"""A transaction left open by an attempt is rolled back, and the next attempt gets a usable connection.

``transaction.atomic().__enter__()`` without its exit (or autocommit turned off and never back on)
used to poison the worker's thread for good: every later attempt failed with "the connection is
closed". The pool's attempt hook (``django_workers.db.connection_hygiene``) now rolls such a
transaction back, closes the connection and logs it. Runs on SQLite and, in the PostgreSQL pass
of ``make test``, on PostgreSQL; with ``CONN_MAX_AGE`` 0 and 300.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from django.contrib.auth.models import Group
from django.db import connections, transaction

from django_workers import WorkerContext, WorkerPool, WorkerStatus, db
from tests.support import ZERO_BACKOFF, FnWorker, collect_logs

pytestmark = pytest.mark.django_db(transaction=True)


def leak_atomic(ctx: WorkerContext) -> None:
    transaction.atomic().__enter__()  # entered, never exited
    Group.objects.create(name=f"leaked-{ctx.attempt}")


def leak_autocommit(ctx: WorkerContext) -> None:
    transaction.set_autocommit(False)
    Group.objects.create(name=f"leaked-{ctx.attempt}")


@pytest.mark.parametrize("conn_max_age", [0, 300])
@pytest.mark.parametrize("leak", [leak_atomic, leak_autocommit], ids=["atomic", "autocommit"])
def test_the_attempt_after_a_leaked_transaction_has_a_usable_connection(
    leak: Callable[[WorkerContext], None], conn_max_age: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(connections.settings["default"], "CONN_MAX_AGE", conn_max_age)
    counts: list[int] = []

    def fn(ctx: WorkerContext) -> None:
        if ctx.attempt == 1:
            leak(ctx)
            raise RuntimeError("failed with a transaction open")
        counts.append(Group.objects.filter(name__startswith="leaked-").count())

    pool = WorkerPool(
        max_executions_attempts=3,
        restart_backoff=ZERO_BACKOFF,
        attempt_hooks=[db.connection_hygiene],
        listeners=[db.close_thread_connections],
    )
    pool.register(FnWorker("leaky", fn))
    with collect_logs() as logs:
        pool.start()
        try:
            assert pool.wait(timeout=30)
        finally:
            pool.stop(timeout=10)
    execution = pool.execution("leaky")
    assert execution.status is WorkerStatus.SUCCESS, execution.events
    assert execution.current_execution_attempt == 2
    assert counts == [0], "the leaked transaction was rolled back, the next attempt could query"
    assert not Group.objects.filter(name__startswith="leaked-").exists()
    (warning,) = logs.matching("left a transaction open on database 'default'", logging.WARNING)
    assert warning.worker == "leaky"  # type: ignore[attr-defined]


def test_release_leaked_transactions_rolls_back_only_what_was_left_open() -> None:
    Group.objects.count()
    assert db.release_leaked_transactions() == []
    transaction.atomic().__enter__()
    Group.objects.create(name="left-open")
    assert db.release_leaked_transactions() == ["default"]
    assert not Group.objects.filter(name="left-open").exists()
    with transaction.atomic():  # the connection is usable again, transactions included
        Group.objects.create(name="committed")
    assert Group.objects.filter(name="committed").exists()
