"""Retention: deleting history older than a cutoff, a small batch (one transaction) at a time.

Tallies (:class:`~django_workers.models.ExecutionTally`) go by their period; the workers' states
go with their node (``CASCADE``). ``manage.py pruneworkerhistory`` calls :func:`prune_step` in a
loop; the recorder's writer thread runs one step per cycle through :class:`Pruner` while old rows are left.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from django.db import transaction
from django.db.models import Exists, OuterRef, Q, QuerySet

from ..core.context import LOGGER_NAME
from ..models import Execution, ExecutionEvent, ExecutionTally, Node

__all__ = [
    "DEFAULT_PRUNE_BATCH_SIZE",
    "DEFAULT_PRUNE_INTERVAL",
    "PruneCounts",
    "Pruner",
    "count_prunable",
    "prune_history",
    "prune_step",
]

logger = logging.getLogger(LOGGER_NAME)

DEFAULT_PRUNE_INTERVAL: Final = 600.0
DEFAULT_PRUNE_BATCH_SIZE: Final = 1_000


@dataclass(frozen=True)
class PruneCounts:
    """Rows deleted (or, for a dry run, that would be)."""

    executions: int = 0
    events: int = 0
    nodes: int = 0
    tallies: int = 0

    @property
    def total(self) -> int:
        """Rows of every kind."""
        return self.executions + self.events + self.nodes + self.tallies

    def __add__(self, other: PruneCounts) -> PruneCounts:
        return PruneCounts(
            self.executions + other.executions,
            self.events + other.events,
            self.nodes + other.nodes,
            self.tallies + other.tallies,
        )


def _prunable_nodes(
    database: str, cutoff: datetime, keep_node: uuid.UUID | None, *, recent_only: bool = False
) -> QuerySet[Node]:
    """Nodes whose last heartbeat is before the cutoff and that have no execution left.

    ``recent_only``: ignore the executions created before the cutoff (they are pruned first), to count.
    """
    executions = Execution.objects.using(database).filter(node=OuterRef("pk"))
    if recent_only:
        executions = executions.filter(created_at__gte=cutoff)
    nodes = Node.objects.using(database).filter(last_heartbeat__lt=cutoff).filter(~Exists(executions))
    return nodes if keep_node is None else nodes.exclude(pk=keep_node)


def count_prunable(database: str, cutoff: datetime, keep_node: uuid.UUID | None = None) -> PruneCounts:
    """What :func:`prune_history` would delete for ``cutoff``, counted without deleting anything."""
    executions = Execution.objects.using(database).filter(created_at__lt=cutoff)
    events = ExecutionEvent.objects.using(database).filter(
        Q(execution__created_at__lt=cutoff) | Q(execution__isnull=True, timestamp__lt=cutoff)
    )
    nodes = _prunable_nodes(database, cutoff, keep_node, recent_only=True)
    tallies = ExecutionTally.objects.using(database).filter(period_start__lt=cutoff)
    return PruneCounts(executions.count(), events.count(), nodes.count(), tallies.count())


def prune_step(
    database: str, cutoff: datetime, batch_size: int = DEFAULT_PRUNE_BATCH_SIZE, keep_node: uuid.UUID | None = None
) -> PruneCounts:
    """Delete one batch (one transaction) of history older than ``cutoff``.

    At most ``batch_size`` executions (created before the cutoff) with their events; once none
    is left, at most ``batch_size`` node-level events, then tallies of periods before the cutoff,
    then nodes (last heartbeat before the cutoff, no execution left; their tallies and states go
    with them). Call it until it returns fewer than ``batch_size`` rows in total.
    """
    with transaction.atomic(using=database):
        ids = list(
            Execution.objects.using(database)
            .filter(created_at__lt=cutoff)
            .order_by("created_at")
            .values_list("pk", flat=True)[:batch_size]
        )
        events = 0
        if ids:
            events = ExecutionEvent.objects.using(database).filter(execution_id__in=ids).delete()[0]
            Execution.objects.using(database).filter(pk__in=ids).only("pk").delete()
        if len(ids) >= batch_size:
            return PruneCounts(executions=len(ids), events=events)
        room = batch_size - len(ids)
        node_events = list(
            ExecutionEvent.objects.using(database)
            .filter(execution__isnull=True, timestamp__lt=cutoff)
            .values_list("pk", flat=True)[:room]
        )
        if node_events:
            events += ExecutionEvent.objects.using(database).filter(pk__in=node_events).delete()[0]
        room -= len(node_events)
        tallies = 0
        if room > 0:
            tally_ids = list(
                ExecutionTally.objects.using(database)
                .filter(period_start__lt=cutoff)
                .values_list("pk", flat=True)[:room]
            )
            if tally_ids:
                tallies = ExecutionTally.objects.using(database).filter(pk__in=tally_ids).delete()[0]
            room -= len(tally_ids)
        nodes = 0
        if room > 0:
            node_ids = list(_prunable_nodes(database, cutoff, keep_node).values_list("pk", flat=True)[:room])
            if node_ids:
                deleted = Node.objects.using(database).filter(pk__in=node_ids).delete()[1]
                nodes = deleted.get(Node._meta.label, 0)
                events += deleted.get(ExecutionEvent._meta.label, 0)
                tallies += deleted.get(ExecutionTally._meta.label, 0)
    return PruneCounts(executions=len(ids), events=events, nodes=nodes, tallies=tallies)


def prune_history(
    database: str, cutoff: datetime, batch_size: int = DEFAULT_PRUNE_BATCH_SIZE, keep_node: uuid.UUID | None = None
) -> PruneCounts:
    """Delete all history older than ``cutoff``, in transactions of at most ``batch_size`` rows."""
    total = PruneCounts()
    while True:
        counts = prune_step(database, cutoff, batch_size, keep_node)
        total += counts
        if counts.total < batch_size:
            return total


class Pruner:
    """The recorder's own pruning, run by its writer thread between batches.

    One :func:`prune_step` per call while rows older than ``retention_days`` are left (one batch
    per writer cycle, so that writing events never waits long), then one every ``interval`` seconds.
    Its own node is never pruned.
    """

    def __init__(
        self,
        database: str,
        retention_days: float,
        *,
        keep_node: uuid.UUID,
        batch_size: int = DEFAULT_PRUNE_BATCH_SIZE,
        interval: float = DEFAULT_PRUNE_INTERVAL,
    ) -> None:
        self.database = database
        self.retention_days = retention_days
        self.keep_node = keep_node
        self.batch_size = batch_size
        self.interval = interval
        self._next_at = 0.0  # time.monotonic()
        self._pruning = False  # the last step was full: more is left

    def schedule(self, at: float) -> None:
        """Set when (``time.monotonic()``) the first step is due."""
        self._next_at = at

    def due(self, now: float) -> float:
        """When (monotonic) the next step is due: ``now`` while old rows are left."""
        return now if self._pruning else self._next_at

    def step(self, now: float) -> None:
        """Prune one batch when due at ``now`` (monotonic)."""
        if not self._pruning and now < self._next_at:
            return
        cutoff = datetime.now(UTC) - timedelta(days=self.retention_days)
        counts = prune_step(self.database, cutoff, self.batch_size, keep_node=self.keep_node)
        self._pruning = counts.total >= self.batch_size  # more left: another step next cycle
        if counts.total:
            logger.info(
                "history recorder: pruned %d execution(s), %d event(s), %d tally row(s) and %d node(s) older than "
                "%g day(s)",
                counts.executions,
                counts.events,
                counts.tallies,
                counts.nodes,
                self.retention_days,
            )
        if not self._pruning:
            self._next_at = now + self.interval
