"""The list filters of the executions and nodes changelists: each runs at most one cheap query."""

from __future__ import annotations

import uuid
from typing import Any, Final, cast

from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.db.models import Field, Q, QuerySet
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _

from ..models import Node, NodeQuerySet
from .display import NODE_STATE_LABELS
from .history_settings import history_database, stale_after
from .paging import request_worker_names

#: The node filter lists this many most recently started nodes (plus the selected one).
NODE_CHOICES_LIMIT: Final = 50


def parse_uuid(term: str) -> uuid.UUID | None:
    """``term`` as a UUID (any spelling ``uuid.UUID`` accepts), or ``None`` when it is not one."""
    try:
        return uuid.UUID(term)
    except ValueError:
        return None


class WorkerListFilter(admin.SimpleListFilter):
    """By worker name; the choices come from :func:`distinct_worker_names` (an index, not the table)."""

    title = _("worker")
    parameter_name = "worker"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        """Every distinct worker name (up to :data:`WORKER_NAMES_LIMIT`)."""
        return [(name, name) for name in request_worker_names(request)]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        """Executions of the selected worker."""
        value = self.value()
        return queryset.filter(worker=value) if value else queryset


class RecentNodeListFilter(admin.RelatedFieldListFilter):
    """By node; lists the :data:`NODE_CHOICES_LIMIT` most recently started nodes (and the selected one).

    One query, whatever the number of nodes (Django's own filter would list every node).
    """

    def field_choices(self, field: Field[Any, Any], request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        """The latest nodes by start time (indexed), plus the selected node if it is older."""
        nodes = Node.objects.using(history_database())
        recent = nodes.order_by("-started_at").values("pk")[:NODE_CHOICES_LIMIT]
        selected = [value for value in (self.lookup_val or ()) if parse_uuid(value)]
        shown = nodes.filter(Q(pk__in=recent) | Q(pk__in=selected)).order_by("-started_at")
        return [(str(node.pk), str(node)) for node in shown]


class NodeStateFilter(admin.SimpleListFilter):
    """Alive, stale or stopped nodes (compared with the database clock)."""

    title = _("state")
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        """The three states."""
        return list(NODE_STATE_LABELS.items())

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        """Nodes in the selected state."""
        value = self.value()
        nodes = cast("NodeQuerySet[Any]", queryset)  # NodeAdmin's: from Node's default manager
        if value == "alive":
            return nodes.live(stale_after().total_seconds())
        if value == "stale":
            return nodes.stale(stale_after().total_seconds())
        if value == "stopped":
            return queryset.filter(stopped_at__isnull=False)
        if value is not None:
            raise IncorrectLookupParameters(f"unknown state {value!r}")
        return queryset
