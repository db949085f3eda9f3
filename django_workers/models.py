"""Execution history: one row per ``runworkers`` process, per execution attempt and per event.

Written by :mod:`django_workers.history` when ``WORKERS["HISTORY"]["ENABLED"]`` is true, read by
the admin, the health check and other hosts. Field choices and defaults are constants, never
derived from settings, so changing settings never makes migrations appear in a project.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Self, TypeVar

from django.db import models
from django.db.models.expressions import CombinedExpression
from django.db.models.functions import Now
from django.utils.translation import gettext_lazy as _

__all__ = [
    "ControlAction",
    "ControlRequest",
    "Execution",
    "ExecutionEvent",
    "ExecutionStatus",
    "ExecutionTally",
    "Lease",
    "LeaseRole",
    "Node",
    "NodeQuerySet",
    "WorkerOverview",
    "WorkerState",
]


class ExecutionStatus(models.TextChoices):
    """The statuses of :class:`django_workers.WorkerStatus`, as stored.

    A stored attempt is ``unknown`` when how it ended was among the events the recorder dropped
    (docs/history.md): its end is not known, never guessed. It is ``lost`` when it did not end by
    itself: its process was killed (its node stopped heart-beating) or exited with it still
    running. It is ``paused`` when an operator paused the worker during (or after) it.
    """

    UNKNOWN = "unknown", _("unknown")
    DEFERRED = "deferred", _("deferred")
    RUNNING = "running", _("running")
    SUCCESS = "success", _("success")
    ERROR = "error", _("error")
    LOST = "lost", _("lost")
    PAUSED = "paused", _("paused")
    STANDBY = "standby", _("standby")


class LeaseRole(models.TextChoices):
    """The role of a singleton worker on one node (:mod:`django_workers.fleet.keeper`)."""

    #: The node holds the lease: the worker runs there.
    LEADER = "leader", _("leader")
    #: The node lost the lease: its worker was cancelled and has not returned yet.
    RELEASING = "releasing", _("releasing")
    #: Another node holds the lease (or nobody does yet): the worker stands by.
    FOLLOWER = "follower", _("follower")
    #: The worker did not return within the stop timeout after its node lost the lease.
    STUCK = "stuck", _("stuck")


def _heartbeat_cutoff(grace: float) -> CombinedExpression:
    """The database's clock minus ``grace`` seconds: a running node whose last heartbeat is older is stale."""
    return Now() - models.Value(timedelta(seconds=grace), output_field=models.DurationField())


#: Generic, so that the type checker keeps what ``annotate()`` adds to a node (django-stubs).
_NodeT = TypeVar("_NodeT", bound="Node")


class NodeQuerySet(models.QuerySet[_NodeT]):
    """``Node.objects``: which nodes are live, judged by one rule (control, health check, admin)."""

    def live(self, grace: float) -> Self:
        """Nodes not stopped whose last heartbeat is at most ``grace`` seconds old.

        Compared with the database's clock (``Now()``), the clock that wrote the heartbeat, so a
        host with a skewed clock judges like the others. A process killed with SIGKILL never
        records its stop: its heartbeats end, and it goes stale.
        """
        return self.filter(stopped_at__isnull=True, last_heartbeat__gte=_heartbeat_cutoff(grace))

    def stale(self, grace: float) -> Self:
        """Nodes not stopped whose last heartbeat is older than ``grace`` seconds: the others of :meth:`live`."""
        return self.filter(stopped_at__isnull=True, last_heartbeat__lt=_heartbeat_cutoff(grace))


class Node(models.Model):
    """One ``runworkers`` process: where it runs, since when, and its last heartbeat."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    hostname = models.CharField(_("host"), max_length=255)
    pid = models.PositiveIntegerField(_("pid"))
    started_at = models.DateTimeField(_("started"))
    #: Set from the database clock (``Now()``), so that hosts with skewed clocks compare fairly.
    last_heartbeat = models.DateTimeField(_("last heartbeat"))
    stopped_at = models.DateTimeField(_("stopped"), null=True, blank=True)
    version = models.CharField(_("django-worker-pool version"), max_length=50)
    workers = models.JSONField(_("workers"), default=list, blank=True)
    dropped_events = models.PositiveBigIntegerField(
        _("dropped events"),
        default=0,
        help_text=_(
            "Events the recorder dropped: its buffer was full (writes failing, or slower than the events came) "
            "or the database rejected them."
        ),
    )

    objects = NodeQuerySet.as_manager()

    class Meta:
        verbose_name = _("node")
        verbose_name_plural = _("nodes")
        ordering = ("-started_at",)
        indexes = (
            # Live nodes (health check, orphan detection): stopped_at IS NULL and a fresh heartbeat.
            models.Index(fields=("stopped_at", "last_heartbeat"), name="django_work_node_live_idx"),
            models.Index(fields=("started_at",), name="django_work_node_started_idx"),
        )

    def __str__(self) -> str:
        return f"{self.hostname}:{self.pid}"

    @property
    def worker_names(self) -> tuple[str, ...]:
        """The names in :attr:`workers` (the recorder writes a list of names); none for anything else."""
        workers = self.workers
        return tuple(name for name in workers if isinstance(name, str)) if isinstance(workers, list) else ()


class Execution(models.Model):
    """One execution attempt of one worker; its key is the attempt's execution id."""

    id = models.UUIDField(_("execution id"), primary_key=True, editable=False)
    # No index of its own: (node, status) and (node, -created_at, -id) below start with it.
    node = models.ForeignKey(
        Node, on_delete=models.CASCADE, related_name="executions", verbose_name=_("node"), db_index=False
    )
    worker = models.CharField(_("worker"), max_length=255)
    attempt = models.PositiveIntegerField(_("attempt"))
    max_attempts = models.PositiveIntegerField(_("max attempts"), help_text=_("0 means unlimited."))
    status = models.CharField(_("status"), max_length=16, choices=ExecutionStatus.choices)
    started_at = models.DateTimeField(_("started"), null=True, blank=True)
    finished_at = models.DateTimeField(_("finished"), null=True, blank=True)
    duration = models.FloatField(_("duration (seconds)"), null=True, blank=True)
    error = models.TextField(_("last error"), blank=True)
    traceback = models.TextField(_("traceback"), blank=True)
    #: When the row was created (the deferral or the start of the attempt): orders and prunes.
    created_at = models.DateTimeField(_("created"))

    class Meta:
        verbose_name = _("execution")
        verbose_name_plural = _("executions")
        ordering = ("-created_at",)
        indexes = (
            models.Index(fields=("-created_at",), name="django_work_exec_created_idx"),
            models.Index(fields=("status", "-created_at"), name="django_work_exec_status_idx"),
            models.Index(fields=("worker", "-created_at"), name="django_work_exec_worker_idx"),
            models.Index(fields=("node", "status"), name="django_work_exec_node_idx"),
            # The admin's node filter: newest first, in the changelist's full order (Django appends
            # -pk), so the planner does not walk the created_at index past other nodes' rows.
            models.Index(fields=("node", "-created_at", "-id"), name="django_work_exec_node_time_idx"),
        )

    def __str__(self) -> str:
        return f"{self.worker} {self.attempt}/{self.max_attempts or 'unlimited'} ({self.status})"


class ExecutionEvent(models.Model):
    """One line of an execution report (the same messages as the in-memory report).

    ``execution`` is empty for node-level events (the marker the recorder writes after dropping
    events: how many and why).
    """

    node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="events", verbose_name=_("node"))
    execution = models.ForeignKey(
        Execution,
        on_delete=models.CASCADE,
        related_name="events",
        null=True,
        blank=True,
        verbose_name=_("execution"),
        db_index=False,  # (execution, timestamp, id) below starts with it
    )
    timestamp = models.DateTimeField(_("time"))
    level = models.CharField(_("level"), max_length=10)
    message = models.TextField(_("message"))

    class Meta:
        verbose_name = _("event")
        verbose_name_plural = _("events")
        ordering = ("timestamp", "id")
        indexes = (
            models.Index(fields=("timestamp",), name="django_work_event_time_idx"),
            # A page of an execution's events in the admin, in the full ordering (timestamp, id):
            # without it the planner walks the timestamp index past every other execution's events.
            models.Index(fields=("execution", "timestamp", "id"), name="django_work_event_page_idx"),
        )

    def __str__(self) -> str:
        return self.message


#: The length of a period of :class:`ExecutionTally` (seconds): a day is 288 of them.
TALLY_PERIOD = 300


class ControlAction(models.TextChoices):
    """What an operator can ask of a worker (:mod:`django_workers.control`)."""

    RESTART = "restart", _("restart")
    PAUSE = "pause", _("pause")
    RESUME = "resume", _("resume")


class ControlRequest(models.Model):
    """An operator's request to restart, pause or resume a worker, on one node or on every node.

    The table is the log of requests, read by every ``runworkers`` with history enabled: each picks
    up the rows addressed to it (``node``) or to every node (``node`` empty) that are newer than
    its start. The latest pause, resume or restart addressed to every node is the worker's standing state:
    a ``runworkers`` started later keeps a paused worker paused.
    """

    id = models.BigAutoField(primary_key=True)
    action = models.CharField(_("action"), max_length=16, choices=ControlAction.choices)
    worker = models.CharField(_("worker"), max_length=255)
    node = models.ForeignKey(
        Node,
        on_delete=models.CASCADE,
        related_name="control_requests",
        null=True,
        blank=True,
        verbose_name=_("node"),
        help_text=_("Empty: every node."),
    )
    requested_by = models.CharField(_("requested by"), max_length=255)
    requested_at = models.DateTimeField(_("requested"))

    class Meta:
        verbose_name = _("control request")
        verbose_name_plural = _("control requests")
        ordering = ("-id",)
        default_permissions = ("view",)
        permissions = (("control_workers", _("Can restart, pause and resume workers")),)
        indexes = (
            # A starting node reads each worker's latest pause, resume or restart addressed to every node.
            models.Index(fields=("worker", "-id"), name="django_work_control_worker_idx"),
        )

    def __str__(self) -> str:
        where = str(self.node) if self.node_id else "every node"
        return f"{self.action} {self.worker} on {where} by {self.requested_by}"


class WorkerState(models.Model):
    """The current state of one worker on one node, kept up to date by that node's recorder.

    The operator overview reads these rows (a few per node) instead of searching the executions
    table for each worker's latest attempt, so its cost does not grow with the history.
    """

    node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="worker_states", verbose_name=_("node"))
    worker = models.CharField(_("worker"), max_length=255)
    #: Registration order on the node.
    position = models.PositiveIntegerField(_("position"), default=0)
    status = models.CharField(_("status"), max_length=16, choices=ExecutionStatus.choices)
    attempt = models.PositiveIntegerField(_("attempt"), default=0)
    max_attempts = models.PositiveIntegerField(_("max attempts"), default=1, help_text=_("0 means unlimited."))
    #: When the status last changed (the time of the event that changed it).
    since = models.DateTimeField(_("since"), null=True, blank=True)
    #: The current (or last) attempt; not a foreign key: retention may prune its row first.
    execution_id = models.UUIDField(_("execution id"), null=True, blank=True)
    last_error = models.TextField(_("last error"), blank=True)
    last_error_execution_id = models.UUIDField(_("execution of the last error"), null=True, blank=True)
    exhausted = models.BooleanField(_("exhausted"), default=False)
    silent = models.BooleanField(_("silent"), default=False)
    paused = models.BooleanField(_("paused"), default=False)
    #: A singleton's role on the node (:class:`LeaseRole`); empty for a worker that is not one.
    #: A database default too: a ``runworkers`` of the previous release, still writing while the
    #: migration is applied (a rolling deploy), inserts rows without this column.
    role = models.CharField(
        _("lease role"), max_length=16, choices=LeaseRole.choices, blank=True, default="", db_default=""
    )
    #: The fence of the lease the node holds for a singleton, else None.
    fence = models.PositiveBigIntegerField(_("fence"), null=True, blank=True)
    updated_at = models.DateTimeField(_("updated"))

    class Meta:
        verbose_name = _("worker state")
        verbose_name_plural = _("worker states")
        ordering = ("node", "position")
        default_permissions = ()
        constraints = (models.UniqueConstraint(fields=("node", "worker"), name="django_work_state_unique"),)

    def __str__(self) -> str:
        return f"{self.worker} on {self.node_id}: {self.status}"


class ExecutionTally(models.Model):
    """Counts of one worker's attempts on one node in one period (:data:`TALLY_PERIOD` long).

    Kept by the recorder as it writes, so the overview's timelines and recent-failure counts read
    at most a day of periods per worker and node, whatever the size of the executions table.
    """

    node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="tallies", verbose_name=_("node"))
    worker = models.CharField(_("worker"), max_length=255)
    #: The start of the period (UTC, a multiple of the period since the epoch).
    period_start = models.DateTimeField(_("period start"))
    started = models.PositiveIntegerField(_("started"), default=0)
    succeeded = models.PositiveIntegerField(_("succeeded"), default=0)
    failed = models.PositiveIntegerField(_("failed"), default=0)
    lost = models.PositiveIntegerField(_("lost"), default=0)
    restarted = models.PositiveIntegerField(_("restarted"), default=0)

    class Meta:
        verbose_name = _("execution tally")
        verbose_name_plural = _("execution tallies")
        ordering = ("period_start",)
        default_permissions = ()
        constraints = (
            models.UniqueConstraint(fields=("node", "worker", "period_start"), name="django_work_tally_unique"),
        )
        indexes = (models.Index(fields=("period_start",), name="django_work_tally_period_idx"),)

    def __str__(self) -> str:
        return f"{self.worker} on {self.node_id} at {self.period_start:%Y-%m-%d %H:%M}"


class WorkerOverview(WorkerState):
    """The admin's overview page of the workers (``admin:django_workers_dashboard``), listed in the admin index.

    A proxy without a table or permissions of its own: the page is for whoever may view executions.
    """

    class Meta:
        proxy = True
        verbose_name = _("overview")
        verbose_name_plural = _("overview")
        default_permissions = ()


class Lease(models.Model):
    """The lease of one singleton worker (:mod:`django_workers.fleet.leases`): who holds it, until when.

    ``expires_at`` is set from the database's clock, so hosts with skewed clocks agree on it;
    ``fence`` grows by one at every change of holder, and the holder hands it to its worker as
    the fencing token. ``holder`` is the holding node's id (not a foreign key: retention may prune
    a node row while its last lease row stays).
    """

    name = models.CharField(_("worker"), max_length=255, primary_key=True)
    holder = models.UUIDField(_("holder (node id)"), null=True, blank=True)
    fence = models.PositiveBigIntegerField(_("fence"), default=0)
    expires_at = models.DateTimeField(_("expires"))
    #: When the current holder took the lease (the database's clock).
    since = models.DateTimeField(_("since"), null=True, blank=True)

    class Meta:
        verbose_name = _("lease")
        verbose_name_plural = _("leases")
        ordering = ("name",)
        default_permissions = ("view",)

    def __str__(self) -> str:
        return f"{self.name}: {self.holder or 'free'} (fence {self.fence})"
