"""Control from the admin: the log of control requests, the POST endpoint, the executions' actions.

- :class:`ControlRequestAdmin`: the read-only list of the requests (who asked what, where, when),
  registered here with ``admin.site``.
- Its URL ``admin:django_workers_control`` takes a POST (CSRF-protected) of ``action`` (restart,
  pause, resume), ``worker``, ``node`` (a node id; empty: every node) and ``next`` (a same-site
  URL to go back to): the overview's buttons post there. 405 for another method, 403 without the
  permission ``django_workers.control_workers``.
- :data:`EXECUTION_ACTIONS`: admin actions for the executions list, applied to the distinct
  (worker, node) pairs of the selected executions; shown only to users with the permission (a
  ModelAdmin using them needs :func:`has_control_workers_permission` as a method).

Every path goes through :func:`django_workers.control.submit`, which validates the request and
writes its ``LogEntry``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import DatabaseError
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.urls import NoReverseMatch, URLPattern, path, reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _

from ..control import PERMISSION, ControlError, database_problem, describe_request, submit
from ..models import ControlRequest
from ..settings import history_settings
from .display import exact_time
from .history_settings import history_database
from .readonly import ReadOnlyAdmin

if TYPE_CHECKING:
    from django_stubs_ext import StrOrPromise

__all__ = [
    "CONTROL_URL_NAME",
    "EXECUTION_ACTIONS",
    "ControlRequestAdmin",
    "has_control_workers_permission",
    "pause_workers",
    "restart_workers",
    "resume_workers",
]

#: The name of the POST endpoint, in the admin site's namespace (``admin:django_workers_control``).
CONTROL_URL_NAME = "django_workers_control"


def has_control_workers_permission(modeladmin: Any, request: HttpRequest) -> bool:
    """Whether the user may restart, pause and resume workers (``django_workers.control_workers``).

    A ModelAdmin that offers :data:`EXECUTION_ACTIONS` has it as a method (Django's action
    ``permissions=["control_workers"]`` calls ``has_control_workers_permission(request)``).
    """
    return bool(request.user.has_perm(PERMISSION))


def _pickup_bound() -> str:
    return f"{history_settings().heartbeat_interval:g} s"


class ControlRequestAdmin(ReadOnlyAdmin):
    """The control requests, newest first: the audit log of restarts, pauses and resumes."""

    list_display = ("id", "requested_display", "action", "worker", "target_display", "requested_by")
    list_display_links = ("id", "requested_display")
    list_filter = ("action",)
    list_select_related = ("node",)
    search_fields = ("worker", "requested_by")
    search_help_text = _("Part of a worker name or of who asked.")
    ordering = ("-id",)
    sortable_by = ()
    fields = ("id", "action", "worker", "target_display", "requested_by", "requested_display")
    readonly_fields = fields

    has_control_workers_permission = has_control_workers_permission

    @admin.display(description=_("requested"))
    def requested_display(self, obj: ControlRequest) -> SafeString | str:
        """To the second, with the time zone (the database's clock)."""
        return exact_time(obj.requested_at)

    @admin.display(description=_("node"))
    def target_display(self, obj: ControlRequest) -> str:
        """``host:pid`` of the node, or "every node"."""
        return str(obj.node) if obj.node_id is not None else str(_("every node"))

    def get_urls(self) -> list[URLPattern]:
        """The POST endpoint ``admin:django_workers_control``, then the usual pages."""
        view = self.admin_site.admin_view(self.control_view)
        return [path("control/", view, name=CONTROL_URL_NAME), *super().get_urls()]

    def control_view(self, request: HttpRequest) -> HttpResponse:
        """Record the request posted (``action``, ``worker``, ``node``, ``next``), then redirect to ``next``.

        The outcome is a message: success (what was recorded and when it is applied), or error
        (what is wrong and how to fix it).
        """
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_control_workers_permission(request):
            raise PermissionDenied
        back = self._next_url(request)
        try:
            recorded = submit(
                request.POST.get("action", ""),
                request.POST.get("worker", ""),
                request.POST.get("node", "").strip() or None,
                user=request.user,
                using=history_database(),
            )
        except ControlError as exc:
            messages.error(request, str(exc))
        except DatabaseError as exc:
            messages.error(request, _database_problem(exc))
        else:
            messages.success(
                request,
                f"Recorded request #{recorded.pk}: {describe_request(recorded)}. Running runworkers processes "
                f"apply it within {_pickup_bound()}.",
            )
        return HttpResponseRedirect(back)

    def _next_url(self, request: HttpRequest) -> str:
        wanted = request.POST.get("next", "")
        if wanted and url_has_allowed_host_and_scheme(
            wanted, allowed_hosts={request.get_host()}, require_https=request.is_secure()
        ):
            return wanted
        site = self.admin_site.name
        for name in (f"{site}:django_workers_dashboard", f"{site}:django_workers_controlrequest_changelist"):
            try:
                return reverse(name)
            except NoReverseMatch:
                continue
        return reverse(f"{site}:index")


def _database_problem(exc: Exception) -> str:
    return f"The request was not recorded: {database_problem(exc)}."


# -- actions of the executions list ---------------------------------------------------------------


def _control_selected(action: str, modeladmin: Any, request: HttpRequest, queryset: QuerySet[Any]) -> None:
    """Record ``action`` for each distinct (worker, node) pair of the selected executions."""
    pairs = list(queryset.select_related(None).order_by().values_list("worker", "node_id").distinct())
    recorded: list[str] = []
    refused: dict[str, list[str]] = {}  # problem -> the workers it refused (a stale node refuses all of them)
    try:
        for worker, node_id in pairs:
            try:
                row = submit(action, worker, node_id, user=request.user, using=queryset.db)
            except ControlError as exc:
                refused.setdefault(str(exc), []).append(worker)
            else:
                recorded.append(describe_request(row))
    except DatabaseError as exc:
        refused.setdefault(_database_problem(exc), [])
    recorded.sort()  # by worker, then host:pid
    if recorded:
        modeladmin.message_user(
            request,
            f"Recorded {len(recorded)} request(s): {'; '.join(recorded)}. Running runworkers processes apply "
            f"them within {_pickup_bound()}.",
            messages.SUCCESS,
        )
    for problem, workers in refused.items():
        names = sorted(set(workers))
        which = f" for workers {', '.join(map(repr, names))}" if len(names) > 1 else ""
        modeladmin.message_user(request, f"Not recorded{which}: {problem}", messages.ERROR)


def _action(action: str, description: StrOrPromise) -> Callable[[Any, HttpRequest, QuerySet[Any]], None]:
    def control(modeladmin: Any, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        _control_selected(action, modeladmin, request, queryset)

    control.__name__ = f"{action}_workers"
    control.__qualname__ = control.__name__
    control.__doc__ = f"Ask to {action} the distinct (worker, node) pairs of the selected executions."
    return admin.action(permissions=["control_workers"], description=description)(control)


restart_workers = _action("restart", _("Restart the selected workers (on their nodes)"))
pause_workers = _action("pause", _("Pause the selected workers (on their nodes)"))
resume_workers = _action("resume", _("Resume the selected workers (on their nodes)"))

#: The actions for the executions list (``actions = EXECUTION_ACTIONS``, with the permission method).
EXECUTION_ACTIONS = (restart_workers, pause_workers, resume_workers)

admin.site.register(ControlRequest, ControlRequestAdmin)
