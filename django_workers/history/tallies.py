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

from ..core.events import (
    AttemptFailed,
    AttemptStarted,
    AttemptSucceeded,
    LifecycleEvent,
    WorkerControlled,
    WorkerRestarting,
)
from ..models import TALLY_PERIOD, ExecutionStatus, ExecutionTally, WorkerState
from .attempts import OPEN
from .sql import upsert

__all__ = ["COUNTS", "Tallies", "add_tallies", "count_lost", "period_start", "tally_events"]

#: The counted columns, in the order of a :data:`Tallies` value.
COUNTS: Final = ("started", "succeeded", "failed", "lost", "restarted")
_STARTED, _SUCCEEDED, _FAILED, _LOST, _RESTARTED = range(len(COUNTS))

#: (worker, period start) -> counts in :data:`COUNTS` order.
Tallies = dict[tuple[str, datetime], list[int]]
#: Execution ids per ``UPDATE`` of :func:`count_lost` (plus 6 other parameters): under SQLite's
#: oldest limit of 999 parameters.
_IDS_PER_UPDATE: Final = 500


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
    rows = [(node_id, worker, start, *counts) for (worker, start), counts in tallies.items()]
    key = ("node", "worker", "period_start")
    upsert(database, ExecutionTally, (*key, *COUNTS), rows, conflict=key, add=COUNTS)


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
    # One UPDATE per time lost (all share one in practice: the node's last heartbeat or its stop).
    by_when: dict[datetime, list[uuid.UUID]] = {}
    for execution_id, when in lost.items():
        by_when.setdefault(when, []).append(execution_id)
    now = datetime.now(UTC)
    states = WorkerState.objects.using(database).filter(node_id=node_id, status__in=OPEN)
    for when, ids in by_when.items():
        for start in range(0, len(ids), _IDS_PER_UPDATE):
            states.filter(execution_id__in=ids[start : start + _IDS_PER_UPDATE]).update(
                status=ExecutionStatus.LOST, since=when, updated_at=now
            )
