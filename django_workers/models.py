"""Execution history: one row per ``runworkers`` process, per execution attempt and per event.

Written by :mod:`django_workers.history` when ``WORKERS["HISTORY"]["ENABLED"]`` is true, read by
the admin, the health check and other hosts. Field choices and defaults are constants, never
derived from settings, so changing settings never makes migrations appear in a project.
"""

from __future__ import annotations

import uuid

from django.db import models
from django.utils.translation import gettext_lazy as _

__all__ = ["Execution", "ExecutionEvent", "ExecutionStatus", "Node"]


class ExecutionStatus(models.TextChoices):
    """The statuses of :class:`django_workers.WorkerStatus`, as stored.

    A stored attempt is ``unknown`` when how it ended was among the events the recorder dropped
    (docs/history.md): its end is not known, never guessed.
    """

    UNKNOWN = "unknown", _("unknown")
    DEFERRED = "deferred", _("deferred")
    RUNNING = "running", _("running")
    SUCCESS = "success", _("success")
    ERROR = "error", _("error")


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
