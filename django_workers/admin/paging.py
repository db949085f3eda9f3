"""Cheap queries for tables of millions of rows.

A paginator that never counts a whole table, and the distinct worker names read through an index
(the worker filter and the search use them).
"""

from __future__ import annotations

from typing import Any, ClassVar, Final

from django.core.paginator import Page, Paginator
from django.db import connections
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.functional import cached_property

from ..models import Execution
from .history_settings import history_database

#: Rows a changelist or an events page counts exactly; past that the count is estimated or bounded.
COUNT_LIMIT: Final = 10_000
#: At most this many distinct worker names are listed by the worker filter and matched by search.
WORKER_NAMES_LIMIT: Final = 1_000

_WORKER_NAMES_ATTR: Final = "_django_workers_worker_names"


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


def request_worker_names(request: HttpRequest) -> list[str]:
    """:func:`distinct_worker_names` of the history database, queried once per request.

    The worker filter and the search of the same changelist share it (one query, not two).
    """
    names: list[str] | None = getattr(request, _WORKER_NAMES_ATTR, None)
    if names is None:
        names = distinct_worker_names(history_database())
        setattr(request, _WORKER_NAMES_ATTR, names)
    return names
