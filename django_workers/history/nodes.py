"""The node: one row per recording process, kept alive by heartbeats, closed on stop.

A node whose heartbeat stopped (``kill -9``, a lost host) leaves attempts open; any other node
closes them as ``lost`` once the heartbeat is older than the grace period (:func:`close_orphans`).
A node that stops closes its own: as ``lost`` those still running (they did not stop within the
stop timeout: the process exits under them), as ``unknown`` those whose end may have been dropped
(:meth:`NodeRow.finalize`). ``lost`` is not ``error``: the attempt did not fail, its process went
away; the event closing it names the node (``host:pid``) and says why.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.db.models import Exists, OuterRef
from django.db.models.functions import Now

from .. import __version__
from ..core.context import LOGGER_NAME
from ..models import Execution, ExecutionEvent, ExecutionStatus, Node
from .attempts import END_UNKNOWN, OPEN
from .tallies import count_lost

if TYPE_CHECKING:
    from ..observability.metrics import WorkerMetrics

__all__ = ["NodeRow", "close_orphans"]

logger = logging.getLogger(LOGGER_NAME)


class NodeRow:
    """The row of this process's node, as the writer thread keeps it (only that thread calls it).

    :meth:`register` creates it, :meth:`beat` heartbeats it with the database clock and closes the
    attempts of lost nodes every ``heartbeat_interval`` seconds, :meth:`finalize` marks it stopped.
    """

    def __init__(
        self,
        database: str,
        node_id: uuid.UUID,
        hostname: str,
        pid: int,
        *,
        heartbeat_interval: float,
        orphan_grace: float,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self.database = database
        self.node_id = node_id
        self.hostname = hostname
        self.pid = pid
        self.heartbeat_interval = heartbeat_interval
        self.orphan_grace = orphan_grace
        self.metrics = metrics
        #: The row's ``dropped_events`` as committed (the writer sets it after its batch commits).
        self.dropped_events = 0
        self._next_heartbeat = 0.0  # time.monotonic()
        self._registered = False
        self._started_at: datetime | None = None
        self._names: Callable[[], list[str]] | None = None
        self._workers: list[str] = []
        self._db_now: datetime | None = None

    def attach(self, names: Callable[[], list[str]], started_at: datetime) -> None:
        """Before the writer starts: the pool's ``names`` (the workers it runs) and the start time."""
        self._names = names
        self._workers = names()
        self._started_at = started_at

    @property
    def next_heartbeat(self) -> float:
        """When (``time.monotonic()``) the next heartbeat is due."""
        return self._next_heartbeat

    @property
    def registered(self) -> bool:
        """Whether the row is known to exist (as far as this process knows)."""
        return self._registered

    def register_again(self) -> None:
        """The row may be missing (a write was rejected): register before the next write."""
        self._registered = False

    def register(self) -> None:
        """Create the row (or, when it exists, heartbeat it); the first heartbeat is then due at once."""
        database = self.database
        assert self._started_at is not None, "attach() first"
        with transaction.atomic(using=database):
            nodes = Node.objects.using(database)
            if not nodes.filter(pk=self.node_id).update(last_heartbeat=Now()):
                nodes.create(
                    id=self.node_id,
                    hostname=self.hostname,
                    pid=self.pid,
                    started_at=self._started_at,
                    last_heartbeat=Now(),
                    version=__version__[:50],
                    workers=list(self._workers),
                    dropped_events=self.dropped_events,
                )
        self._registered = True
        self._next_heartbeat = time.monotonic()  # heartbeat (and sweep) at once

    def beat(self, now: float) -> None:
        """When due at ``now`` (monotonic): heartbeat, then close the attempts of lost nodes."""
        if now >= self._next_heartbeat:
            self.heartbeat()
            self.close_orphans()
            self._next_heartbeat = now + self.heartbeat_interval

    def heartbeat(self) -> None:
        """Set the row's heartbeat (and its workers when they changed) to the database's clock."""
        nodes = Node.objects.using(self.database).filter(pk=self.node_id)
        update: dict[str, Any] = {"last_heartbeat": Now()}
        if self._names is not None:
            names = self._names()
            if names != self._workers:  # workers registered after the start
                self._workers = names
                update["workers"] = names
        if not nodes.update(**update):
            self._registered = False  # the row is gone (deleted by hand?): register again
            self.register()
        self._db_now = nodes.values_list("last_heartbeat", flat=True).get()
        if self.metrics is not None:
            self.metrics.set_heartbeat(self._db_now)

    def close_orphans(self) -> None:
        """Close the open attempts of nodes whose heartbeat is older than the grace period."""
        if self._db_now is None:
            return
        closed = close_orphans(
            self.database, self._db_now - timedelta(seconds=self.orphan_grace), keep_node=self.node_id
        )
        if closed:
            logger.warning("history recorder: %d execution(s) of lost node(s) closed as lost", closed)

    def store_dropped(self, total: int) -> None:
        """Set the row's ``dropped_events`` to ``total``, in the caller's transaction."""
        Node.objects.using(self.database).filter(pk=self.node_id).update(dropped_events=total)

    def finalize(self, end_unknown: Callable[[uuid.UUID], bool]) -> None:
        """The last transaction: the node is stopped; its attempts still open are closed.

        ``end_unknown(execution_id)`` says whether the attempt's end may be among dropped events:
        it is then closed as ``unknown`` (no finish time), not as stopped while it ran. One still
        running is ``lost`` (counted as such in the tallies and states); one deferred stays
        ``deferred``, closed.
        """
        database = self.database
        now = datetime.now(UTC)
        with transaction.atomic(using=database):
            Node.objects.using(database).filter(pk=self.node_id).update(
                stopped_at=Now(), last_heartbeat=Now(), dropped_events=self.dropped_events
            )
            node = f"{self.hostname}:{self.pid}"
            lost: list[tuple[str, uuid.UUID, datetime]] = []
            for execution in Execution.objects.using(database).filter(
                node_id=self.node_id, status__in=OPEN, finished_at__isnull=True
            ):
                if end_unknown(execution.pk):
                    _close(database, execution, None, END_UNKNOWN, ExecutionStatus.UNKNOWN.value, level="WARNING")
                elif execution.status == ExecutionStatus.RUNNING:
                    message = f"node {node} stopped while the attempt was still running"
                    if _close(database, execution, now, message, ExecutionStatus.LOST.value):
                        lost.append((execution.worker, execution.pk, now))
                else:
                    message = f"node {node} stopped before the deferred attempt started"
                    _close(database, execution, now, message, ExecutionStatus.DEFERRED.value, level="WARNING")
            count_lost(database, self.node_id, lost)


def _close(
    database: str,
    execution: Execution,
    finished_at: datetime | None,
    message: str,
    status: str,
    level: str = "ERROR",
) -> bool:
    """Close one open attempt (unless somebody else just did) with an event saying why.

    ``finished_at`` None: the end is unknown, and so is the duration. A ``lost`` attempt's error
    is ``message`` (why it was closed), shown in the lists like an error.
    """
    duration = None
    if execution.started_at is not None and finished_at is not None:
        duration = max(0.0, (finished_at - execution.started_at).total_seconds())
    updated = (
        Execution.objects.using(database)
        .filter(pk=execution.pk, status__in=OPEN, finished_at__isnull=True)
        .update(
            status=status,
            finished_at=finished_at,
            duration=duration,
            error=message if status == ExecutionStatus.LOST else execution.error,
        )
    )
    if updated:
        ExecutionEvent.objects.using(database).create(
            node_id=execution.node_id, execution=execution, timestamp=datetime.now(UTC), level=level, message=message
        )
    return bool(updated)


def close_orphans(database: str, heartbeat_before: datetime, keep_node: uuid.UUID | None = None) -> int:
    """Close, as ``lost``, the open attempts of nodes whose last heartbeat is before ``heartbeat_before``.

    An attempt is open when its status is ``running`` or ``deferred`` and it has no finish time.
    Each closed attempt gets an ERROR event naming the lost node (``host:pid``); its finish time
    is the node's last heartbeat; it is counted in the node's tallies and states
    (:func:`~django_workers.history.tallies.count_lost`). Returns how many were closed. Safe to
    run from several nodes at once: an attempt is closed once.
    """
    open_attempts = Execution.objects.using(database).filter(
        node=OuterRef("pk"), status__in=OPEN, finished_at__isnull=True
    )
    lost = Node.objects.using(database).filter(last_heartbeat__lt=heartbeat_before).filter(Exists(open_attempts))
    if keep_node is not None:
        lost = lost.exclude(pk=keep_node)
    closed = 0
    for node in lost[:100]:
        seen = node.last_heartbeat.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
        message = f"node {node.hostname}:{node.pid} was lost (no heartbeat since {seen} UTC)"
        with transaction.atomic(using=database):
            counted: list[tuple[str, uuid.UUID, datetime]] = []
            for execution in Execution.objects.using(database).filter(
                node=node, status__in=OPEN, finished_at__isnull=True
            ):
                if _close(database, execution, node.last_heartbeat, message, ExecutionStatus.LOST.value):
                    counted.append((execution.worker, execution.pk, node.last_heartbeat))
            count_lost(database, node.pk, counted)
            closed += len(counted)
    return closed
