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

The overview page (``admin:django_workers_dashboard``, :mod:`~django_workers.admin.dashboard`)
reads the workers' states and tallies, never the executions table (``overview`` reads,
``timeline`` draws the day of each worker).

The modules: ``executions`` and ``nodes`` (the two ModelAdmins, on the read-only base of
``readonly``), ``events`` (the inline, paginated events), ``filters`` (the list filters),
``display`` (badges and labels), ``paging`` (the paginator and the cheap large-table queries) and
``history_settings`` (the two history settings the pages read). This module registers the
ModelAdmins with ``admin.site`` (Django's autodiscovery imports it).
"""

from __future__ import annotations

from django.contrib import admin

from ..models import Execution, Node, WorkerOverview
from .control import ControlRequestAdmin  # registers itself, with the control endpoint
from .dashboard import OverviewAdmin
from .display import human_duration
from .events import EVENTS_PAGE_SIZE, EventsFormSet, EventsPage
from .executions import ExecutionAdmin
from .filters import NODE_CHOICES_LIMIT
from .history_settings import history_database, stale_after
from .nodes import NodeAdmin
from .paging import COUNT_LIMIT, LargeTablePaginator, distinct_worker_names

__all__ = [
    "COUNT_LIMIT",
    "EVENTS_PAGE_SIZE",
    "NODE_CHOICES_LIMIT",
    "ControlRequestAdmin",
    "EventsFormSet",
    "EventsPage",
    "ExecutionAdmin",
    "LargeTablePaginator",
    "NodeAdmin",
    "OverviewAdmin",
    "distinct_worker_names",
    "history_database",
    "human_duration",
    "stale_after",
]

admin.site.register(Execution, ExecutionAdmin)
admin.site.register(Node, NodeAdmin)
admin.site.register(WorkerOverview, OverviewAdmin)
