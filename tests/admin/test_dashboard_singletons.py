"""Singleton workers on the operator overview and the node page: roles, fences and the leases table.

Rows are made with the ORM: nodes, the workers' states (with ``role`` and ``fence``, as the
recorder keeps them) and the lease rows (as :mod:`django_workers.fleet.leases` leaves them).
Expiry is judged by the database's clock, so the lease rows are written relative to ``Now()``.
"""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.db.models.functions import Now
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from django_workers.admin.overview import read_overview
from django_workers.models import ExecutionStatus, Lease, LeaseRole, Node
from tests.admin.conftest import XSS, XSS_ESCAPED
from tests.admin.test_dashboard import DASHBOARD, _user, count_queries, html, make_state, section, worker_order

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _no_configured_workers() -> Any:
    from tests.admin.test_dashboard import NO_WORKERS

    with NO_WORKERS:
        yield


def make_lease(name: str, holder: Node | uuid.UUID | None, fence: int, *, expires_in: float, since_ago: float) -> Lease:
    """A lease row whose times are relative to the database's clock."""
    holder_id = holder.pk if isinstance(holder, Node) else holder
    Lease.objects.create(name=name, holder=holder_id, fence=fence, expires_at=timezone.now())
    Lease.objects.filter(name=name).update(
        expires_at=Now() + timedelta(seconds=expires_in), since=Now() - timedelta(seconds=since_ago)
    )
    return Lease.objects.get(name=name)


def leases_table(page: str) -> str:
    start = page.index('<table class="dw-leases">')
    return page[start : page.index("</table>", start)]


def lease_row(page: str, name: str) -> str:
    table = leases_table(page)
    start = table.index(f'data-lease="{name}"')
    end = table.find("</tr>", start)
    return table[start:end]


def roles(worker_section: str) -> list[tuple[str, str]]:
    """(node state, role cell) of each row of a worker's table."""
    rows = re.findall(r'<tr class="dw-row dw-node-(\w+)[^"]*">(.*?)</tr>', worker_section, re.S)
    return [(state, re.search(r'<td class="dw-role">(.*?)</td>', cells, re.S).group(1)) for state, cells in rows]  # type: ignore[union-attr]


# -- the overview ------------------------------------------------------------------------------------------


def test_each_node_shows_the_role_of_a_singleton_with_its_fence_and_since(viewer_client: Client, make_node) -> None:
    leader = make_node(hostname="web-1", pid=11)
    follower = make_node(hostname="web-2", pid=22)
    make_lease("outbox.Relay", leader, 7, expires_in=12, since_ago=3 * 60 + 5)
    make_state(leader, "outbox.Relay", role=LeaseRole.LEADER, fence=7)
    standby_since = timezone.now() - timedelta(minutes=9)
    make_state(follower, "outbox.Relay", status=ExecutionStatus.STANDBY, role=LeaseRole.FOLLOWER, since=standby_since)
    make_state(leader, "mail.Sender")
    page = html(viewer_client.get(DASHBOARD))
    relay = section(page, "outbox.Relay")
    assert '<th scope="col">Lease role</th>' in relay
    cells = list(roles(relay))
    assert len(cells) == 2
    leader_cell = next(cell for _, cell in cells if "dw-role-leader" in cell)
    follower_cell = next(cell for _, cell in cells if "dw-role-follower" in cell)
    assert '<span class="dw-badge dw-role-leader">leader</span>' in leader_cell
    assert '<span class="dw-fence">fence 7</span>' in leader_cell
    assert re.search(r"since 3 min [0-9]+ s ago</time>", leader_cell), "since it took the lease (the lease row)"
    assert '<span class="dw-badge dw-role-follower">follower</span>' in follower_cell
    assert "fence" not in follower_cell
    assert re.search(r"since 9 min [0-9]+ s ago</time>", follower_cell), "since it stood by"
    assert 'class="dw-badge dw-status-standby">standby<' in relay
    assert "dw-problem-badge" not in relay, "a follower is no problem"
    assert "Lease role" not in section(page, "mail.Sender"), "no role column for workers that are not singletons"


def test_releasing_and_stuck_roles_and_a_stuck_singleton_ranks_with_the_problems(
    viewer_client: Client, make_node
) -> None:
    node = make_node()
    make_state(node, "a-fine", status=ExecutionStatus.SUCCESS)
    make_state(node, "b-exhausted", status=ExecutionStatus.ERROR, exhausted=True, attempt=3)
    make_state(node, "c-failing", status=ExecutionStatus.ERROR, last_error="boom")
    make_state(node, "d-releasing", role=LeaseRole.RELEASING)
    make_state(node, "e-stuck", role=LeaseRole.STUCK)
    page = html(viewer_client.get(DASHBOARD))
    assert worker_order(page) == ["e-stuck", "b-exhausted", "c-failing", "a-fine", "d-releasing"]
    stuck = section(page, "e-stuck")
    assert 'dw-problem-badge dw-problem-badge-stuck">stuck<' in stuck
    assert 'class="dw-worker dw-problem dw-problem-stuck"' in page
    assert '<tr class="dw-row dw-node-alive dw-row-stuck">' in stuck
    assert '<span class="dw-badge dw-role-stuck">stuck</span>' in stuck
    assert '<span class="dw-badge dw-role-releasing">releasing</span>' in section(page, "d-releasing")
    assert "dw-problem-badge" not in section(page, "d-releasing"), "releasing is transient"


def test_a_stopped_node_shows_no_role_and_a_stale_one_is_not_stuck(viewer_client: Client, make_node, now) -> None:
    alive = make_node()
    stale = make_node(last_heartbeat=now - timedelta(minutes=10))
    stopped = make_node(stopped_at=now - timedelta(minutes=5), last_heartbeat=now - timedelta(minutes=5))
    make_state(alive, "relay", status=ExecutionStatus.STANDBY, role=LeaseRole.FOLLOWER)
    make_state(stale, "relay", role=LeaseRole.STUCK)
    make_state(stopped, "relay", role=LeaseRole.LEADER, fence=4)  # it released the lease at its stop
    page = html(viewer_client.get(DASHBOARD))
    relay = section(page, "relay")
    cells = roles(relay)
    assert [state for state, _ in cells] == ["alive", "stale", "stopped"]
    assert "dw-role-follower" in cells[0][1] and "dw-role-stuck" in cells[1][1]
    assert cells[2][1] == "-", "a stopped node holds nothing now"
    assert "dw-problem-badge-stuck" not in relay, "judged by its alive nodes"


def test_the_leases_table_shows_holder_fence_since_and_expiry(viewer_client: Client, make_node) -> None:
    holder = make_node(hostname="web-1", pid=4242)
    gone = uuid.uuid4()  # a holder whose node row retention pruned
    make_lease("a.held", holder, 12, expires_in=8, since_ago=125)
    make_lease("b.expired", holder, 5, expires_in=-30, since_ago=600)
    make_lease("c.free", None, 3, expires_in=-60, since_ago=900)
    make_lease("d.pruned", gone, 2, expires_in=20, since_ago=5)
    page = html(viewer_client.get(DASHBOARD))
    assert '<h2 class="dw-section">Leases</h2>' in page
    names = re.findall(r'data-lease="([^"]*)"', leases_table(page))
    assert names == ["a.held", "b.expired", "c.free", "d.pruned"]

    held = lease_row(page, "a.held")
    link = reverse("admin:django_workers_node_change", args=[holder.pk])
    assert f'<a href="{link}">web-1:4242</a>' in held
    assert '<td class="dw-num dw-fence">12</td>' in held
    assert re.search(r">2 min [0-9]+ s ago</time>", held)
    assert re.search(r">in [0-9.]+ s</time>", held), held
    assert "expired" not in held and "dw-lease-held" in page

    expired = lease_row(page, "b.expired")
    assert '<span class="dw-badge dw-lease-expired">expired</span>' in expired
    assert f'<a href="{link}">web-1:4242</a>' in expired, "the last holder"

    free = lease_row(page, "c.free")
    assert '<span class="dw-badge dw-lease-free">free</span>' in free
    assert "expired" not in free and "<a " not in free
    assert '<td class="dw-num dw-fence">3</td>' in free

    pruned = lease_row(page, "d.pruned")
    assert str(gone) in pruned and "<a " not in pruned


def test_expiry_is_judged_by_the_database_clock(make_node, monkeypatch: pytest.MonkeyPatch) -> None:
    node = make_node()
    make_lease("relay", node, 1, expires_in=-1, since_ago=60)
    # A web server whose clock runs an hour late would think the lease runs for another hour.
    late = timezone.now() - timedelta(hours=1)
    monkeypatch.setattr("django_workers.admin.overview.timezone.now", lambda: late)
    (lease,) = read_overview("default").leases
    assert lease.expired and lease.state == "expired" and lease.expires_in == ""
    assert re.fullmatch(r"1 min 0 s ago|1 min 1 s ago|60\.0 s ago|59\.\d s ago", lease.since_ago), lease.since_ago
    Lease.objects.filter(name="relay").update(expires_at=Now() + timedelta(minutes=5))
    (lease,) = read_overview("default").leases
    assert not lease.expired and lease.state == "held"
    assert re.fullmatch(r"in (4 min [0-9]+ s|5 min 0 s)", lease.expires_in), lease.expires_in


def test_the_holder_is_not_a_link_for_staff_who_may_not_view_nodes(make_node) -> None:
    node = make_node(hostname="web-9", pid=9)
    make_lease("relay", node, 1, expires_in=10, since_ago=1)
    client = _user("watcher", "view_execution")
    row = lease_row(html(client.get(DASHBOARD)), "relay")
    assert "web-9:9" in row and "<a " not in row


def test_worker_names_in_the_leases_table_are_escaped(viewer_client: Client, make_node) -> None:
    node = make_node(hostname=f"host{XSS}")
    make_lease(f"relay{XSS}", node, 1, expires_in=10, since_ago=1)
    make_state(node, f"relay{XSS}", role=LeaseRole.LEADER, fence=1)
    page = html(viewer_client.get(DASHBOARD))
    assert XSS not in page
    table = leases_table(page)
    assert f'<td class="dw-lease-name">relay{XSS_ESCAPED}</td>' in table
    assert f"host{XSS_ESCAPED}:" in table


def test_no_leases_table_without_leases(viewer_client: Client, make_node) -> None:
    make_state(make_node(), "alpha")
    page = html(viewer_client.get(DASHBOARD))
    assert "dw-leases" not in page and "Lease role" not in page


def test_the_leases_cost_one_query_whatever_their_number(viewer_client: Client, make_node) -> None:
    nodes = [make_node() for _ in range(3)]
    make_lease("s0", nodes[0], 1, expires_in=10, since_ago=1)
    small, small_sql = count_queries(viewer_client)
    for i in range(1, 30):
        make_lease(f"s{i}", nodes[i % 3] if i % 4 else uuid.uuid4(), i, expires_in=10, since_ago=1)
        make_state(nodes[i % 3], f"s{i}", role=LeaseRole.FOLLOWER)
    large, large_sql = count_queries(viewer_client)
    assert small == large, "\n".join(["1 lease:", *small_sql, "30 leases:", *large_sql])
    assert len([sql for sql in large_sql if "django_workers_lease" in sql]) == 1


# -- the node page -----------------------------------------------------------------------------------------


def node_url(node: Node) -> str:
    return reverse("admin:django_workers_node_change", args=[node.pk])


def test_the_node_page_shows_each_singletons_role_and_fence(viewer_client: Client, make_node) -> None:
    node = make_node(workers=["mail.Sender", "outbox.Relay", "feed.Poller", f"x{XSS}"])
    make_state(node, "mail.Sender")
    make_state(node, "outbox.Relay", role=LeaseRole.LEADER, fence=7)
    make_state(node, "feed.Poller", status=ExecutionStatus.STANDBY, role=LeaseRole.FOLLOWER)
    make_state(node, f"x{XSS}", role=LeaseRole.STUCK)
    page = html(viewer_client.get(node_url(node)))
    items = re.findall(r"<li>(.*?)</li>", page[page.index('<ul class="dw-workers">') :].split("</ul>")[0])
    assert items == [
        "mail.Sender",
        'outbox.Relay <span class="dw-badge dw-role-leader">leader</span> <span class="dw-fence">fence 7</span>',
        'feed.Poller <span class="dw-badge dw-role-follower">follower</span>',
        f'x{XSS_ESCAPED} <span class="dw-badge dw-role-stuck">stuck</span>',
    ]
    assert XSS not in page


def test_a_stopped_node_page_shows_no_role(viewer_client: Client, make_node, now) -> None:
    node = make_node(workers=["outbox.Relay"], stopped_at=now, last_heartbeat=now)
    make_state(node, "outbox.Relay", role=LeaseRole.LEADER, fence=7)
    page = html(viewer_client.get(node_url(node)))
    assert '<ul class="dw-workers"><li>outbox.Relay</li></ul>' in page
