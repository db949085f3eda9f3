"""Counts of attempts per worker, node and period (:class:`~django_workers.models.ExecutionTally`).

The writer adds a batch's counts with one statement per batch: a multi-row ``INSERT ... ON
CONFLICT (node, worker, period_start) DO UPDATE SET started = started + EXCLUDED.started, ...``
(PostgreSQL and SQLite both speak it). The overview reads at most a day of periods per worker and
node instead of the executions table. Whoever closes attempts of a lost process adds them with
:func:`count_lost`, in its own transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Final, cast

from django.db import connections
from django.db.models import Field

from ..core.events import (
    AttemptFailed,
    AttemptStarted,
    AttemptSucceeded,
    LifecycleEvent,
    WorkerControlled,
    WorkerRestarting,
)
from ..models import TALLY_PERIOD, ExecutionStatus, ExecutionTally, WorkerState
from .sql import execute_many

__all__ = ["COUNTS", "Tallies", "add_tallies", "count_lost", "period_start", "tally_events"]

#: The counted columns, in the order of a :data:`Tallies` value.
COUNTS: Final = ("started", "succeeded", "failed", "lost", "restarted")
_STARTED, _SUCCEEDED, _FAILED, _LOST, _RESTARTED = range(len(COUNTS))

#: (worker, period start) -> counts in :data:`COUNTS` order.
Tallies = dict[tuple[str, datetime], list[int]]


def period_start(when: datetime) -> datetime:
    """The start of the :data:`~django_workers.models.TALLY_PERIOD` holding ``when`` (UTC)."""
    seconds = int(when.timestamp())
    return datetime.fromtimestamp(seconds - seconds % TALLY_PERIOD, UTC)


def _add(tallies: Tallies, worker: str, when: datetime, column: int) -> None:
    key = (worker[:255], period_start(when))
    counts = tallies.get(key)
    if counts is None:
        counts = tallies[key] = [0] * len(COUNTS)
    counts[column] += 1


def tally_events(events: Iterable[LifecycleEvent]) -> Tallies:
    """What a batch of events adds to the tallies, each counted in the period of its record.

    An attempt is counted as started, then as succeeded or failed; a restart after a failure
    and an operator's restart both count as restarts.
    """
    tallies: Tallies = {}
    for event in events:
        kind = type(event)
        if kind is AttemptStarted:
            column = _STARTED
        elif kind is AttemptSucceeded:
            column = _SUCCEEDED
        elif kind is AttemptFailed:
            column = _FAILED
        elif kind is WorkerRestarting or (
            kind is WorkerControlled and cast(WorkerControlled, event).action == "restart"
        ):
            column = _RESTARTED
        else:
            continue
        reported = cast(AttemptStarted, event)  # every kind above has worker and record
        _add(tallies, reported.worker, reported.record.timestamp, column)
    return tallies


def add_tallies(database: str, node_id: uuid.UUID, tallies: Mapping[tuple[str, datetime], list[int]]) -> None:
    """Add ``tallies`` to the node's rows: one upsert statement (a multi-row one on PostgreSQL)."""
    if not tallies:
        return
    connection = connections[database]
    quote = connection.ops.quote_name
    table = quote(ExecutionTally._meta.db_table)
    node_column = cast("Field[object, object]", ExecutionTally._meta.get_field("node")).column
    updates = ", ".join(f"{quote(name)} = {table}.{quote(name)} + EXCLUDED.{quote(name)}" for name in COUNTS)
    conflict = ", ".join(quote(str(name)) for name in (node_column, "worker", "period_start"))
    rows = [(node_id, worker, start, *counts) for (worker, start), counts in tallies.items()]
    execute_many(
        database,
        ExecutionTally,
        ("node", "worker", "period_start", *COUNTS),
        rows,
        f" ON CONFLICT ({conflict}) DO UPDATE SET {updates}",
    )


def count_lost(database: str, node_id: uuid.UUID, rows: Iterable[tuple[str, uuid.UUID, datetime]]) -> None:
    """Attempts of ``node_id`` were closed as ``lost``: count them, and say so in the workers' states.

    ``rows``: ``(worker, execution id, when)`` of each attempt closed (``when``: the time it was
    lost, its node's last heartbeat). Call it in the transaction that closes them, once per
    attempt actually closed. The state of a worker whose current attempt is one of them becomes
    ``lost`` (unless it changed since).
    """
    tallies: Tallies = {}
    lost: dict[uuid.UUID, datetime] = {}
    for worker, execution_id, when in rows:
        _add(tallies, worker, when, _LOST)
        lost[uuid.UUID(str(execution_id))] = when
    if not tallies:
        return
    add_tallies(database, node_id, tallies)
    for execution_id, when in lost.items():
        WorkerState.objects.using(database).filter(
            node_id=node_id,
            execution_id=execution_id,
            status__in=(ExecutionStatus.RUNNING, ExecutionStatus.DEFERRED),
        ).update(status=ExecutionStatus.LOST, since=when, updated_at=datetime.now(UTC))
