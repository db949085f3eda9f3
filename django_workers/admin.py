"""The Django admin of the execution history: read-only pages for executions and nodes.

Nobody can add, change or delete a row here, superusers included: the history is written by
the recorder only. Staff with the ``view`` permission of a model see its pages; the events of an
execution (or node) are shown inline to whoever may view the execution (or node).

The tables grow to millions of rows, so every page does a constant number of cheap queries:

- the changelists never ``COUNT(*)`` a whole table (:class:`LargeTablePaginator`), show no facet
  counts and no full result count, and are ordered by an indexed column (newest first);
- the worker filter lists distinct worker names with a loose index scan
  (:func:`distinct_worker_names`), the node filter the most recently started nodes;
- a search term that is a UUID looks up the primary key; any other term is matched against the
  distinct worker names and filters with ``worker IN (...)``, which uses an index;
- the events of an execution are paginated (:data:`EVENTS_PAGE_SIZE` per page, oldest first).

Everything a worker produced (worker names, errors, tracebacks, event messages) is escaped:
HTML is built with ``format_html`` and templates with autoescaping, never ``mark_safe``.
See ``docs/admin.md``.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar, Final

from django.conf import settings
from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.auth import get_permission_codename
from django.core.paginator import Page, Paginator
from django.db import connections
from django.db.models import DurationField, Field, Model, Q, QuerySet, Value
from django.db.models.functions import Now
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest, QueryDict
from django.urls import reverse
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _

from .models import Execution, ExecutionEvent, ExecutionStatus, Node

__all__ = [
    "EVENTS_PAGE_SIZE",
    "EventsPage",
    "ExecutionAdmin",
    "LargeTablePaginator",
    "NodeAdmin",
    "distinct_worker_names",
    "history_database",
    "stale_after",
]

#: Rows a changelist or an events page counts exactly; past that the count is estimated or bounded.
COUNT_LIMIT: Final = 10_000
#: Events shown per page on an execution's (or node's) page.
EVENTS_PAGE_SIZE: Final = 100
#: The query-string parameter that selects the page of events.
EVENTS_PAGE_VAR: Final = "events_page"
#: At most this many distinct worker names are listed by the worker filter and matched by search.
WORKER_NAMES_LIMIT: Final = 1_000
#: The node filter lists this many most recently started nodes (plus the selected one).
NODE_CHOICES_LIMIT: Final = 50
#: ``WORKERS["HISTORY"]["HEARTBEAT_INTERVAL"]`` when it is not set (seconds).
DEFAULT_HEARTBEAT_INTERVAL: Final = 10.0
#: A running node is stale after this many heartbeat intervals without a heartbeat.
STALE_AFTER_HEARTBEATS: Final = 3

_WORKER_NAMES_ATTR: Final = "_django_workers_worker_names"

#: CSS modifiers of the status badges (``static/django_workers/admin.css``); anything else is "unknown".
_STATUS_CLASSES: Final = frozenset(ExecutionStatus.values)
_LEVEL_CLASSES: Final = frozenset({"debug", "info", "warning", "error", "critical"})

# -- settings --------------------------------------------------------------------------------------


def _history_settings() -> Mapping[str, Any]:
    """``settings.WORKERS["HISTORY"]`` as given (validated by the system checks, read per call)."""
    workers = getattr(settings, "WORKERS", None)
    history = workers.get("HISTORY") if isinstance(workers, Mapping) else None
    return history if isinstance(history, Mapping) else {}


def history_database() -> str:
    """The database alias the history is stored in (``WORKERS["HISTORY"]["DATABASE"]``)."""
    alias = _history_settings().get("DATABASE", "default")
    return alias if isinstance(alias, str) and alias in settings.DATABASES else "default"


def _seconds(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        return None
    return float(value)


def stale_after() -> timedelta:
    """How long a running node may go without a heartbeat before it is shown as stale.

    The recorder's orphan grace: ``WORKERS["HISTORY"]["ORPHAN_GRACE"]`` when set, else three
    ``HEARTBEAT_INTERVAL`` (10 s by default). Past it, the recorder closes the node's executions.
    """
    history = _history_settings()
    grace = _seconds(history.get("ORPHAN_GRACE"))
    if grace is not None:
        return timedelta(seconds=grace)
    interval = _seconds(history.get("HEARTBEAT_INTERVAL")) or DEFAULT_HEARTBEAT_INTERVAL
    return timedelta(seconds=STALE_AFTER_HEARTBEATS * interval)


# -- cheap queries for large tables ----------------------------------------------------------------


class LargeTablePaginator(Paginator):  # type: ignore[type-arg]
    """A paginator that never counts more than :data:`COUNT_LIMIT` rows, in one query, and pages by key.

    Up to the limit the count is exact. Past it, an unfiltered list on PostgreSQL uses the
    planner's row estimate of the table (``pg_class.reltuples``, fetched by the same query) and
    sets :attr:`count_is_estimate`; anything else reports the limit and sets
    :attr:`count_is_lower_bound` (the pages past it are not offered: filter to narrow the list).
    """

    count_limit: ClassVar[int] = COUNT_LIMIT
    count_is_estimate: bool = False
    count_is_lower_bound: bool = False

    @cached_property
    def count(self) -> int:
        """The number of rows: exact up to the limit, else estimated or bounded (see the class)."""
        queryset = self.object_list
        if not isinstance(queryset, QuerySet):
            return len(queryset)
        limit = self.count_limit
        bounded = queryset.order_by().values("pk")[: limit + 1]
        connection = connections[queryset.db]
        estimate: float | None = None
        if connection.vendor == "postgresql" and not queryset.query.where:
            sql, params = bounded.query.get_compiler(using=queryset.db).as_sql()
            with connection.cursor() as cursor:
                cursor.execute(
                    f"SELECT (SELECT COUNT(*) FROM ({sql}) AS bounded),"
                    " (SELECT reltuples FROM pg_class WHERE oid = to_regclass(%s))",
                    (*params, connection.ops.quote_name(queryset.model._meta.db_table)),
                )
                row = cursor.fetchone()
            counted, estimate = int(row[0]), row[1]
        else:
            counted = bounded.count()
        if counted <= limit:
            return counted
        if estimate is not None and estimate > limit:
            self.count_is_estimate = True
            return int(estimate)
        self.count_is_lower_bound = True
        return limit

    def page(self, number: Any) -> Any:
        """One page, fetched as ``pk IN (the page's keys, ordered and sliced)`` (a deferred join).

        The subquery reads only the ordering columns and the key, so PostgreSQL can answer it
        with an index-only scan of an index that holds all of them (such as the executions'
        ``(node, -created_at, -id)``), where ``SELECT *`` ordered and limited may walk another
        index and filter out every other row. One query, as before.
        """
        number = self.validate_number(number)
        bottom = (number - 1) * self.per_page
        top = bottom + self.per_page
        if top + self.orphans >= self.count:
            top = self.count
        queryset = self.object_list
        if isinstance(queryset, QuerySet) and not queryset.query.distinct:
            keys = queryset.values("pk")[bottom:top]
            return Page(queryset.filter(pk__in=keys), number, self)
        return Page(queryset[bottom:top], number, self)


def distinct_worker_names(using: str = "default", limit: int = WORKER_NAMES_LIMIT) -> list[str]:
    """The distinct worker names of the executions, sorted, at most ``limit`` of them.

    A loose index scan (a recursive query that jumps from one name to the next through the
    ``(worker, created_at)`` index): one index probe per distinct name, however many executions
    there are, where ``SELECT DISTINCT worker`` would read every row.
    """
    connection = connections[using]
    quote = connection.ops.quote_name
    table = quote(Execution._meta.db_table)
    column = quote(Execution._meta.get_field("worker").column or "worker")
    sql = (
        f"WITH RECURSIVE names (name, n) AS ("
        f" SELECT (SELECT {column} FROM {table} ORDER BY {column} LIMIT 1), 1"
        f" UNION ALL"
        f" SELECT (SELECT {column} FROM {table} WHERE {column} > names.name ORDER BY {column} LIMIT 1), n + 1"
        f" FROM names WHERE names.name IS NOT NULL AND n < %s"
        f") SELECT name FROM names WHERE name IS NOT NULL"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, (limit,))
        return [row[0] for row in cursor.fetchall()]


def _worker_names(request: HttpRequest) -> list[str]:
    """:func:`distinct_worker_names`, queried once per request (the filter and the search share it)."""
    names: list[str] | None = getattr(request, _WORKER_NAMES_ATTR, None)
    if names is None:
        names = distinct_worker_names(history_database())
        setattr(request, _WORKER_NAMES_ATTR, names)
    return names


def _parse_uuid(term: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(term)
    except ValueError:
        return None


# -- formatting ------------------------------------------------------------------------------------


def human_duration(seconds: float | None) -> str:
    """``0.35`` → ``"350 ms"``, ``75`` → ``"1 min 15 s"``, ``90061`` → ``"1 d 1 h"``; ``None`` → ``"-"``."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    minutes, secs = divmod(whole, 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {secs} s"


def _badge(kind: str, modifier: str, label: object) -> SafeString:
    return format_html('<span class="dw-badge dw-{}-{}">{}</span>', kind, modifier, label)


def status_badge(status: str) -> SafeString:
    """A coloured badge for an execution status (an unexpected value is shown as-is, escaped)."""
    if status in _STATUS_CLASSES:
        return _badge("status", status, ExecutionStatus(status).label)
    return _badge("status", ExecutionStatus.UNKNOWN.value, status)


def level_badge(level: str) -> SafeString:
    """A coloured badge for an event level."""
    modifier = level.lower() if level.lower() in _LEVEL_CLASSES else "other"
    return _badge("level", modifier, level)


def attempt_label(execution: Execution) -> str:
    """``"2/3"``, or ``"2/unlimited"`` when ``max_attempts`` is 0."""
    return f"{execution.attempt}/{execution.max_attempts or _('unlimited')}"


def node_state(node: Node) -> str:
    """``"stopped"``, ``"stale"`` (no heartbeat for :func:`stale_after`) or ``"alive"``.

    Compares the heartbeat, written with the database clock, with the database clock read by the
    same query (``db_now``, annotated by :class:`NodeAdmin`), so a skewed web host cannot misjudge.
    """
    if node.stopped_at is not None:
        return "stopped"
    now: datetime = getattr(node, "db_now", None) or timezone.now()
    return "stale" if now - node.last_heartbeat > stale_after() else "alive"


_NODE_STATE_LABELS: Final = {"alive": _("alive"), "stale": _("stale"), "stopped": _("stopped")}

# -- list filters ----------------------------------------------------------------------------------


class WorkerListFilter(admin.SimpleListFilter):
    """By worker name; the choices come from :func:`distinct_worker_names` (an index, not the table)."""

    title = _("worker")
    parameter_name = "worker"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        """Every distinct worker name (up to :data:`WORKER_NAMES_LIMIT`)."""
        return [(name, name) for name in _worker_names(request)]

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
        selected = [value for value in (self.lookup_val or ()) if _parse_uuid(value)]
        shown = nodes.filter(Q(pk__in=recent) | Q(pk__in=selected)).order_by("-started_at")
        return [(str(node.pk), str(node)) for node in shown]


class NodeStateFilter(admin.SimpleListFilter):
    """Alive, stale or stopped nodes (compared with the database clock)."""

    title = _("state")
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        """The three states."""
        return list(_NODE_STATE_LABELS.items())

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        """Nodes in the selected state."""
        value = self.value()
        cutoff = Now() - Value(stale_after(), output_field=DurationField())
        if value == "alive":
            return queryset.filter(stopped_at__isnull=True, last_heartbeat__gte=cutoff)
        if value == "stale":
            return queryset.filter(stopped_at__isnull=True, last_heartbeat__lt=cutoff)
        if value == "stopped":
            return queryset.filter(stopped_at__isnull=False)
        if value is not None:
            raise IncorrectLookupParameters(f"unknown state {value!r}")
        return queryset


# -- events, inline and paginated ------------------------------------------------------------------


@dataclass(frozen=True)
class EventsPage:
    """What the events template shows: one page of events and links to its neighbours."""

    events: Sequence[ExecutionEvent]
    number: int
    first_index: int
    last_index: int
    #: Exact, unless :attr:`total_is_lower_bound` (then "more than").
    total: int
    total_is_lower_bound: bool
    first_url: str | None
    previous_url: str | None
    next_url: str | None
    last_url: str | None

    @property
    def rows(self) -> list[tuple[ExecutionEvent, SafeString]]:
        """Each event with its level badge."""
        return [(event, level_badge(event.level)) for event in self.events]


class EventsFormSet(BaseInlineFormSet):  # type: ignore[type-arg]
    """The inline formset of events, limited to one page of :data:`EVENTS_PAGE_SIZE` events.

    :meth:`ExecutionEventsInline.get_formset` sets the page number and the query string (for the
    links to the other pages). Two queries: a bounded count and the page itself.
    """

    page_size: ClassVar[int] = EVENTS_PAGE_SIZE
    page_number: ClassVar[int] = 1
    query: ClassVar[QueryDict | None] = None

    @cached_property
    def events_page(self) -> EventsPage:
        """The requested page (the last one when the number is past the end)."""
        queryset = super().get_queryset()
        size = self.page_size
        number = self.page_number
        limit = max(COUNT_LIMIT, number * size)
        counted = queryset.order_by()[: limit + 1].count()
        lower_bound = counted > limit
        total = limit if lower_bound else counted
        last = max(1, math.ceil(total / size))
        if not lower_bound:
            number = min(number, last)
        offset = (number - 1) * size
        events = list(queryset[offset : offset + size])
        has_next = lower_bound or offset + size < total
        return EventsPage(
            events=events,
            number=number,
            first_index=offset + 1 if events else 0,
            last_index=offset + len(events),
            total=total,
            total_is_lower_bound=lower_bound,
            first_url=self._page_url(1) if number > 1 else None,
            previous_url=self._page_url(number - 1) if number > 1 else None,
            next_url=self._page_url(number + 1) if has_next else None,
            last_url=self._page_url(last) if number < last and not lower_bound else None,
        )

    def _page_url(self, number: int) -> str:
        query = self.query.copy() if self.query is not None else QueryDict(mutable=True)
        query[EVENTS_PAGE_VAR] = str(number)
        return f"?{query.urlencode()}"

    def get_queryset(self) -> Any:
        """The events of the page (a list): what the admin builds its read-only forms from."""
        return self.events_page.events


class _EventsInline(admin.TabularInline):  # type: ignore[type-arg]
    """Events, oldest first, read-only, paginated; visible to whoever may view the parent row."""

    model = ExecutionEvent
    template = "admin/django_workers/events_inline.html"
    formset = EventsFormSet
    fields = ("timestamp", "level", "message")
    readonly_fields = ("timestamp", "level", "message")
    extra = 0
    max_num = 0
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        """Never: the history is written by the recorder only."""
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        """Never."""
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        """Never."""
        return False

    def has_view_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        """The events are part of the parent row: the parent's view (or change) permission."""
        opts = self.parent_model._meta
        return any(
            request.user.has_perm(f"{opts.app_label}.{get_permission_codename(action, opts)}")
            for action in ("view", "change")
        )

    def get_queryset(self, request: HttpRequest) -> QuerySet[ExecutionEvent]:
        """Oldest first, from the history database."""
        return super().get_queryset(request).using(history_database()).order_by("timestamp", "id")

    def get_formset(self, request: HttpRequest, obj: Any = None, **kwargs: Any) -> Any:
        """The formset class, bound to the page that the query string asks for."""
        formset = super().get_formset(request, obj, **kwargs)
        try:
            number = max(1, int(request.GET.get(EVENTS_PAGE_VAR, "1")))
        except ValueError:
            number = 1
        return type(formset.__name__, (formset,), {"page_number": number, "query": request.GET.copy()})


class ExecutionEventsInline(_EventsInline):
    """The events of one execution."""

    fk_name = "execution"


class NodeEventsInline(_EventsInline):
    """The node-level events of one node (not tied to an execution, e.g. dropped-events markers)."""

    fk_name = "node"
    verbose_name = _("node event")
    verbose_name_plural = _("node events")

    def get_queryset(self, request: HttpRequest) -> QuerySet[ExecutionEvent]:
        """Only the events without an execution."""
        return super().get_queryset(request).filter(execution__isnull=True)


# -- model admins ----------------------------------------------------------------------------------


class _ReadOnlyAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """No add, change or delete for anyone; large-table settings; reads the history database."""

    actions = None
    view_on_site = False
    paginator = LargeTablePaginator
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


@admin.register(Execution)
class ExecutionAdmin(_ReadOnlyAdmin):
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
        if len(words) == 1 and (execution_id := _parse_uuid(words[0])) is not None:
            return queryset.filter(pk=execution_id), False
        folded = [word.casefold() for word in words]
        names = [name for name in _worker_names(request) if all(word in name.casefold() for word in folded)]
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


@admin.register(Node)
class NodeAdmin(_ReadOnlyAdmin):
    """Nodes (``runworkers`` processes), latest first, with their heartbeat state."""

    list_display = (
        "hostname",
        "pid",
        "started_at",
        "last_heartbeat",
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
        "started_at",
        "last_heartbeat",
        "stopped_at",
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
        state = node_state(obj)
        return _badge("node", state, _NODE_STATE_LABELS[state])

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
        """The workers this process ran, one per line."""
        workers = obj.workers if isinstance(obj.workers, list) else [obj.workers]
        if not workers:
            return "-"
        names = ((worker.get("name", worker) if isinstance(worker, dict) else worker,) for worker in workers if worker)
        return format_html('<ul class="dw-workers">{}</ul>', format_html_join("", "<li>{}</li>", names))
