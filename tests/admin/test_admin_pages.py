"""The read-only admin of the execution history, through Django's test client (SQLite and PostgreSQL)."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.db import connection
from django.test import Client, override_settings
from django.urls import reverse
from django.utils import timezone

import django_workers
from django_workers import admin as workers_admin
from django_workers.admin import display
from django_workers.history.nodes import close_orphans
from django_workers.models import Execution, ExecutionStatus, Node
from tests.admin.conftest import XSS, XSS_ESCAPED

pytestmark = pytest.mark.django_db

EXECUTIONS = reverse("admin:django_workers_execution_changelist")
NODES = reverse("admin:django_workers_node_changelist")


def execution_url(execution: Execution, action: str = "change") -> str:
    return reverse(f"admin:django_workers_execution_{action}", args=[execution.pk])


def node_url(node: Node, action: str = "change") -> str:
    return reverse(f"admin:django_workers_node_{action}", args=[node.pk])


def html(response) -> str:
    assert response.status_code == 200, response.status_code
    return response.content.decode()


def span(first: int, last: int, total: str) -> str:
    """The summary line of a page of events: first, an en dash, last, "of", total."""
    return f"{first}\u2013{last} of {total}"


def sidebar(page: str) -> str:
    """The filters of a changelist (a <nav> up to Django 5.2, a <search> since 6.0)."""
    start = page.index('id="changelist-filter"')
    end = page.find('id="result_list"', start)
    return page[start : end if end != -1 else None]


def listed_workers(page: str) -> list[str]:
    """The worker column of a changelist, top to bottom."""
    return re.findall(r'<th class="field-worker"><a href="[^"]*">([^<]*)</a></th>', page)


# -- permissions -----------------------------------------------------------------------------------


def test_staff_with_view_permission_sees_every_page(viewer_client, make_node, make_execution, make_events):
    node = make_node()
    execution = make_execution(node)
    make_events(execution, 3)
    index = html(viewer_client.get(reverse("admin:index")))
    assert EXECUTIONS in index and NODES in index
    assert "alpha" in html(viewer_client.get(EXECUTIONS))
    assert "host-a" in html(viewer_client.get(NODES))
    detail = html(viewer_client.get(execution_url(execution)))
    assert "event 2" in detail, "the events are shown with the execution's view permission alone"
    assert "host-a" in html(viewer_client.get(node_url(node)))


def test_staff_without_view_permission_sees_nothing(staff_without_permission_client, make_node, make_execution):
    node = make_node()
    execution = make_execution(node)
    client = staff_without_permission_client
    for url in (EXECUTIONS, NODES, execution_url(execution), node_url(node)):
        assert client.get(url).status_code == 403, url
    assert EXECUTIONS not in client.get(reverse("admin:index")).content.decode()


def test_anonymous_is_sent_to_the_login_page(client: Client, db):
    response = client.get(EXECUTIONS)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


@pytest.mark.parametrize("who", ["viewer_client", "superuser_client"])
def test_nobody_can_add_change_or_delete(request, who, make_node, make_execution):
    client: Client = request.getfixturevalue(who)
    node = make_node()
    execution = make_execution(node)
    for model, obj in (("execution", execution), ("node", node)):
        assert client.get(reverse(f"admin:django_workers_{model}_add")).status_code == 403
        assert client.post(reverse(f"admin:django_workers_{model}_add"), {}).status_code == 403
        assert client.get(reverse(f"admin:django_workers_{model}_delete", args=[obj.pk])).status_code == 403
        assert (
            client.post(reverse(f"admin:django_workers_{model}_delete", args=[obj.pk]), {"post": "yes"}).status_code
            == 403
        )
        assert client.post(reverse(f"admin:django_workers_{model}_change", args=[obj.pk]), {}).status_code == 403
        add_url = reverse(f"admin:django_workers_{model}_add")
        changelist = html(client.get(reverse(f"admin:django_workers_{model}_changelist")))
        assert add_url not in changelist, "no add button (nor link in the navigation sidebar)"
        assert 'value="delete_selected"' not in changelist, "no delete action"
        # The only actions: the control ones, on executions, for whoever may control workers.
        controls = model == "execution" and who == "superuser_client"
        assert ('name="action"' in changelist) is controls
        if controls:
            offered = set(
                re.findall(r'<option value="(\w+)"', changelist.split('name="action"', 1)[1].split("</select>")[0])
            )
            assert offered == {"restart_workers", "pause_workers", "resume_workers"}
        detail = html(client.get(reverse(f"admin:django_workers_{model}_change", args=[obj.pk])))
        assert "deletelink" not in detail
        assert 'name="_save"' not in detail and 'name="_continue"' not in detail
        assert "closelink" in detail
    assert Execution.objects.filter(pk=execution.pk).exists() and Node.objects.filter(pk=node.pk).exists()
    # The app index lists the models as viewable only.
    app_index = html(client.get(reverse("admin:app_list", args=["django_workers"])))
    assert "/add/" not in app_index


# -- executions changelist -------------------------------------------------------------------------


def cell(page: str, column: str) -> list[str]:
    """The inner HTML of a changelist's column, top to bottom."""
    return re.findall(rf'<td class="field-{column}[^"]*">(.*?)</td>', page, re.DOTALL)


def test_changelist_columns(viewer_client, make_node, make_execution):
    node = make_node(hostname="worker-host-1", pid=4242)
    other = make_node(hostname="worker-host-1", pid=77)
    make_execution(
        node,
        worker="alpha",
        attempt=2,
        max_attempts=3,
        status=ExecutionStatus.ERROR,
        duration=75.0,
        error="ValueError: boom",
    )
    make_execution(other, worker="beta", attempt=4, max_attempts=0, status=ExecutionStatus.RUNNING, duration=None)
    make_execution(node, worker="gamma", status=ExecutionStatus.SUCCESS, duration=0.25)
    page = html(viewer_client.get(EXECUTIONS))
    assert '<span class="dw-badge dw-status-error">error</span>' in page
    assert '<span class="dw-badge dw-status-running">running</span>' in page
    assert '<span class="dw-badge dw-status-success">success</span>' in page
    assert ">2/3<" in page and ">4/unlimited<" in page
    # host:pid tells two processes of one host apart.
    assert cell(page, "node_display") == ["worker-host-1:4242", "worker-host-1:77", "worker-host-1:4242"]
    assert ">1 min 15 s<" in page and ">250 ms<" in page
    assert cell(page, "error_display") == [
        '<span class="dw-error" title="ValueError: boom">ValueError: boom</span>',
        "-",
        "-",
    ]
    headers = re.findall(r'<th scope="col" class="column-(\w+)', page)
    assert headers == [
        "worker",
        "status_display",
        "attempt_display",
        "node_display",
        "started_display",
        "duration_display",
        "error_display",
    ]
    assert "<span>Host:pid</span>" in page
    for started in cell(page, "started_display"):
        assert re.fullmatch(
            r'<time class="dw-time" datetime="[^"]+">\d{4}-\d\d-\d\d <span>\d\d:\d\d:\d\d UTC</span></time>', started
        ), started
    assert listed_workers(page) == ["alpha", "beta", "gamma"], "newest first"
    assert "django_workers/admin.css" in page
    # Large-table settings: no full count, no facets, columns not sortable (only the indexed order).
    assert "total)" not in page
    assert "_facets" not in page
    assert "sortable" not in page


def test_error_column_shows_the_first_line_cut_with_the_whole_text_in_its_title(
    viewer_client, make_node, make_execution
):
    node = make_node()
    long_line = "OperationalError: " + "connection refused " * 10
    make_execution(node, worker="long", status=ExecutionStatus.ERROR, error=long_line)
    make_execution(node, worker="lines", status=ExecutionStatus.ERROR, error="KeyError: 'id'\nduring handling: more")
    make_execution(node, worker="script", status=ExecutionStatus.ERROR, error=f'Exception: {XSS} "quoted"\nline 2')
    make_execution(node, worker="fine", status=ExecutionStatus.SUCCESS, error="")
    page = html(viewer_client.get(EXECUTIONS))
    assert listed_workers(page) == ["long", "lines", "script", "fine"]
    errors = dict(zip(listed_workers(page), cell(page, "error_display"), strict=True))
    cut = long_line[:119].rstrip() + "\u2026"
    assert errors["long"] == f'<span class="dw-error" title="{long_line.strip()}">{cut}</span>'
    assert len(cut) <= 120
    # A first line that fits still gets the ellipsis when lines follow: there is more to read.
    assert errors["lines"] == (
        '<span class="dw-error" title="KeyError: &#x27;id&#x27;\nduring handling: more">'
        "KeyError: &#x27;id&#x27;\u2026</span>"
    )
    # Escaped in the text and in the attribute (quotes included): nothing breaks out of the title.
    assert errors["script"] == (
        f'<span class="dw-error" title="Exception: {XSS_ESCAPED} &quot;quoted&quot;\nline 2">'
        f"Exception: {XSS_ESCAPED} &quot;quoted&quot;\u2026</span>"
    )
    assert errors["fine"] == "-"


@pytest.mark.parametrize(
    ("error", "shown"),
    [
        ("", "-"),
        ("   \n  ", "-"),
        ("ValueError: boom", "ValueError: boom"),
        ("\n\nValueError: boom\r\n", "ValueError: boom"),
        ("a" * 120, "a" * 120),
        ("a" * 121, "a" * 119 + "\u2026"),
        ("a" * 10 + "\r\nb", "a" * 10 + "\u2026"),
    ],
)
def test_error_summary(error, shown):
    summary = display.error_summary(error)
    if shown == "-":
        assert summary == "-"
    else:
        assert f">{shown}</span>" in summary
        assert len(shown) <= display.ERROR_SUMMARY_LENGTH


MOMENT = datetime(2026, 12, 3, 14, 5, 9, 123456, tzinfo=UTC)


@pytest.mark.parametrize(
    ("zone", "iso", "clock"),
    [
        ("UTC", "2026-12-03T14:05:09+00:00", "14:05:09 UTC"),
        ("Europe/Paris", "2026-12-03T15:05:09+01:00", "15:05:09 CET"),
        ("America/New_York", "2026-12-03T09:05:09-05:00", "09:05:09 EST"),
        # A zone without an abbreviation: its offset, as the time zone database names it.
        ("America/Sao_Paulo", "2026-12-03T11:05:09-03:00", "11:05:09 -03"),
    ],
)
def test_times_are_shown_to_the_second_in_the_active_time_zone(
    viewer_client, make_node, make_execution, zone, iso, clock
):
    node = make_node(started_at=MOMENT, last_heartbeat=MOMENT, stopped_at=MOMENT)
    execution = make_execution(
        node, created_at=MOMENT, started_at=MOMENT, finished_at=MOMENT + timedelta(seconds=61), duration=61.0
    )
    date = iso[:10]
    expected = f'<time class="dw-time" datetime="{iso}">{date} <span>{clock}</span></time>'
    with timezone.override(zone):
        listed = html(viewer_client.get(EXECUTIONS))
        detail = html(viewer_client.get(execution_url(execution)))
        nodes = html(viewer_client.get(NODES))
        node_page = html(viewer_client.get(node_url(node)))
    assert cell(listed, "started_display") == [expected]
    for field in ("created_display", "started_display"):
        assert re.search(rf'<div class="readonly">{re.escape(expected)}</div>', detail), field
    finished = expected.replace(":05:09", ":06:10")  # 61 s later (every zone here is whole hours off UTC)
    assert re.search(rf'<div class="readonly">{re.escape(finished)}</div>', detail)
    assert cell(nodes, "started_display") == [expected] and cell(nodes, "heartbeat_display") == [expected]
    assert node_page.count(expected) == 3, "started, last heartbeat, stopped"


def test_exact_time_of_nothing_and_of_a_naive_time():
    assert display.exact_time(None) == "-"
    naive = datetime(2026, 12, 3, 14, 5, 9)
    assert display.exact_time(naive) == (
        '<time class="dw-time" datetime="2026-12-03T14:05:09">2026-12-03 <span>14:05:09</span></time>'
    )


def test_host_pid_and_times_on_the_detail_page(viewer_client, make_node, make_execution, make_events):
    node = make_node(hostname="db-worker", pid=31337)
    execution = make_execution(node, created_at=MOMENT, started_at=MOMENT, finished_at=None, duration=None)
    make_events(execution, 1)
    page = html(viewer_client.get(execution_url(execution)))
    assert f'<a href="{node_url(node)}">db-worker:31337</a>' in page
    with timezone.override("UTC"):
        page = html(viewer_client.get(execution_url(execution)))
    expected = '<time class="dw-time" datetime="2026-12-03T14:05:09+00:00">2026-12-03 <span>14:05:09 UTC</span></time>'
    assert page.count(expected) == 2, "created and started"
    assert re.search(r'field-finished_display.*?<div class="readonly">-</div>', page, re.DOTALL), "not finished"
    # The events' times carry the zone too.
    assert re.search(r'<td class="field-timestamp nowrap">\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6} UTC</td>', page)


def test_lost_and_paused_are_filters_and_badges(viewer_client, make_node, make_execution):
    node = make_node()
    for status in ExecutionStatus:
        make_execution(node, worker=f"w-{status.value}", status=status)
    page = html(viewer_client.get(EXECUTIONS))
    filters = sidebar(page)
    for status in ExecutionStatus:
        assert f'href="?status__exact={status.value}"' in filters, status
        assert f'<span class="dw-badge dw-status-{status.value}">{status.label}</span>' in page, status
    for status in (ExecutionStatus.LOST, ExecutionStatus.PAUSED):
        page = html(viewer_client.get(EXECUTIONS, {"status__exact": status.value}))
        assert listed_workers(page) == [f"w-{status.value}"]
    # Not a status: no row, no error page.
    assert listed_workers(html(viewer_client.get(EXECUTIONS, {"status__exact": "bogus"}))) == []


def test_an_attempt_of_a_lost_node_is_listed_as_lost_with_the_reason(viewer_client, make_node, make_execution, now):
    lost = make_node(hostname="gone", pid=4242, last_heartbeat=now - timedelta(minutes=5))
    make_execution(lost, worker="relay", status=ExecutionStatus.RUNNING, finished_at=None, duration=None)
    assert close_orphans("default", now - timedelta(minutes=1)) == 1
    page = html(viewer_client.get(EXECUTIONS, {"status__exact": "lost"}))
    assert listed_workers(page) == ["relay"]
    assert '<span class="dw-badge dw-status-lost">lost</span>' in page
    assert cell(page, "node_display") == ["gone:4242"]
    assert "node gone:4242 was lost (no heartbeat since " in cell(page, "error_display")[0]
    assert listed_workers(html(viewer_client.get(EXECUTIONS, {"status__exact": "error"}))) == []


def test_every_status_has_its_own_badge_colour():
    """admin.css gives each stored status a background; lost is not error's red, paused not unknown's grey."""
    css = (Path(django_workers.__file__).parent / "static" / "django_workers" / "admin.css").read_text()
    css = re.sub(r"/\*.*?\*/", "", css, flags=re.DOTALL)
    colours: dict[str, str] = {}
    for selectors, colour in re.findall(r"([^{}]+)\{\s*background:\s*(#[0-9a-f]{6});\s*\}", css):
        for selector in selectors.split(","):
            if match := re.fullmatch(r"\s*\.dw-status-(\w+)\s*", selector):
                colours[match[1]] = colour
    assert set(colours) == set(ExecutionStatus.values)
    assert colours["lost"] not in (colours["error"], colours["unknown"])
    assert colours["paused"] not in (colours["unknown"], colours["running"], colours["error"])


@pytest.mark.parametrize("who", ["viewer_client", "superuser_client"])
def test_no_history_button_and_no_history_page(request, who, make_node, make_execution):
    client: Client = request.getfixturevalue(who)
    node = make_node()
    execution = make_execution(node)
    for model, obj in (("execution", execution), ("node", node)):
        history = reverse(f"admin:django_workers_{model}_history", args=[obj.pk])
        page = html(client.get(reverse(f"admin:django_workers_{model}_change", args=[obj.pk])))
        assert "historylink" not in page and history not in page, model
        assert 'class="object-tools"' not in page, model
        assert client.get(history).status_code == 403, model
    # The admin's redirect for a missing object does not reveal anything either.
    assert client.get(reverse("admin:django_workers_execution_history", args=[uuid.uuid4()])).status_code == 403


def test_filter_by_status(viewer_client, make_node, make_execution):
    node = make_node()
    make_execution(node, worker="ok", status=ExecutionStatus.SUCCESS)
    make_execution(node, worker="failed", status=ExecutionStatus.ERROR)
    page = html(viewer_client.get(EXECUTIONS, {"status__exact": "error"}))
    assert listed_workers(page) == ["failed"]


def test_filter_by_worker_lists_every_worker_name(viewer_client, make_node, make_execution):
    node = make_node()
    for worker in ("beta", "alpha", "alpha", "gamma", "beta"):
        make_execution(node, worker=worker)
    page = html(viewer_client.get(EXECUTIONS))
    for worker in ("alpha", "beta", "gamma"):
        assert f'href="?worker={worker}"' in page
    page = html(viewer_client.get(EXECUTIONS, {"worker": "beta"}))
    assert listed_workers(page) == ["beta", "beta"]


def test_distinct_worker_names_is_sorted_and_bounded(make_node, make_execution):
    node = make_node()
    for worker in ("delta", "alpha", "charlie", "alpha", "bravo", "delta"):
        make_execution(node, worker=worker)
    assert workers_admin.distinct_worker_names() == ["alpha", "bravo", "charlie", "delta"]
    assert workers_admin.distinct_worker_names(limit=2) == ["alpha", "bravo"]
    Execution.objects.all().delete()
    assert workers_admin.distinct_worker_names() == []


def test_filter_by_node(viewer_client, make_node, make_execution, now):
    first = make_node(hostname="host-a")
    second = make_node(hostname="host-b")
    make_execution(first, worker="on-a")
    make_execution(second, worker="on-b")
    page = html(viewer_client.get(EXECUTIONS))
    assert f"node__id__exact={first.pk}" in page and f"node__id__exact={second.pk}" in page
    page = html(viewer_client.get(EXECUTIONS, {"node__id__exact": str(second.pk)}))
    assert listed_workers(page) == ["on-b"]
    # Not a node id: Django's "invalid lookup" redirect, not a server error.
    response = viewer_client.get(EXECUTIONS, {"node__id__exact": "not-a-uuid"})
    assert response.status_code == 302 and "e=1" in response["Location"]


def test_node_filter_lists_recent_nodes_and_the_selected_one(viewer_client, make_node, make_execution, now):
    old = make_node(hostname="old-host", started_at=now - timedelta(days=30))
    make_execution(old, worker="old-worker")
    for i in range(workers_admin.NODE_CHOICES_LIMIT):
        make_node(hostname=f"recent-{i}", started_at=now - timedelta(minutes=i))
    filters = sidebar(html(viewer_client.get(EXECUTIONS)))
    assert "recent-0:" in filters and "old-host" not in filters
    page = html(viewer_client.get(EXECUTIONS, {"node__id__exact": str(old.pk)}))
    assert "old-host:" in sidebar(page), "the selected node is listed even when it is not recent"
    assert listed_workers(page) == ["old-worker"]


def test_filter_by_date(viewer_client, make_node, make_execution, now):
    node = make_node()
    make_execution(node, worker="recent", created_at=now - timedelta(hours=1))
    make_execution(node, worker="old", created_at=now - timedelta(days=40))
    page = html(viewer_client.get(EXECUTIONS))
    assert "created_at__gte" in page, "the date filter is offered"
    since = str(now - timedelta(days=7))
    until = str(now + timedelta(days=1))
    page = html(viewer_client.get(EXECUTIONS, {"created_at__gte": since, "created_at__lt": until}))
    assert listed_workers(page) == ["recent"]
    page = html(viewer_client.get(EXECUTIONS, {"created_at__lt": since}))
    assert listed_workers(page) == ["old"]


def test_search_by_worker_name(viewer_client, make_node, make_execution):
    node = make_node()
    for worker in ("billing.Sync", "billing.Export", "mail.Send"):
        make_execution(node, worker=worker)
    page = html(viewer_client.get(EXECUTIONS, {"q": "BILLING"}))
    assert sorted(listed_workers(page)) == ["billing.Export", "billing.Sync"]
    page = html(viewer_client.get(EXECUTIONS, {"q": "sync"}))
    assert listed_workers(page) == ["billing.Sync"]
    page = html(viewer_client.get(EXECUTIONS, {"q": "billing sync"}))
    assert listed_workers(page) == ["billing.Sync"], "every word must match"
    page = html(viewer_client.get(EXECUTIONS, {"q": "nothing-like-this"}))
    assert listed_workers(page) == []
    assert "0 executions" in page


def test_search_by_execution_id(viewer_client, make_node, make_execution):
    node = make_node()
    wanted = make_execution(node, worker="wanted")
    make_execution(node, worker="other")
    for term in (str(wanted.pk), wanted.pk.hex, f"  {str(wanted.pk).upper()}  "):
        page = html(viewer_client.get(EXECUTIONS, {"q": term}))
        assert listed_workers(page) == ["wanted"], term
    page = html(viewer_client.get(EXECUTIONS, {"q": str(uuid.uuid4())}))
    assert listed_workers(page) == []


def test_result_count_over_the_limit_is_a_lower_bound(viewer_client, make_node, make_execution, monkeypatch):
    monkeypatch.setattr(workers_admin.LargeTablePaginator, "count_limit", 3)
    node = make_node()
    for i in range(5):
        make_execution(node, worker=f"w{i}", status=ExecutionStatus.ERROR)
    # Filtered: the count stops at the limit and says so.
    page = html(viewer_client.get(EXECUTIONS, {"status__exact": "error"}))
    assert "more than 3 executions" in page
    page = html(viewer_client.get(EXECUTIONS, {"status__exact": "success"}))
    assert ">0 executions<" in page


def test_unfiltered_count_over_the_limit_is_estimated_on_postgresql(
    viewer_client, make_node, make_execution, monkeypatch
):
    if connection.vendor != "postgresql":
        pytest.skip("the estimate comes from PostgreSQL's pg_class.reltuples (SQLite counts up to the limit)")
    monkeypatch.setattr(workers_admin.LargeTablePaginator, "count_limit", 3)
    node = make_node()
    for i in range(8):
        make_execution(node, worker=f"w{i}")
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE django_workers_execution")
    page = html(viewer_client.get(EXECUTIONS))
    assert "about 8 executions" in page


# -- execution detail ------------------------------------------------------------------------------


def test_detail_shows_events_oldest_first_and_the_traceback_preformatted(
    viewer_client, make_node, make_execution, make_events, now
):
    execution = make_execution(
        make_node(),
        status=ExecutionStatus.ERROR,
        error="ValueError: boom",
        traceback='Traceback (most recent call last):\n  File "w.py", line 3, in run\nValueError: boom',
    )
    events = make_events(execution, 3, message="step {i}")
    # Inserted newest first: the page must still show them oldest first.
    events[0].timestamp = now + timedelta(seconds=10)
    events[0].message = "last step"
    events[0].save()
    page = html(viewer_client.get(execution_url(execution)))
    positions = [page.index(text) for text in ("step 1", "step 2", "last step")]
    assert positions == sorted(positions), "events are shown oldest first"
    traceback = (
        '<pre class="dw-traceback">Traceback (most recent call last):\n  File &quot;w.py&quot;, line 3, in run\n'
    )
    assert traceback + "ValueError: boom</pre>" in page
    assert "ValueError: boom" in page
    assert str(execution.pk) in page
    assert span(1, 3, "3") in page


def test_detail_of_an_execution_without_events_or_traceback(viewer_client, make_node, make_execution):
    execution = make_execution(
        make_node(), duration=None, started_at=None, finished_at=None, status=ExecutionStatus.DEFERRED
    )
    page = html(viewer_client.get(execution_url(execution)))
    assert "No events." in page
    assert "dw-traceback" not in page
    assert '<span class="dw-badge dw-status-deferred">deferred</span>' in page


def test_events_are_paginated(viewer_client, make_node, make_execution, make_events):
    execution = make_execution(make_node())
    make_events(execution, 250, message="event #{i:03d}")
    url = execution_url(execution)
    page = html(viewer_client.get(url))
    assert span(1, 100, "250") in page
    assert "event #000" in page and "event #099" in page and "event #100" not in page
    assert "?events_page=2" in page and "?events_page=3" in page
    page = html(viewer_client.get(url, {"events_page": "3"}))
    assert span(201, 250, "250") in page
    assert "event #200" in page and "event #249" in page and "event #199" not in page
    assert "?events_page=2" in page and "?events_page=4" not in page
    # Past the end: the last page; not a number: the first.
    assert span(201, 250, "250") in html(viewer_client.get(url, {"events_page": "99"}))
    assert span(1, 100, "250") in html(viewer_client.get(url, {"events_page": "x"}))


def test_events_count_over_the_limit_is_a_lower_bound(
    viewer_client, make_node, make_execution, make_events, monkeypatch
):
    monkeypatch.setattr(workers_admin.EventsFormSet, "count_limit", 150)
    execution = make_execution(make_node())
    make_events(execution, 250)
    page = html(viewer_client.get(execution_url(execution)))
    assert span(1, 100, "150+") in page
    page = html(viewer_client.get(execution_url(execution), {"events_page": "3"}))
    assert span(201, 250, "250") in page, "counted up to the page asked for"


# -- escaping --------------------------------------------------------------------------------------


def test_everything_a_worker_produced_is_escaped(viewer_client, make_node, make_execution, make_events):
    node = make_node(hostname=f"host{XSS}", workers=[XSS])
    execution = make_execution(
        node,
        worker=f"w{XSS}",
        status=ExecutionStatus.ERROR,
        error=f"Exception: {XSS}",
        traceback=f"Traceback\nException: {XSS}",
    )
    make_events(execution, 1, message=f"failed: {XSS}", level="<b>x</b>")
    make_events(None, 1, node=node, message=f"node: {XSS}")
    pages = {
        "executions": html(viewer_client.get(EXECUTIONS)),
        "search": html(viewer_client.get(EXECUTIONS, {"q": "script"})),
        "detail": html(viewer_client.get(execution_url(execution))),
        "nodes": html(viewer_client.get(NODES)),
        "node": html(viewer_client.get(node_url(node))),
    }
    for name, page in pages.items():
        assert "<script>alert" not in page, name
        assert XSS_ESCAPED in page, name
    detail = pages["detail"]
    assert f"Exception: {XSS_ESCAPED}" in detail
    assert f"failed: {XSS_ESCAPED}" in detail
    assert f'<pre class="dw-traceback">Traceback\nException: {XSS_ESCAPED}</pre>' in detail
    assert '<span class="dw-badge dw-level-other">&lt;b&gt;x&lt;/b&gt;</span>' in detail
    assert f"w{XSS_ESCAPED}" in pages["search"]
    assert f"node: {XSS_ESCAPED}" in pages["node"]


def test_unexpected_status_value_is_shown_escaped(viewer_client, make_node, make_execution):
    make_execution(make_node(), status='"><b>x</b>')
    page = html(viewer_client.get(EXECUTIONS))
    assert '<span class="dw-badge dw-status-unknown">&quot;&gt;&lt;b&gt;x&lt;/b&gt;</span>' in page


# -- nodes -----------------------------------------------------------------------------------------


def test_nodes_changelist_shows_alive_stale_and_stopped(viewer_client, make_node, now):
    make_node(hostname="alive-host", last_heartbeat=now)
    make_node(hostname="stale-host", last_heartbeat=now - timedelta(minutes=5))
    make_node(hostname="stopped-host", last_heartbeat=now - timedelta(minutes=5), stopped_at=now - timedelta(minutes=5))
    page = html(viewer_client.get(NODES))
    rows = {
        host: page[page.index(host) :].split("</tr>", 1)[0] for host in ("alive-host", "stale-host", "stopped-host")
    }
    assert "dw-node-alive" in rows["alive-host"]
    assert "dw-node-stale" in rows["stale-host"]
    assert "dw-node-stopped" in rows["stopped-host"]
    for state, host in (("alive", "alive-host"), ("stale", "stale-host"), ("stopped", "stopped-host")):
        page = html(viewer_client.get(NODES, {"state": state}))
        assert host in page, state
        assert {"alive-host", "stale-host", "stopped-host"} - {host} & set(re.findall(r"[a-z]+-host", page)) == set(), (
            state
        )
    assert viewer_client.get(NODES, {"state": "bogus"}).status_code == 302


def test_stale_grace_follows_the_heartbeat_interval(viewer_client, make_node, now):
    make_node(hostname="quiet-host", last_heartbeat=now - timedelta(seconds=40))
    assert workers_admin.stale_after() == timedelta(seconds=30)
    assert "dw-node-stale" in html(viewer_client.get(NODES))
    with override_settings(WORKERS={"HISTORY": {"HEARTBEAT_INTERVAL": 60}}):
        assert workers_admin.stale_after() == timedelta(seconds=180)
        assert "dw-node-alive" in html(viewer_client.get(NODES))
    with override_settings(WORKERS={"HISTORY": {"HEARTBEAT_INTERVAL": 5, "ORPHAN_GRACE": 20}}):
        assert workers_admin.stale_after() == timedelta(seconds=20)
        assert "dw-node-stale" in html(viewer_client.get(NODES))
    # An invalid section (a grace shorter than the heartbeat: check E003) counts as the defaults.
    with override_settings(WORKERS={"HISTORY": {"HEARTBEAT_INTERVAL": 60, "ORPHAN_GRACE": 20}}):
        assert workers_admin.stale_after() == timedelta(seconds=30)


def test_node_detail(viewer_client, make_node, make_execution, make_events):
    node = make_node(hostname="detail-host", workers=["alpha", {"name": "beta"}], dropped_events=7)
    execution = make_execution(node)
    make_events(execution, 1, message="an execution event")
    make_events(None, 1, node=node, message="recorder dropped 7 events")
    page = html(viewer_client.get(node_url(node)))
    assert "detail-host" in page and "dw-node-alive" in page
    assert '<div class="readonly"><ul class="dw-workers"><li>alpha</li><li>beta</li></ul></div>' in page
    assert "recorder dropped 7 events" in page
    assert "an execution event" not in page, "only node-level events are shown with the node"
    assert f"{EXECUTIONS}?node__id__exact={node.pk}" in page


# -- helpers ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "-"),
        (0.0004, "0 ms"),
        (0.25, "250 ms"),
        (1.0, "1.0 s"),
        (59.94, "59.9 s"),
        (75, "1 min 15 s"),
        (3600, "1 h 0 min"),
        (3 * 3600 + 125, "3 h 2 min"),
        (90061, "1 d 1 h"),
        (float("nan"), "-"),
    ],
)
def test_human_duration(seconds, text):
    assert workers_admin.human_duration(seconds) == text


def test_history_database_setting():
    assert workers_admin.history_database() == "default"
    with override_settings(WORKERS={"HISTORY": {"DATABASE": "missing"}}):
        assert workers_admin.history_database() == "default"
    with override_settings(WORKERS={"HISTORY": {"HEARTBEAT_INTERVAL": "soon"}}):
        assert workers_admin.stale_after() == timedelta(seconds=30)
