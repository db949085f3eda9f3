"""The overview page (admin:django_workers_dashboard), through Django's test client (SQLite and PostgreSQL).

Rows are made with the ORM: nodes, the workers' states (WorkerState) and the tallies per period
(ExecutionTally), as the recorder would leave them.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from django_workers.admin.dashboard import refresh_seconds
from django_workers.admin.timeline import BUCKET_SECONDS, BUCKETS
from django_workers.history.tallies import period_start
from django_workers.models import Execution, ExecutionStatus, ExecutionTally, Node, WorkerState
from tests.admin.conftest import XSS, XSS_ESCAPED

pytestmark = pytest.mark.django_db

DASHBOARD = reverse("admin:django_workers_dashboard")
#: No worker configured: only what the history holds is listed (unless a test configures some).
NO_WORKERS = override_settings(WORKERS={"WORKERS": []})


@pytest.fixture(autouse=True)
def _no_configured_workers() -> Any:
    with NO_WORKERS:
        yield


def html(response: Any) -> str:
    assert response.status_code == 200, response.status_code
    return response.content.decode()


def make_state(node: Node, worker: str, **fields: Any) -> WorkerState:
    values: dict[str, Any] = {
        "status": ExecutionStatus.RUNNING,
        "attempt": 1,
        "max_attempts": 3,
        "since": timezone.now() - timedelta(minutes=5),
        "execution_id": uuid.uuid4(),
        "updated_at": timezone.now(),
    }
    values.update(fields)
    return WorkerState.objects.create(node=node, worker=worker, **values)


def make_tally(node: Node, worker: str, when: datetime, **counts: int) -> ExecutionTally:
    return ExecutionTally.objects.create(node=node, worker=worker, period_start=period_start(when), **counts)


def worker_order(page: str) -> list[str]:
    return re.findall(r'<section class="dw-worker[^"]*" data-worker="([^"]*)">', page)


def section(page: str, worker: str) -> str:
    start = page.index(f'data-worker="{worker}"')
    end = page.find("<section", start)
    return page[start : end if end != -1 else page.index('<h2 class="dw-section">', start)]


def _user(username: str, *codenames: str, staff: bool = True) -> Client:
    user = User.objects.create_user(username, password="pw", is_staff=staff)
    user.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="django_workers", codename__in=codenames)
    )
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def controller_client(db: None) -> Client:
    return _user("operator", "view_execution", "view_node", "control_workers")


# -- access ----------------------------------------------------------------------------------------------


def test_the_overview_is_linked_from_the_admin_index_and_the_app_index(viewer_client: Client) -> None:
    assert f'href="{DASHBOARD}"' in html(viewer_client.get(reverse("admin:index")))
    assert f'href="{DASHBOARD}"' in html(viewer_client.get(reverse("admin:app_list", args=["django_workers"])))
    assert DASHBOARD == reverse("admin:django_workers_workeroverview_changelist")


def test_view_only_staff_see_the_page_without_control_buttons(viewer_client: Client, make_node) -> None:
    make_state(make_node(), "alpha")
    page = html(viewer_client.get(DASHBOARD))
    assert 'data-worker="alpha"' in page
    assert "<form" not in page.split('id="content-main"', 1)[1]
    assert 'value="restart"' not in page


def test_staff_without_the_view_permission_get_403_and_no_link(make_node) -> None:
    client = _user("nobody", "view_node")
    assert client.get(DASHBOARD).status_code == 403
    assert DASHBOARD not in client.get(reverse("admin:index")).content.decode()


def test_anonymous_and_non_staff_users_are_sent_to_the_login_page(client: Client) -> None:
    for visitor in (client, _user("customer", "view_execution", staff=False)):
        response = visitor.get(DASHBOARD)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("admin:login"))


def test_operators_get_csrf_protected_control_forms(controller_client: Client, make_node) -> None:
    node = make_node()
    make_state(node, "alpha")
    make_state(node, "beta", status=ExecutionStatus.PAUSED, paused=True)
    page = html(controller_client.get(DASHBOARD + "?refresh=30"))
    control = reverse("admin:django_workers_control")
    forms = re.findall(r'<form method="post" action="([^"]*)" class="dw-control[^"]*">(.*?)</form>', page, re.S)
    assert len(forms) == 4, "one per worker for every node, one per worker and node"
    for action, body in forms:
        assert action == control
        assert 'name="csrfmiddlewaretoken"' in body
        assert f'name="next" value="{DASHBOARD}?refresh=30"' in body
    alpha = section(page, "alpha")
    assert alpha.count('name="node" value=""') == 1
    assert alpha.count(f'name="node" value="{node.pk}"') == 1
    assert 'value="pause"' in alpha and 'value="restart"' in alpha
    beta = section(page, "beta")
    per_node = beta.split(f'name="node" value="{node.pk}"', 1)[1]
    assert 'value="resume"' in per_node and 'value="pause"' not in per_node, "a paused worker offers resume"


# -- what it shows -----------------------------------------------------------------------------------------


def test_a_row_shows_status_attempt_since_error_and_counts(viewer_client: Client, make_node, now) -> None:
    node = make_node(hostname="worker-7", pid=4242)
    failed = uuid.uuid4()
    since = now - timedelta(minutes=3, seconds=7)
    long_error = "ValueError: " + "x" * 300 + "\nsecond line"
    make_state(
        node,
        "alpha",
        status=ExecutionStatus.ERROR,
        attempt=2,
        max_attempts=0,
        since=since,
        last_error=long_error,
        last_error_execution_id=failed,
    )
    make_tally(node, "alpha", now, started=3, failed=2, restarted=2)
    make_tally(node, "alpha", now - timedelta(hours=5), started=4, failed=1, lost=1, restarted=1)
    make_tally(node, "alpha", now - timedelta(hours=30), started=9, failed=9)  # older than the day
    page = section(html(viewer_client.get(DASHBOARD)), "alpha")
    assert "worker-7:4242" in page
    assert 'class="dw-badge dw-status-error">error<' in page
    assert '<td class="dw-attempt">2/unlimited</td>' in page
    assert re.search(r">3 min [0-9]+ s ago<", page), "relative to the database's clock"
    assert since.strftime("%Y-%m-%d %H:%M:%S UTC") in page
    link = reverse("admin:django_workers_execution_change", args=[failed])
    shown = re.search(rf'<a href="{re.escape(link)}">([^<]*)</a>', page)
    assert shown, page
    assert shown.group(1).startswith("ValueError: xxx") and shown.group(1).endswith("\u2026")
    assert len(shown.group(1)) == 120 and "second line" not in page
    # failures (failed + lost) and restarts, last hour / last day
    assert '<span class="dw-failures-hour">2</span> / <span class="dw-failures-day">4</span>' in page
    assert '<span class="dw-restarts-hour">2</span> / <span class="dw-restarts-day">3</span>' in page


def test_problems_come_first(viewer_client: Client, make_node, now) -> None:
    alive = make_node()
    stale = make_node(last_heartbeat=now - timedelta(minutes=10))
    stopped = make_node(stopped_at=now - timedelta(hours=1), last_heartbeat=now - timedelta(hours=1))
    make_state(alive, "a-fine", status=ExecutionStatus.SUCCESS)
    make_state(alive, "b-failing", status=ExecutionStatus.ERROR, last_error="boom")
    make_state(alive, "c-silent", silent=True)
    make_state(alive, "d-exhausted", status=ExecutionStatus.ERROR, exhausted=True, attempt=3)
    make_state(stale, "e-lost")  # running on a node that stopped heart-beating
    make_state(stopped, "f-stopped", status=ExecutionStatus.ERROR, exhausted=True)  # history, not a problem now
    make_state(alive, "g-paused", status=ExecutionStatus.PAUSED, paused=True)
    page = html(viewer_client.get(DASHBOARD))
    assert worker_order(page) == ["d-exhausted", "c-silent", "b-failing", "e-lost", "a-fine", "f-stopped", "g-paused"]
    lost = section(page, "e-lost")
    assert "dw-status-lost" in lost and "dw-status-running" not in lost, "a stale node's worker is never running"
    assert 'class="dw-badge dw-node-stale">stale<' in lost
    assert "attempts exhausted" in section(page, "d-exhausted")
    assert ">silent<" in section(page, "c-silent")


def test_a_worker_running_on_alive_nodes_is_not_failing_for_a_killed_replica(
    viewer_client: Client, make_node, now
) -> None:
    alive = make_node()
    killed = make_node(last_heartbeat=now - timedelta(minutes=10))  # stale: its rows show lost
    make_state(alive, "alpha")
    make_state(killed, "alpha")
    make_state(killed, "beta")  # seen on the stale node only: failing, as before
    make_state(alive, "gamma", status=ExecutionStatus.SUCCESS)
    make_state(alive, "delta", status=ExecutionStatus.ERROR, last_error="boom")
    make_state(killed, "delta")
    page = html(viewer_client.get(DASHBOARD))
    assert worker_order(page) == ["beta", "delta", "alpha", "gamma"]
    alpha = section(page, "alpha")
    assert alpha.startswith('data-worker="alpha"') and "dw-problem-badge" not in alpha
    rows = re.findall(r'<tr class="dw-row dw-node-(\w+)( dw-row-\w+)?">.*?dw-status-(\w+)', alpha, re.S)
    assert rows == [("alive", "", "running"), ("stale", " dw-row-failing", "lost")], "the stale row still says lost"
    assert 'dw-problem-badge-failing">failing<' in section(page, "beta")
    assert 'dw-problem-badge-failing">failing<' in section(page, "delta"), "an alive node's error still counts"


def test_a_worker_on_more_nodes_than_shown_counts_every_node_like_its_timeline(
    viewer_client: Client, make_node, now
) -> None:
    for _ in range(51):  # one more than the page shows
        node = make_node()
        make_state(node, "alpha")
        make_tally(node, "alpha", now, started=1, failed=1, restarted=1)
    make_tally(node, "alpha", now - timedelta(hours=5), started=1, lost=1)
    page = html(viewer_client.get(DASHBOARD))
    assert "only the latest 50 are shown" in page
    alpha = section(page, "alpha")
    assert alpha.count('<tr class="dw-row') == 50
    header = alpha[: alpha.index("</header>")]
    shown = {name: int(value) for name, value in re.findall(r'<strong class="dw-(\w+-\w+)">(\d+)</strong>', header)}
    assert shown == {"failures-hour": 51, "failures-day": 52, "restarts-hour": 51, "restarts-day": 51}
    titles = re.findall(r"<title>[^<]*: ([^<]*)</title>", alpha)
    failed = sum(int(m) for title in titles for m in re.findall(r"(\d+) failed", title))
    lost = sum(int(m) for title in titles for m in re.findall(r"(\d+) lost", title))
    assert failed + lost == shown["failures-day"], "the header adds what the timeline shows"


def test_a_stopped_node_shows_what_was_left_running_as_unknown(viewer_client: Client, make_node, now) -> None:
    stopped = make_node(stopped_at=now - timedelta(hours=1), last_heartbeat=now - timedelta(hours=1))
    make_state(stopped, "alpha")
    alpha = section(html(viewer_client.get(DASHBOARD)), "alpha")
    assert "dw-status-unknown" in alpha and "dw-status-running" not in alpha


def test_configured_workers_that_never_ran_are_listed(viewer_client: Client) -> None:
    with override_settings(WORKERS={"WORKERS": ["demo.workers.ClassicWorker"]}):
        page = html(viewer_client.get(DASHBOARD))
    assert worker_order(page) == ["classic-worker"]
    assert "Configured, but running on none of the nodes below." in section(page, "classic-worker")


def test_what_workers_produced_is_escaped(viewer_client: Client, make_node) -> None:
    node = make_node(hostname=f"host{XSS}")
    make_state(
        node,
        f"report{XSS}",
        status=ExecutionStatus.ERROR,
        last_error=f"Exception: {XSS}",
        last_error_execution_id=uuid.uuid4(),
    )
    make_tally(node, f"report{XSS}", timezone.now(), started=1, failed=1)
    page = html(viewer_client.get(DASHBOARD))
    assert XSS not in page
    assert f"report{XSS_ESCAPED}" in page
    assert f"Exception: {XSS_ESCAPED}" in page
    assert f"host{XSS_ESCAPED}" in page


def test_the_timeline_has_a_bucket_per_quarter_hour_with_counts_in_its_tooltip(
    viewer_client: Client, make_node, now
) -> None:
    node = make_node()
    make_state(node, "alpha")
    other = make_node()
    earlier = now - timedelta(hours=3)
    make_tally(node, "alpha", earlier, started=3, succeeded=1, failed=2, restarted=2)
    make_tally(other, "alpha", earlier, started=1, succeeded=1)  # another node, same period: summed
    make_tally(node, "alpha", now - timedelta(hours=6), started=2, succeeded=2)
    make_tally(node, "alpha", now - timedelta(hours=8), started=1, lost=1)
    page = section(html(viewer_client.get(DASHBOARD)), "alpha")
    svg = re.search(r"<svg class=\"dw-timeline-svg\".*?</svg>", page, re.S)
    assert svg, page
    buckets = re.findall(r'<rect class="dw-bucket dw-bucket-(\w+)"[^>]*><title>([^<]*)</title></rect>', svg.group(0))
    assert len(buckets) == BUCKETS
    outcomes = [outcome for outcome, _ in buckets]
    assert sorted(o for o in outcomes if o != "empty") == ["lost", "mixed", "ok"]
    mixed = next(title for outcome, title in buckets if outcome == "mixed")
    assert "4 started, 2 succeeded, 2 failed, 2 restarts" in mixed
    seconds = int(earlier.timestamp())
    begin = timezone.localtime(datetime.fromtimestamp(seconds - seconds % BUCKET_SECONDS, tz=UTC))
    assert mixed.startswith(f"{begin:%Y-%m-%d %H:%M}\u2013{begin + timedelta(seconds=BUCKET_SECONDS):%H:%M} UTC: ")
    assert "1 lost" in next(title for outcome, title in buckets if outcome == "lost")
    assert buckets[0][1].endswith(": no attempt")
    assert outcomes.index("mixed") > outcomes.index("ok") > outcomes.index("lost"), "oldest first"


def test_the_nodes_table_shows_state_version_uptime_heartbeat_and_drops(viewer_client: Client, make_node, now) -> None:
    make_node(hostname="alive-host", version="9.9.9", dropped_events=17, started_at=now - timedelta(hours=2))
    make_node(hostname="stopped-host", stopped_at=now - timedelta(hours=2), last_heartbeat=now - timedelta(hours=2))
    make_node(hostname="gone-host", stopped_at=now - timedelta(days=2), last_heartbeat=now - timedelta(days=2))
    make_node(hostname="dead-host", last_heartbeat=now - timedelta(days=2))
    page = html(viewer_client.get(DASHBOARD))
    nodes = page[page.index('<table class="dw-nodes">') :]
    rows = re.findall(r'<tr class="dw-node-row dw-node-(\w+)">(.*?)</tr>', nodes, re.S)
    assert [(state, re.search(r">([\w-]+):\d+<", row).group(1)) for state, row in rows] == [  # type: ignore[union-attr]
        ("alive", "alive-host"),
        ("stopped", "stopped-host"),
    ]
    alive = rows[0][1]
    assert "9.9.9" in alive and "2 h 0 min" in alive and ">17<" in alive
    assert now.strftime("%Y-%m-%d %H:%M:%S UTC") in alive


def test_the_nodes_are_capped_with_a_note(viewer_client: Client, make_node, now) -> None:
    for _ in range(51):
        make_node()
    page = html(viewer_client.get(DASHBOARD))
    assert page.count('<tr class="dw-node-row') == 50
    assert "only the latest 50 are shown" in page


# -- refresh -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("30", 30),
        ("1", 5),
        ("0", 5),
        ("-3", 5),
        ("999999", 3600),
        (" 60 ", 60),
        ("abc", None),
        ("1e3", None),
        ("", None),
    ],
)
def test_refresh_is_clamped_and_bad_values_are_ignored(viewer_client: Client, value: str, expected: int | None) -> None:
    assert refresh_seconds(value) == expected
    page = html(viewer_client.get(DASHBOARD, {"refresh": value}))
    metas = re.findall(r'<meta http-equiv="refresh" content="(\d+)">', page)
    assert metas == ([] if expected is None else [str(expected)])


# -- cost --------------------------------------------------------------------------------------------------


def count_queries(client: Client) -> tuple[int, list[str]]:
    client.get(DASHBOARD)  # warm up Django's per-process caches (content types)
    with CaptureQueriesContext(connection) as captured:
        response = client.get(DASHBOARD)
    assert response.status_code == 200
    return len(captured), [query["sql"] for query in captured.captured_queries]


def grow(node: Node, total: int, now: datetime, make_execution: Callable[..., Execution]) -> None:
    start = Execution.objects.count()
    Execution.objects.bulk_create(
        Execution(
            id=uuid.uuid4(),
            node=node,
            worker=f"w{i % 5}",
            attempt=1,
            max_attempts=3,
            status=ExecutionStatus.ERROR if i % 4 == 0 else ExecutionStatus.SUCCESS,
            created_at=now - timedelta(seconds=i * 60),
            error="boom" if i % 4 == 0 else "",
        )
        for i in range(start, total)
    )
    for i in range(start, total):  # the tallies the recorder would have kept for them
        when = now - timedelta(seconds=i * 60)
        if when > now - timedelta(hours=24):
            tally, _ = ExecutionTally.objects.get_or_create(
                node=node, worker=f"w{i % 5}", period_start=period_start(when)
            )
            tally.started += 1
            tally.failed += i % 4 == 0
            tally.succeeded += i % 4 != 0
            tally.save()


def test_the_number_of_queries_does_not_grow_with_the_history(
    controller_client: Client, make_node, make_execution, now
) -> None:
    node = make_node()
    for name in ("w0", "w1", "w2", "w3", "w4"):
        make_state(node, name)
    grow(node, 10, now, make_execution)
    small, small_sql = count_queries(controller_client)
    grow(node, 1000, now, make_execution)
    for _ in range(20):
        make_state(make_node(), "w0")
    large, large_sql = count_queries(controller_client)
    assert small == large, "\n".join(["10 rows:", *small_sql, "1000 rows:", *large_sql])
    assert large <= 10, large_sql
    history = [sql for sql in large_sql if "django_workers_" in sql]
    assert len(history) == 5, history  # nodes, states, per-node sums, timelines, leases
    assert not any('django_workers_execution"' in sql or "django_workers_execution " in sql for sql in history)
