"""The executions pages: the list (newest first, filtered and searched through indexes) and one execution."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _

from ..models import Execution
from .display import attempt_label, human_duration, status_badge
from .events import ExecutionEventsInline
from .filters import RecentNodeListFilter, WorkerListFilter, parse_uuid
from .paging import request_worker_names
from .readonly import ReadOnlyAdmin


class ExecutionAdmin(ReadOnlyAdmin):
    """Executions, newest first: one row per attempt of a worker."""

    list_display = ("worker", "status_display", "attempt_display", "host", "started_at", "duration_display")
    list_filter = (
        "status",
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
        "created_at",
        "started_at",
        "finished_at",
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

    @admin.display(description=_("host"))
    def host(self, obj: Execution) -> str:
        """The node's hostname."""
        return obj.node.hostname

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
