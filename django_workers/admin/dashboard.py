"""The overview page (``admin:django_workers_dashboard``): every worker on every node, problems first.

Registered as the changelist of :class:`~django_workers.models.WorkerOverview` (a proxy without
a table of its own), so that the admin index and the app's index link to it. For staff who may
view executions (``django_workers.view_execution``); the control buttons (restart, pause,
resume) only for those who also hold ``django_workers.control_workers``, and only when the
control endpoint (``admin:django_workers_control``) is installed. What it reads is described in
:mod:`~django_workers.admin.overview`; ``?refresh=N`` reloads the page every N seconds.
"""

from __future__ import annotations

from typing import Any, Final

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, URLPattern, path, reverse
from django.utils.translation import gettext_lazy as _

from ..control import PERMISSION
from .control import CONTROL_URL_NAME
from .history_settings import history_database, stale_after
from .overview import NODES_LIMIT, configured_worker_names, read_overview

__all__ = ["REFRESH_CHOICES", "REFRESH_MAX", "REFRESH_MIN", "OverviewAdmin", "refresh_seconds"]

#: ``?refresh=N`` is clamped to this range (seconds); anything but a whole number is ignored.
REFRESH_MIN: Final = 5
REFRESH_MAX: Final = 3600
#: The refresh links the page offers.
REFRESH_CHOICES: Final = (10, 30, 60)


def refresh_seconds(value: str | None) -> int | None:
    """``?refresh=N`` as seconds within [REFRESH_MIN, REFRESH_MAX]; None when absent or not a number."""
    if value is None:
        return None
    try:
        seconds = int(value.strip())
    except ValueError:
        return None
    return min(REFRESH_MAX, max(REFRESH_MIN, seconds))


class OverviewAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """The overview page in place of a changelist; nothing to add, change or delete."""

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """Whoever may view executions."""
        return request.user.has_perm("django_workers.view_execution")

    def has_module_permission(self, request: HttpRequest) -> bool:
        """Listed on the admin index for whoever may view executions."""
        return self.has_view_permission(request)

    def has_add_permission(self, request: HttpRequest) -> bool:
        """Never."""
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """Never."""
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """Never."""
        return False

    def get_urls(self) -> list[URLPattern]:
        """The page, under two names: ``..._dashboard`` and the changelist's (the index links to that)."""
        view = self.admin_site.admin_view(self.dashboard_view)
        info = self.opts.app_label, self.opts.model_name
        return [
            path("", view, name="django_workers_dashboard"),
            path("", view, name="{}_{}_changelist".format(*info)),
        ]

    def control_url(self) -> str | None:
        """The control endpoint's URL, or None when it is not installed."""
        try:
            return reverse(f"admin:{CONTROL_URL_NAME}", current_app=self.admin_site.name)
        except NoReverseMatch:
            return None

    def dashboard_view(self, request: HttpRequest) -> HttpResponse:
        """The page (GET); 403 for staff who may not view executions."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        overview = read_overview(history_database(), configured_worker_names())
        control_url = self.control_url()
        can_control = control_url is not None and request.user.has_perm(PERMISSION)
        refresh = refresh_seconds(request.GET.get("refresh"))
        context = {
            **self.admin_site.each_context(request),
            "title": _("Workers overview"),
            "subtitle": None,
            "opts": self.opts,
            "app_label": self.opts.app_label,
            "overview": overview,
            "nodes_limit": NODES_LIMIT,
            "stale_after": stale_after(),
            "refresh": refresh,
            "refresh_choices": REFRESH_CHOICES,
            "can_control": can_control,
            "control_url": control_url,
            "can_view_nodes": request.user.has_perm("django_workers.view_node"),
            "next_url": request.get_full_path(),
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/django_workers/dashboard.html", context)
