"""The admin pages run a constant number of queries, whatever the number of rows (10 vs 200).

The executions list shows each row's node as ``host:pid`` and its error: half the rows are on
nodes of their own, so a query per row (a node read lazily) would show as a growing count.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from django_workers.models import Execution, ExecutionStatus, Node

pytestmark = pytest.mark.django_db

EXECUTIONS = reverse("admin:django_workers_execution_changelist")
NODES = reverse("admin:django_workers_node_changelist")
#: Session, user, the user's permissions (2), the page's own queries: a generous ceiling.
MAX_QUERIES = 10


def get_counted(client: Client, url: str, params: dict[str, str] | None = None) -> tuple[str, int, list[str]]:
    """The page, and the number of queries it ran (and their SQL)."""
    client.get(url, params or {})  # warm up Django's per-process caches (content types)
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url, params or {})
    assert response.status_code == 200, (url, params, response.status_code)
    return response.content.decode(), len(captured), [query["sql"] for query in captured.captured_queries]


def count_queries(client: Client, url: str, params: dict[str, str] | None = None) -> tuple[int, list[str]]:
    _, count, sql = get_counted(client, url, params)
    return count, sql


def grow_executions(make_node, make_execution, node: Node, total: int) -> None:
    workers = ("alpha", "beta", "gamma", "delta")
    statuses = (ExecutionStatus.SUCCESS, ExecutionStatus.ERROR, ExecutionStatus.RUNNING, ExecutionStatus.LOST)
    for i in range(Execution.objects.count(), total):
        status = statuses[i % 4]
        error = f"failure {i}\ntraceback line" if status in (ExecutionStatus.ERROR, ExecutionStatus.LOST) else ""
        make_execution(node if i % 2 else make_node(), worker=workers[i % 4], status=status, error=error)


CHANGELISTS: dict[str, Callable[[Node], dict[str, str]]] = {
    "unfiltered": lambda node: {},
    "status": lambda node: {"status__exact": "error"},
    "status lost": lambda node: {"status__exact": "lost"},
    "worker": lambda node: {"worker": "beta"},
    "node": lambda node: {"node__id__exact": str(node.pk)},
    "date": lambda node: {"created_at__gte": "2000-01-01 00:00:00+00:00"},
    "search name": lambda node: {"q": "alp"},
    "search id": lambda node: {"q": str(Execution.objects.filter(node=node).values_list("pk", flat=True).first())},
    "page 2": lambda node: {"p": "2"},
}


@pytest.mark.parametrize("variant", list(CHANGELISTS))
def test_execution_changelist_queries_do_not_grow_with_rows(viewer_client, make_node, make_execution, variant):
    node = make_node()
    grow_executions(make_node, make_execution, node, 10)
    params = CHANGELISTS[variant](node)
    if variant == "page 2":
        params = {}  # ten rows have no second page
    _, small, small_sql = get_counted(viewer_client, EXECUTIONS, params)
    grow_executions(make_node, make_execution, node, 200)
    params = CHANGELISTS[variant](node)
    page, large, large_sql = get_counted(viewer_client, EXECUTIONS, params)
    assert large <= MAX_QUERIES, large_sql
    assert small == large, "\n".join(["10 rows:", *small_sql, "200 rows:", *large_sql])
    # What was counted: rows with host:pid (nodes of their own among them) and errors.
    hosts = re.findall(r'<td class="field-node_display">host-a:(\d+)</td>', page)
    assert len(hosts) == len(re.findall(r'<th class="field-worker">', page)) > 0, variant
    if variant in ("unfiltered", "page 2", "date"):
        assert len(set(hosts)) > 10, "rows of many nodes"
        assert 'class="dw-error"' in page


def test_execution_detail_queries_do_not_grow_with_events(viewer_client, make_node, make_execution, make_events):
    execution = make_execution(make_node(), status=ExecutionStatus.ERROR, traceback="Traceback\nValueError")
    url = reverse("admin:django_workers_execution_change", args=[execution.pk])
    make_events(execution, 10)
    small, small_sql = count_queries(viewer_client, url)
    make_events(execution, 190)
    large, large_sql = count_queries(viewer_client, url)
    assert large <= MAX_QUERIES, large_sql
    assert small == large, "\n".join(["10 events:", *small_sql, "200 events:", *large_sql])
    assert count_queries(viewer_client, url, {"events_page": "2"})[0] == large


def test_node_pages_queries_do_not_grow_with_rows(viewer_client, make_node, make_execution, make_events):
    node = make_node()
    url = reverse("admin:django_workers_node_change", args=[node.pk])
    for _ in range(9):
        make_node()
    make_events(None, 10, node=node)
    small_list, _ = count_queries(viewer_client, NODES)
    small_detail, _ = count_queries(viewer_client, url)
    for _ in range(190):
        make_node()
    make_events(None, 190, node=node)
    make_events(make_execution(node), 50)
    assert small_list <= MAX_QUERIES and small_detail <= MAX_QUERIES
    assert count_queries(viewer_client, NODES)[0] == small_list
    assert count_queries(viewer_client, url)[0] == small_detail
    assert count_queries(viewer_client, NODES, {"state": "alive"})[0] == small_list
