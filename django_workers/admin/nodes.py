"""The nodes pages: the ``runworkers`` processes, latest first, with their heartbeat state.

Times are shown to the second in the active time zone, with the zone (a heartbeat to the minute says little).
A node's page lists its workers with, for a singleton, its role on the node and the fence it holds.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.db.models.functions import Now
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _

from ..models import Node, WorkerState
from .display import exact_time, node_state, node_state_badge, role_badge
from .events import NodeEventsInline
from .filters import NodeStateFilter
from .readonly import ReadOnlyAdmin


class NodeAdmin(ReadOnlyAdmin):
    """Nodes (``runworkers`` processes), latest first, with their heartbeat state."""

    list_display = (
        "hostname",
        "pid",
        "started_display",
        "heartbeat_display",
        "state_display",
        "version_display",
        "executions_link",
    )
    list_filter = (NodeStateFilter,)
    search_fields = ("^hostname",)
    search_help_text = _("The beginning of a host name.")
    ordering = ("-started_at",)
    sortable_by = ()
    fields = (
        "id",
        "hostname",
        "pid",
        "version",
        "state_display",
        "started_display",
        "heartbeat_display",
        "stopped_display",
        "workers_display",
        "dropped_events",
        "executions_link",
    )
    readonly_fields = fields
    inlines = (NodeEventsInline,)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        """With the database clock (``db_now``), which heartbeats are compared with."""
        queryset: QuerySet[Any] = super().get_queryset(request).annotate(db_now=Now())
        return queryset

    @admin.display(description=_("state"))
    def state_display(self, obj: Node) -> SafeString:
        """Alive, stale or stopped, as a coloured badge."""
        return node_state_badge(obj)

    @admin.display(description=_("started"))
    def started_display(self, obj: Node) -> SafeString | str:
        """To the second, with the time zone."""
        return exact_time(obj.started_at)

    @admin.display(description=_("last heartbeat"))
    def heartbeat_display(self, obj: Node) -> SafeString | str:
        """To the second, with the time zone (the database's clock)."""
        return exact_time(obj.last_heartbeat)

    @admin.display(description=_("stopped"))
    def stopped_display(self, obj: Node) -> SafeString | str:
        """To the second, with the time zone (``-`` while it runs)."""
        return exact_time(obj.stopped_at)

    @admin.display(description=_("version"))
    def version_display(self, obj: Node) -> str:
        """The django-worker-pool version the node ran."""
        return obj.version

    @admin.display(description=_("executions"))
    def executions_link(self, obj: Node) -> SafeString:
        """A link to the executions of this node."""
        url = reverse("admin:django_workers_execution_changelist", current_app=self.admin_site.name)
        return format_html('<a href="{}?node__id__exact={}">{}</a>', url, obj.pk, _("executions"))

    @admin.display(description=_("workers"))
    def workers_display(self, obj: Node) -> SafeString | str:
        """The workers this process ran, one per line, aligned with the other values (``admin.css``).

        A singleton's line adds its role on this node and the fence it holds (one query, for the
        node's singletons); not on a stopped node, which holds nothing now.
        """
        workers = obj.workers if isinstance(obj.workers, list) else [obj.workers]
        if not workers:
            return "-"
        names = [worker.get("name", worker) if isinstance(worker, dict) else worker for worker in workers if worker]
        roles: dict[str, tuple[str, int | None]] = {}
        if node_state(obj) != "stopped":
            singletons = WorkerState.objects.using(obj._state.db).filter(node_id=obj.pk).exclude(role="")
            roles = {worker: (role, fence) for worker, role, fence in singletons.values_list("worker", "role", "fence")}
        return format_html(
            '<ul class="dw-workers">{}</ul>',
            format_html_join("", "<li>{}{}</li>", ((name, _role(roles.get(name))) for name in names)),
        )


def _role(role: tuple[str, int | None] | None) -> SafeString | str:
    """`` <role badge> fence N`` after a singleton's name; ``""`` for another worker."""
    if role is None:
        return ""
    name, fence = role
    if fence is None:
        return format_html(" {}", role_badge(name))
    return format_html(
        ' {} <span class="dw-fence">{}</span>', role_badge(name), _("fence %(fence)s") % {"fence": fence}
    )
