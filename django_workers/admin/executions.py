"""The executions pages: the list (newest first, filtered and searched through indexes) and one execution.

Times are shown to the second in the active time zone, with the zone; the node as ``host:pid``
(read with the row, one join: no query per row); the error's first line in the list.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _

from ..models import Execution
from .control import EXECUTION_ACTIONS, has_control_workers_permission
from .display import attempt_label, error_summary, exact_time, human_duration, status_badge
from .events import ExecutionEventsInline
from .filters import RecentNodeListFilter, WorkerListFilter, parse_uuid
from .paging import request_worker_names
from .readonly import ReadOnlyAdmin


class ExecutionAdmin(ReadOnlyAdmin):
    """Executions, newest first: one row per attempt of a worker.

    The only actions restart, pause or resume the selected executions' workers on their nodes,
    for staff holding ``django_workers.control_workers`` (:mod:`django_workers.admin.control`).
    """

    actions = EXECUTION_ACTIONS
    has_control_workers_permission = has_control_workers_permission

    list_display = (
        "worker",
        "status_display",
        "attempt_display",
        "node_display",
        "started_display",
        "duration_display",
        "error_display",
    )
    list_filter = (
        "status",  # every ExecutionStatus, lost and paused included
        WorkerListFilter,
        ("node", RecentNodeListFilter),
        ("created_at", admin.DateFieldListFilter),
    )
    list_select_related = ("node",)
    search_fields = ("worker",)
    search_help_text = _("An execution id (exact match) or part of a worker name.")
    # Newest first through the created_at index; sorting a million rows by another column is a full sort.
    ordering = ("-created_at",)
    sortable_by = ()
    _summary_fields = (
        "id",
        "worker",
        "status_display",
        "attempt_display",
        "node",
        "created_display",
        "started_display",
        "finished_display",
        "duration_display",
    )
    _error_fields = ("error", "traceback_display")
    fieldsets = ((None, {"fields": _summary_fields}), (_("Error"), {"fields": _error_fields}))
    # Everything shown is read-only.
    readonly_fields = (*_summary_fields, *_error_fields)
    inlines = (ExecutionEventsInline,)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        """With the node (the detail page shows it too)."""
        return super().get_queryset(request).select_related("node")

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Any], search_term: str
    ) -> tuple[QuerySet[Any], bool]:
        """A UUID finds that execution (primary key); other words must all be in the worker name.

        Names are matched, case-insensitively, against :func:`distinct_worker_names`; the
        executions are then filtered with ``worker IN (...)`` (the worker index) instead of a
        ``LIKE '%...%'`` over every row.
        """
        words = search_term.split()
        if not words:
            return queryset, False
        if len(words) == 1 and (execution_id := parse_uuid(words[0])) is not None:
            return queryset.filter(pk=execution_id), False
        folded = [word.casefold() for word in words]
        names = [name for name in request_worker_names(request) if all(word in name.casefold() for word in folded)]
        return queryset.filter(worker__in=names), False

    @admin.display(description=_("status"))
    def status_display(self, obj: Execution) -> SafeString:
        """A coloured badge."""
        return status_badge(obj.status)

    @admin.display(description=_("attempt"))
    def attempt_display(self, obj: Execution) -> str:
        """``i/n``."""
        return attempt_label(obj)

    @admin.display(description=_("host:pid"))
    def node_display(self, obj: Execution) -> str:
        """The node (the ``runworkers`` process) as ``host:pid``, read with the row (``select_related``)."""
        return str(obj.node)

    @admin.display(description=_("created"))
    def created_display(self, obj: Execution) -> SafeString | str:
        """To the second, with the time zone."""
        return exact_time(obj.created_at)

    @admin.display(description=_("started"))
    def started_display(self, obj: Execution) -> SafeString | str:
        """To the second, with the time zone (``-`` while deferred)."""
        return exact_time(obj.started_at)

    @admin.display(description=_("finished"))
    def finished_display(self, obj: Execution) -> SafeString | str:
        """To the second, with the time zone (``-`` while open, or when the end is unknown)."""
        return exact_time(obj.finished_at)

    @admin.display(description=_("error"))
    def error_display(self, obj: Execution) -> SafeString | str:
        """The error's first line, cut to a length; the whole text in the ``title`` (escaped)."""
        return error_summary(obj.error)

    @admin.display(description=_("duration"))
    def duration_display(self, obj: Execution) -> str:
        """Human readable."""
        return human_duration(obj.duration)

    @admin.display(description=_("traceback"))
    def traceback_display(self, obj: Execution) -> SafeString | str:
        """Preformatted and escaped."""
        if not obj.traceback:
            return "-"
        return format_html('<pre class="dw-traceback">{}</pre>', obj.traceback)
