"""The events of an execution (or a node), shown inline on its page, oldest first, one page at a time.

Events have no page of their own: whoever may view the parent row sees them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from django.contrib import admin
from django.contrib.auth import get_permission_codename
from django.db.models import Model, QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest, QueryDict
from django.utils.functional import cached_property
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _

from ..models import ExecutionEvent
from .display import level_badge
from .history_settings import history_database
from .paging import COUNT_LIMIT

#: Events shown per page on an execution's (or node's) page.
EVENTS_PAGE_SIZE: Final = 100
#: The query-string parameter that selects the page of events.
EVENTS_PAGE_VAR: Final = "events_page"


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
    #: Events counted exactly (at least up to the page asked for); past it the total is "N+".
    count_limit: ClassVar[int] = COUNT_LIMIT
    page_number: ClassVar[int] = 1
    query: ClassVar[QueryDict | None] = None

    @cached_property
    def events_page(self) -> EventsPage:
        """The requested page (the last one when the number is past the end)."""
        queryset = super().get_queryset()
        size = self.page_size
        number = self.page_number
        limit = max(self.count_limit, number * size)
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
