"""What the overview page shows, read with a fixed number of queries whatever the history's size.

Five queries on the history database: the nodes shown (alive or stale ones heart-beating within
a day, stopped ones that stopped within a day; at most :data:`NODES_LIMIT`), the workers' states
on those nodes (:class:`~django_workers.models.WorkerState`, one row per node and worker), their
failures and restarts in the last hour and day per node shown, the day's timeline of every
worker over all nodes (which also gives a worker's failures and restarts on every node, shown or
not): both sums over :class:`~django_workers.models.ExecutionTally` (a row per worker, node and
5-minute period), grouped by the database; and the singletons' leases
(:class:`~django_workers.models.Lease`, one row per singleton), with their holders' ``host:pid``
and the database's clock. The executions table is never read.

A singleton worker's row says its role on that node (leader, releasing, follower, stuck: the
recorder keeps it in :class:`~django_workers.models.WorkerState`); a stuck one on an alive node
is the most urgent problem: its old run may still be running beside the new holder's.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from django.db.models import F, OuterRef, Q, Subquery, Sum
from django.db.models.functions import Now
from django.utils import timezone
from django.utils.translation import gettext as _

from ..control import requests as control_requests
from ..models import TALLY_PERIOD, ExecutionStatus, ExecutionTally, Lease, LeaseRole, Node, WorkerState
from .display import ERROR_SUMMARY_LENGTH, clip, human_duration, node_state
from .history_settings import stale_after
from .timeline import BUCKET_SECONDS, Timeline, build_timeline, period_labels

__all__ = [
    "NODES_LIMIT",
    "LeaseView",
    "NodeView",
    "Overview",
    "WorkerGroup",
    "WorkerRow",
    "configured_worker_names",
    "read_overview",
]

#: Nodes shown at most (the latest ones first); the page says when more exist.
NODES_LIMIT: Final = 50
#: The window of the recent counts and of the timeline.
DAY: Final = timedelta(hours=24)
#: "The last hour": the current period and the 11 before it.
HOUR_PERIODS: Final = 12

#: How urgent a worker's row is, most urgent first (the page lists problems first). A stuck
#: singleton may run beside the new holder of its lease; an exhausted worker will not run again.
STUCK, EXHAUSTED, SILENT, FAILING, OTHER = range(5)
SEVERITY_LABELS: Final = {STUCK: "stuck", EXHAUSTED: "exhausted", SILENT: "silent", FAILING: "failing", OTHER: ""}
_NODE_RANK: Final = {"alive": 0, "stale": 1, "stopped": 2}
#: A singleton's rows: the leader first, then a node whose cancelled run has not returned, then the followers.
_ROLE_RANK: Final = {LeaseRole.LEADER.value: 0, LeaseRole.STUCK.value: 1, LeaseRole.RELEASING.value: 2}
_OPEN: Final = (ExecutionStatus.RUNNING.value, ExecutionStatus.DEFERRED.value)


def ago(value: datetime | None, now: datetime) -> str:
    """``value`` relative to ``now``: ``12.0 s ago``, ``3 min 7 s ago``, ``1 h 2 min ago``; ``-`` for None."""
    if value is None:
        return "-"
    return _("%(duration)s ago") % {"duration": human_duration(max(0.0, (now - value).total_seconds()))}


def within(value: datetime, now: datetime) -> str:
    """A future ``value`` relative to ``now``: ``in 12.0 s``, ``in 3 min 7 s``."""
    return _("in %(duration)s") % {"duration": human_duration(max(0.0, (value - now).total_seconds()))}


@dataclass(frozen=True)
class NodeView:
    """A node as the page shows it."""

    node: Node
    state: str  # alive, stale, stopped
    uptime: str
    heartbeat_ago: str

    @property
    def label(self) -> str:
        """``host:pid`` (the node's ``str``); the name the template reads."""
        return str(self.node)


@dataclass(frozen=True)
class Counts:
    """Failures (failed and lost attempts) and restarts in the last hour and day."""

    failures_hour: int = 0
    failures_day: int = 0
    restarts_hour: int = 0
    restarts_day: int = 0


@dataclass(frozen=True)
class WorkerRow:
    """One worker on one node."""

    node: NodeView
    worker: str
    status: str  # as shown: a running worker of a stale node is lost, of a stopped one unknown
    attempt: str  # i/n, i/unlimited, or "-"
    since: datetime | None
    since_ago: str
    error_line: str
    error_execution_id: str | None
    exhausted: bool
    silent: bool
    paused: bool
    counts: Counts
    severity: int
    #: A singleton's role on the node (a :class:`~django_workers.models.LeaseRole` value); ``""``
    #: for other workers, and on a stopped node (it holds nothing now: the leases table says who does).
    role: str = ""
    #: The fence of the lease the node holds (leader), else None.
    fence: int | None = None
    #: Since when it has had that role, when known: a leader since it took the lease (the lease
    #: row), a follower since it stood by (its status); None otherwise.
    role_since: datetime | None = None
    role_since_ago: str = "-"

    @property
    def problem(self) -> str:
        """``stuck``, ``exhausted``, ``silent``, ``failing`` or ``""``."""
        return SEVERITY_LABELS[self.severity]


@dataclass(frozen=True)
class WorkerGroup:
    """One worker name: its rows (one per node running it), totals and timeline."""

    name: str
    rows: tuple[WorkerRow, ...]
    timeline: Timeline
    #: On every node (shown or not), from the same sums as the timeline.
    counts: Counts
    severity: int
    configured: bool

    @property
    def problem(self) -> str:
        """The most urgent problem of its rows on alive nodes (of all its rows when none is alive), or ``""``."""
        return SEVERITY_LABELS[self.severity]

    @property
    def singleton(self) -> bool:
        """Whether a row says a lease role (the table then has a column for it)."""
        return any(row.role for row in self.rows)


@dataclass(frozen=True)
class LeaseView:
    """A singleton's lease as the page shows it (times relative to the database's clock)."""

    name: str
    #: The holding node's id; None for a free (released or never taken) lease.
    holder: uuid.UUID | None
    #: ``host:pid`` of the holder when its node row exists (retention may have pruned it), else None.
    holder_label: str | None
    fence: int
    since: datetime | None
    since_ago: str
    expires_at: datetime
    #: ``in 12.0 s`` while it runs; ``""`` once expired or free.
    expires_in: str
    expired: bool

    @property
    def free(self) -> bool:
        """Nobody holds it: released (a follower may take it at once) or never taken."""
        return self.holder is None

    @property
    def state(self) -> str:
        """``held``, ``expired`` (its holder stopped renewing: anyone may take it) or ``free``."""
        if self.free:
            return "free"
        return "expired" if self.expired else "held"


@dataclass(frozen=True)
class Overview:
    """Everything the page shows."""

    now: datetime
    groups: tuple[WorkerGroup, ...]
    nodes: tuple[NodeView, ...]
    more_nodes: bool
    leases: tuple[LeaseView, ...] = ()


def configured_worker_names() -> list[str]:
    """The worker names ``WORKERS["WORKERS"]`` configures (none when the setting is invalid)."""
    try:
        return control_requests.configured_worker_names()
    except Exception:  # a worker module broken in this process: the checks report it
        return []


def error_line(text: str, limit: int = ERROR_SUMMARY_LENGTH) -> str:
    """The first non-empty line of ``text``, cut to ``limit`` characters with an ellipsis."""
    line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return line if len(line) <= limit else clip(line, limit)


def attempt_text(attempt: int, max_attempts: int) -> str:
    """``2/3``, ``2/unlimited``; ``-`` before the first attempt."""
    if attempt <= 0:
        return "-"
    return f"{attempt}/{max_attempts or 'unlimited'}"


def _shown_status(status: str, state: str) -> str:
    """What a node's state makes of a worker's status: never ``running`` on a node that is gone."""
    if state == "stale" and status in (*_OPEN, ExecutionStatus.PAUSED.value):
        return ExecutionStatus.LOST.value
    if state == "stopped" and status in _OPEN:
        return ExecutionStatus.UNKNOWN.value
    return status


def _severity(state: str, status: str, exhausted: bool, silent: bool, role: str = "") -> int:
    if state == "stopped":
        return OTHER  # history: a stopped node's workers are nobody's problem now
    if role == LeaseRole.STUCK and state == "alive":
        return STUCK
    if exhausted and status == ExecutionStatus.ERROR:
        return EXHAUSTED
    if silent and status == ExecutionStatus.RUNNING:
        return SILENT
    if status in (ExecutionStatus.ERROR, ExecutionStatus.LOST):
        return FAILING
    return OTHER


def _window(now: datetime) -> tuple[datetime, datetime]:
    """The start of the day's window and of the last hour's.

    The day ends with the quarter hour (timeline bucket) holding ``now``: its buckets are wall-clock
    quarter hours. The last hour is the current period and the 11 before it.
    """
    seconds = int(now.timestamp())
    end = seconds - seconds % BUCKET_SECONDS + BUCKET_SECONDS
    day_start = datetime.fromtimestamp(end - int(DAY.total_seconds()), UTC)
    current = seconds - seconds % TALLY_PERIOD
    hour_start = datetime.fromtimestamp(current - (HOUR_PERIODS - 1) * TALLY_PERIOD, UTC)
    return day_start, hour_start


def read_overview(database: str, configured: Sequence[str] = ()) -> Overview:
    """Read the page's data from ``database`` (five queries) and arrange it, problems first."""
    nodes_query = (
        Node.objects.using(database)
        .annotate(db_now=Now())
        .filter(
            Q(stopped_at__isnull=True, last_heartbeat__gte=timezone.now() - DAY)
            | Q(stopped_at__gte=timezone.now() - DAY)
        )
        .order_by(F("stopped_at").desc(nulls_first=True), "-last_heartbeat", "-started_at")
    )
    fetched = list(nodes_query[: NODES_LIMIT + 1])
    more_nodes = len(fetched) > NODES_LIMIT
    nodes = fetched[:NODES_LIMIT]
    now: datetime = nodes[0].db_now if nodes else timezone.now()
    day_start, hour_start = _window(now)
    stale = stale_after()  # once per page: parsed from the setting at each call
    views = {node.pk: _node_view(node, now, stale) for node in nodes}

    states = list(WorkerState.objects.using(database).filter(node_id__in=list(views)).order_by())
    per_node = _node_counts(database, list(views), day_start, hour_start)
    labels = period_labels(day_start, now)
    timelines, totals = build_timelines(database, day_start, hour_start, now, labels)
    leases = read_leases(database)
    held = {(lease.holder, lease.name): lease for lease in leases if lease.holder is not None}

    rows: dict[str, list[WorkerRow]] = {}
    for state in states:
        view = views[state.node_id]
        status = _shown_status(state.status, view.state)
        role = state.role if view.state != "stopped" else ""
        role_since = _role_since(role, state, held.get((state.node_id, state.worker)))
        rows.setdefault(state.worker, []).append(
            WorkerRow(
                node=view,
                worker=state.worker,
                status=status,
                attempt=attempt_text(state.attempt, state.max_attempts),
                since=state.since,
                since_ago=ago(state.since, now),
                error_line=error_line(state.last_error),
                error_execution_id=str(state.last_error_execution_id) if state.last_error_execution_id else None,
                exhausted=state.exhausted and status == ExecutionStatus.ERROR,
                silent=state.silent and status == ExecutionStatus.RUNNING,
                paused=state.paused and view.state != "stale",
                counts=per_node.get((state.node_id, state.worker), Counts()),
                severity=_severity(view.state, status, state.exhausted, state.silent, role),
                role=role,
                fence=state.fence if role else None,
                role_since=role_since,
                role_since_ago=ago(role_since, now),
            )
        )
    configured_set = set(configured)
    names = set(rows) | configured_set | set(timelines)
    groups = []
    for name in names:
        worker_rows = sorted(
            rows.get(name, ()),
            key=lambda row: (
                _NODE_RANK[row.node.state],
                row.severity,
                _ROLE_RANK.get(row.role, 3),
                -row.node.node.started_at.timestamp(),
            ),
        )
        # A stale node's rows show lost, but while the worker runs on alive nodes, those say how it is.
        judged = [row for row in worker_rows if row.node.state == "alive"] or worker_rows
        groups.append(
            WorkerGroup(
                name=name,
                rows=tuple(worker_rows),
                timeline=timelines.get(name) or build_timeline((), day_start, now, labels),
                counts=totals.get(name, Counts()),
                severity=min((row.severity for row in judged), default=OTHER),
                configured=name in configured_set,
            )
        )
    groups.sort(key=lambda group: (group.severity, group.name))
    return Overview(
        now=now,
        groups=tuple(groups),
        nodes=tuple(views.values()),
        more_nodes=more_nodes,
        leases=tuple(leases),
    )


def _role_since(role: str, state: WorkerState, lease: LeaseView | None) -> datetime | None:
    """Since when a singleton has had its role on its node, when the rows tell."""
    if role == LeaseRole.LEADER:
        # The lease row's ``since`` is when this node took it, if it still holds it under that fence.
        return lease.since if lease is not None and lease.fence == state.fence else None
    if role == LeaseRole.FOLLOWER and state.status == ExecutionStatus.STANDBY:
        return state.since
    return None


def read_leases(database: str) -> list[LeaseView]:
    """Every singleton's lease, by name, with its holder's ``host:pid`` and the database's clock (one query).

    ``holder`` is not a foreign key (retention may prune the holder's node row first): its host
    and pid are read by subqueries of the same statement. Whether a lease expired, and the times
    shown relative, are judged by the database's clock (``Now()`` read by that statement), the
    clock that set ``expires_at``, never the web server's.
    """
    holder = Node.objects.using(database).filter(pk=OuterRef("holder"))
    rows = (
        Lease.objects.using(database)
        .annotate(
            db_now=Now(),
            holder_hostname=Subquery(holder.values("hostname")[:1]),
            holder_pid=Subquery(holder.values("pid")[:1]),
        )
        .order_by("name")
    )
    leases = []
    for row in rows:
        now: datetime = row.db_now
        expired = row.holder is not None and row.expires_at <= now
        known = row.holder is not None and row.holder_hostname is not None
        leases.append(
            LeaseView(
                name=row.name,
                holder=row.holder,
                holder_label=f"{row.holder_hostname}:{row.holder_pid}" if known else None,
                fence=row.fence,
                since=row.since if row.holder is not None else None,
                since_ago=ago(row.since, now) if row.holder is not None else "-",
                expires_at=row.expires_at,
                expires_in=within(row.expires_at, now) if row.holder is not None and not expired else "",
                expired=expired,
            )
        )
    return leases


def _node_view(node: Node, now: datetime, stale: timedelta) -> NodeView:
    state = node_state(node, stale)
    end = node.stopped_at if node.stopped_at is not None else now
    return NodeView(
        node=node,
        state=state,
        uptime=human_duration(max(0.0, (end - node.started_at).total_seconds())),
        heartbeat_ago=ago(node.last_heartbeat, now),
    )


def _node_counts(
    database: str, node_ids: Iterable[Any], day_start: datetime, hour_start: datetime
) -> dict[tuple[Any, str], Counts]:
    """Failures (failed + lost) and restarts per node and worker, in the last hour and day (one query)."""
    recent = Q(period_start__gte=hour_start)
    sums = (
        ExecutionTally.objects.using(database)
        .filter(node_id__in=list(node_ids), period_start__gte=day_start)
        .order_by()
        .values("node_id", "worker")
        .annotate(
            failures_day=Sum(F("failed") + F("lost")),
            restarts_day=Sum("restarted"),
            failures_hour=Sum(F("failed") + F("lost"), filter=recent),
            restarts_hour=Sum("restarted", filter=recent),
        )
    )
    return {
        (row["node_id"], row["worker"]): Counts(
            failures_hour=row["failures_hour"] or 0,
            failures_day=row["failures_day"] or 0,
            restarts_hour=row["restarts_hour"] or 0,
            restarts_day=row["restarts_day"] or 0,
        )
        for row in sums
    }


def build_timelines(
    database: str, day_start: datetime, hour_start: datetime, now: datetime, labels: list[str]
) -> tuple[dict[str, Timeline], dict[str, Counts]]:
    """Every worker's timeline of the day and its failures and restarts, over all nodes.

    One query: sums per worker and period. The counts add the same periods as the timeline, so
    that a worker's header agrees with its timeline whatever the number of nodes shown.
    """
    sums = (
        ExecutionTally.objects.using(database)
        .filter(period_start__gte=day_start)
        .order_by()
        .values_list("worker", "period_start")
        .annotate(Sum("started"), Sum("succeeded"), Sum("failed"), Sum("lost"), Sum("restarted"))
    )
    periods: dict[str, list[tuple[datetime, tuple[int, int, int, int, int]]]] = {}
    # Plain ints while adding (a day of periods per worker): Counts are built once per worker.
    added: dict[str, list[int]] = {}
    for worker, start, *counts in sums:
        started, succeeded, failed, lost, restarted = (count or 0 for count in counts)
        periods.setdefault(worker, []).append((start, (started, succeeded, failed, lost, restarted)))
        sums_of = added.setdefault(worker, [0, 0, 0, 0])  # failures in 1 h, in 24 h; restarts in 1 h, in 24 h
        sums_of[1] += failed + lost
        sums_of[3] += restarted
        if start >= hour_start:
            sums_of[0] += failed + lost
            sums_of[2] += restarted
    timelines = {worker: build_timeline(rows, day_start, now, labels) for worker, rows in periods.items()}
    return timelines, {worker: Counts(*values) for worker, values in added.items()}
