"""The overview page in a real browser (Playwright driving Debian's Chromium, headless), light and dark.

Logs in as an operator, opens the overview from the admin index, reads a timeline bucket's
tooltip, checks that what workers produced is text (no dialog fires), that a singleton's roles
and the leases table show, that the page stays legible in the dark theme, and presses Restart
(the request is recorded and the page comes back).
Screenshots: ``/tmp/h2-overview-light.png`` and ``/tmp/h2-overview-dark.png``.

Never downloads a browser: ``/usr/bin/chromium`` or a skip.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission, User
from django.db.models.functions import Now
from django.test import override_settings
from django.utils import timezone
from playwright.sync_api import Page, sync_playwright

from django_workers.history.tallies import period_start
from django_workers.models import ControlRequest, ExecutionStatus, ExecutionTally, Lease, LeaseRole, Node, WorkerState
from tests.admin.conftest import XSS
from tests.admin.test_admin_browser import CHROMIUM, CHROMIUM_ARGS, assert_readable

SHOTS = Path("/tmp")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)"),
]


def make_console() -> None:
    """Two live nodes and a stale one, workers in every state the page orders, a day of tallies.

    And a singleton (ledger.Reconciler) led by web-1 and followed by web-2, with its lease, an
    expired lease of the stale node and a free one.
    """
    now = timezone.now()
    web1 = Node.objects.create(
        hostname="web-1",
        pid=4242,
        started_at=now - timedelta(hours=26),
        last_heartbeat=now,
        version="0.4.0",
        workers=["billing.Sync", "mail.Sender", f"report{XSS}", "outbox.Relay", "ledger.Reconciler"],
    )
    web2 = Node.objects.create(
        hostname="web-2",
        pid=5151,
        started_at=now - timedelta(hours=3),
        last_heartbeat=now,
        version="0.4.0",
        workers=["mail.Sender", "feed.Poller", "ledger.Reconciler"],
    )
    gone = Node.objects.create(
        hostname="web-3",
        pid=77,
        started_at=now - timedelta(hours=5),
        last_heartbeat=now - timedelta(minutes=20),
        version="0.3.9",
        dropped_events=12,
    )

    def state(node: Node, worker: str, position: int, **fields: object) -> None:
        values: dict[str, object] = {
            "status": ExecutionStatus.RUNNING,
            "attempt": 1,
            "max_attempts": 3,
            "since": now - timedelta(minutes=42, seconds=13),
            "execution_id": uuid.uuid4(),
            "updated_at": now,
        }
        values.update(fields)
        WorkerState.objects.create(node=node, worker=worker, position=position, **values)

    error = (
        'OperationalError: connection to server at "db.internal" (10.0.0.5), port 5432 failed: FATAL: remaining '
        "connection slots are reserved for roles with the SUPERUSER attribute\nDETAIL: too many clients"
    )
    state(
        web1,
        "billing.Sync",
        0,
        status=ExecutionStatus.ERROR,
        attempt=3,
        exhausted=True,
        last_error=error,
        last_error_execution_id=uuid.uuid4(),
        since=now - timedelta(minutes=7),
    )
    state(web1, "mail.Sender", 1)
    state(web2, "mail.Sender", 0, status=ExecutionStatus.SUCCESS, since=now - timedelta(hours=2))
    state(
        web1,
        f"report{XSS}",
        2,
        status=ExecutionStatus.ERROR,
        attempt=2,
        max_attempts=0,
        last_error=f"Exception: {XSS}",
        last_error_execution_id=uuid.uuid4(),
    )
    state(web1, "outbox.Relay", 3, status=ExecutionStatus.PAUSED, paused=True, since=now - timedelta(minutes=3))
    state(gone, "outbox.Relay", 0)
    state(web2, "feed.Poller", 1, silent=True, since=now - timedelta(hours=1, minutes=2))
    state(web1, "ledger.Reconciler", 4, role=LeaseRole.LEADER, fence=42, since=now - timedelta(hours=2, minutes=5))
    state(
        web2,
        "ledger.Reconciler",
        2,
        status=ExecutionStatus.STANDBY,
        role=LeaseRole.FOLLOWER,
        since=now - timedelta(hours=2, minutes=5),
    )
    # Leases, their times by the database's clock: held by web-1, expired (the stale web-3), free.
    for name, holder, fence, expires, since in (
        ("ledger.Reconciler", web1.pk, 42, timedelta(seconds=11), timedelta(hours=2, minutes=5)),
        ("nightly.Export", gone.pk, 7, timedelta(minutes=-19), timedelta(hours=4)),
        ("cache.Warmer", None, 3, timedelta(hours=-3), timedelta(hours=6)),
    ):
        Lease.objects.create(name=name, holder=holder, fence=fence, expires_at=now)
        Lease.objects.filter(name=name).update(expires_at=Now() + expires, since=Now() - since)

    tallies: dict[tuple[Node, str, object], list[int]] = {}

    def add(
        node: Node,
        worker: str,
        hours_ago: float,
        started: int = 0,
        succeeded: int = 0,
        failed: int = 0,
        lost: int = 0,
        restarted: int = 0,
    ) -> None:
        key = (node, worker, period_start(now - timedelta(hours=hours_ago)))
        counts = tallies.setdefault(key, [0, 0, 0, 0, 0])
        for i, value in enumerate((started, succeeded, failed, lost, restarted)):
            counts[i] += value

    for hour in range(24):
        add(web1, "mail.Sender", hour + 0.1, started=4, succeeded=4)
        if hour % 6 == 2:
            add(web1, "mail.Sender", hour + 0.3, started=2, succeeded=1, failed=1, restarted=1)
    for quarter in range(8):
        add(web1, "billing.Sync", quarter * 0.3, started=1, failed=1, restarted=1)
    add(web1, "billing.Sync", 3.5, started=5, succeeded=5)
    add(gone, "outbox.Relay", 0.4, lost=1)
    add(web1, "outbox.Relay", 9, started=3, succeeded=3)
    add(web2, "feed.Poller", 1.1, started=1)
    add(web1, f"report{XSS}", 2.2, started=2, failed=2, restarted=1)
    for hour in range(3):
        add(web1, "ledger.Reconciler", hour + 0.2, started=1, succeeded=1)
    ExecutionTally.objects.bulk_create(
        ExecutionTally(
            node=node,
            worker=worker,
            period_start=start,
            started=c[0],
            succeeded=c[1],
            failed=c[2],
            lost=c[3],
            restarted=c[4],
        )
        for (node, worker, start), c in tallies.items()
    )
    operator = User.objects.create_user("operator", password="s3cret-pass", is_staff=True)
    operator.user_permissions.add(
        *Permission.objects.filter(codename__in=("view_execution", "view_node", "control_workers"))
    )


def test_the_overview_in_a_real_browser(live_server, tmp_path: Path) -> None:
    make_console()  # before Playwright runs an event loop in this thread
    dialogs: list[str] = []
    page_errors: list[str] = []

    def shot(page: Page, name: str) -> Path:
        path = SHOTS / f"h2-overview-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    with override_settings(WORKERS={"HISTORY": {"ENABLED": True}, "WORKERS": []}), sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=str(CHROMIUM),
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1440, "height": 900},
        )
        try:
            page = context.new_page()
            page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
            page.on("pageerror", lambda error: page_errors.append(str(error)))

            page.goto(f"{live_server.url}/admin/login/?next=/admin/")
            page.fill("#id_username", "operator")
            page.fill("#id_password", "s3cret-pass")
            page.click("input[type=submit]")
            page.wait_for_url("**/admin/")
            page.get_by_role("link", name="Overview").first.click()
            page.wait_for_url("**/admin/django_workers/workeroverview/")
            path = shot(page, "light")

            names = page.locator("section.dw-worker h3.dw-worker-name").all_inner_texts()
            # outbox.Relay is paused on the alive node: its row on the stale node (lost) does not make
            # the worker failing.
            expected = [
                "billing.Sync",
                "feed.Poller",
                f"report{XSS}",
                "ledger.Reconciler",
                "mail.Sender",
                "outbox.Relay",
            ]
            assert names == expected, f"{names} (see {path})"
            # The timeline: 96 buckets; a failing quarter hour's tooltip gives its counts and period.
            billing = page.locator('section.dw-worker[data-worker="billing.Sync"]')
            assert billing.locator("rect.dw-bucket").count() == 96, f"see {path}"
            failed = billing.locator("rect.dw-bucket-failed title").first.text_content() or ""
            assert "1 started, 0 succeeded, 1 failed, 1 restart" in failed and " UTC: " in failed, failed
            fill = billing.locator("rect.dw-bucket-failed").first.evaluate("e => getComputedStyle(e).fill")
            assert fill == "rgb(198, 40, 40)", f"{fill} (see {path})"
            relay = page.locator('section.dw-worker[data-worker="outbox.Relay"]')
            assert relay.locator(".dw-node-stale ~ *, .dw-status-lost").count() >= 1, f"see {path}"
            assert relay.locator(".dw-status-running").count() == 0, "a stale node's worker is never running"
            assert page.locator("script", has_text="alert(1)").count() == 0, f"see {path}"
            assert page.get_by_text(f"Exception: {XSS}").is_visible(), f"see {path}"

            # The singleton: its role on each node, and the leases.
            ledger = page.locator('section.dw-worker[data-worker="ledger.Reconciler"]')
            roles = ledger.locator("td.dw-role .dw-badge").all_inner_texts()
            assert roles == ["leader", "follower"], f"{roles} (see {path})"
            assert ledger.locator("td.dw-role .dw-fence").inner_text() == "fence 42", f"see {path}"
            leader = ledger.locator(".dw-role-leader").evaluate("e => getComputedStyle(e).backgroundColor")
            assert leader == "rgb(46, 125, 50)", f"{leader} (see {path})"
            leases = page.locator("table.dw-leases tbody tr")
            assert leases.locator("td.dw-lease-name").all_inner_texts() == [
                "cache.Warmer",
                "ledger.Reconciler",
                "nightly.Export",
            ], f"see {path}"
            assert leases.nth(0).locator(".dw-lease-free").inner_text() == "free", f"see {path}"
            assert leases.nth(1).locator("td.dw-holder a").inner_text() == "web-1:4242", f"see {path}"
            assert leases.nth(1).locator("td.dw-expires time").inner_text().startswith("in "), f"see {path}"
            assert leases.nth(2).locator(".dw-lease-expired").inner_text() == "expired", f"see {path}"
            assert leases.nth(2).locator("td.dw-holder").inner_text() == "web-3:77", f"see {path}"

            # The dark theme: text and empty buckets stay visible against the background.
            page.emulate_media(color_scheme="dark")
            page.reload()
            path = shot(page, "dark")
            background = page.evaluate("getComputedStyle(document.body).backgroundColor")
            assert background == "rgb(18, 18, 18)", f"{background}: the admin's dark theme (see {path})"
            name_colour = page.locator("h3.dw-worker-name").first.evaluate("e => getComputedStyle(e).color")
            empty = page.locator("rect.dw-bucket-empty").first.evaluate("e => getComputedStyle(e).fill")
            assert name_colour == "rgb(255, 255, 255)", f"{name_colour} (see {path})"
            assert empty not in (background, "rgb(0, 0, 0)"), f"{empty} (see {path})"
            for text in ("table.dw-leases td.dw-lease-name", "td.dw-role .dw-fence", "table.dw-leases td.dw-fence"):
                assert_readable(page.locator(text).first, path)

            # Restart from the page: the request is recorded, and the page comes back.
            page.emulate_media(color_scheme="light")
            row = page.locator('section.dw-worker[data-worker="billing.Sync"] tr.dw-row').first
            row.get_by_role("button", name="Restart").click()
            page.wait_for_url("**/admin/django_workers/workeroverview/**")
            message = page.locator("ul.messagelist li").first.inner_text()
            path = shot(page, "after-restart")
            assert "billing.Sync" in message and "restart" in message.lower(), f"{message} (see {path})"
            assert page.locator("ul.messagelist li.error").count() == 0, f"{message} (see {path})"
        finally:
            context.close()

    assert dialogs == [], dialogs
    assert page_errors == [], page_errors
    request = ControlRequest.objects.get()
    assert (request.action, request.worker, request.requested_by) == ("restart", "billing.Sync", "operator")
    assert request.node is not None and request.node.hostname == "web-1"
