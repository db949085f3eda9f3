"""The base of the history's ModelAdmins: read-only for everyone, tuned for large tables."""

from __future__ import annotations

from typing import Any, ClassVar

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from .history_settings import history_database
from .paging import LargeTablePaginator


class ReadOnlyAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """No add, change or delete for anyone; large-table settings; reads the history database."""

    actions = None
    view_on_site = False
    paginator = LargeTablePaginator
    # A full result count is a COUNT(*) of the whole table; facets, one COUNT per filter choice.
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER

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
