"""The base of the history's ModelAdmins: read-only for everyone, tuned for large tables.

No object "History" either: that page lists the admin's changes to a row (``LogEntry``), and
nobody changes these rows. Its button is gone from the page of a row and its URL answers 403.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse

from .history_settings import history_database
from .paging import LargeTablePaginator


class ReadOnlyAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """No add, change or delete for anyone; large-table settings; reads the history database."""

    actions: Sequence[Any] | None = None  # the executions list adds the control actions
    view_on_site = False
    paginator = LargeTablePaginator
    # A full result count is a COUNT(*) of the whole table; facets, one COUNT per filter choice.
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    # Django's change form without its object tools (the "History" button).
    change_form_template = "admin/django_workers/readonly_change_form.html"

    class Media:
        css: ClassVar[dict[str, tuple[str, ...]]] = {"all": ("django_workers/admin.css",)}

    def has_add_permission(self, request: HttpRequest) -> bool:
        """Never: the history is written by the recorder only."""
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """Never (staff with the view permission get the read-only page)."""
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """Never (retention prunes the history)."""
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        """From ``WORKERS["HISTORY"]["DATABASE"]``."""
        return super().get_queryset(request).using(history_database())

    def history_view(self, request: HttpRequest, object_id: str, extra_context: Any = None) -> HttpResponse:
        """Never: nobody changes these rows, so they have no history of changes (403)."""
        raise PermissionDenied
