"""A real browser (Playwright driving Debian's Chromium, headless) against the admin of the test project.

Logs in, lists executions, filters by status, opens one with its events, and checks that what a
worker produced (``<script>alert(1)</script>`` in an error, an event, a worker name) is shown as
text and runs nothing. Screenshots go to ``test-output/admin-browser/<database>/``.

Never downloads a browser: it uses ``/usr/bin/chromium`` (``.ci/run`` installs Debian's package)
and skips, saying so, only where that file does not exist.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.utils import timezone
from playwright.sync_api import Page, sync_playwright

from django_workers.models import Execution, ExecutionEvent, ExecutionStatus, Node
from tests.admin.conftest import XSS

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
OUTPUT = Path(__file__).resolve().parents[2] / "test-output" / "admin-browser"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)"),
]


def make_history() -> Execution:
    """A node, three executions (one failed with a script in its error, events and worker name)."""
    now = timezone.now()
    node = Node.objects.create(
        hostname="web-1", pid=4242, started_at=now - timedelta(hours=2), last_heartbeat=now, version="0.1.0"
    )
    for minutes, worker, status in (
        (30, "mail.Sender", ExecutionStatus.SUCCESS),
        (20, f"report{XSS}", ExecutionStatus.RUNNING),
    ):
        Execution.objects.create(
            id=uuid.uuid4(),
            node=node,
            worker=worker,
            attempt=1,
            max_attempts=0,
            status=status,
            created_at=now - timedelta(minutes=minutes),
            started_at=now - timedelta(minutes=minutes),
            duration=2.5 if status == ExecutionStatus.SUCCESS else None,
        )
    failed = Execution.objects.create(
        id=uuid.uuid4(),
        node=node,
        worker="billing.Sync",
        attempt=2,
        max_attempts=3,
        status=ExecutionStatus.ERROR,
        created_at=now - timedelta(minutes=10),
        started_at=now - timedelta(minutes=10),
        finished_at=now - timedelta(minutes=9),
        duration=61.0,
        error=f"Exception: {XSS}",
        traceback=(
            "Traceback (most recent call last):\n"
            f'  File "billing.py", line 12, in run\n    raise Exception("{XSS}")\nException: {XSS}'
        ),
    )
    messages = ["started", f"fetched page: {XSS}", f"failed: Exception: {XSS}"]
    ExecutionEvent.objects.bulk_create(
        ExecutionEvent(
            node=node,
            execution=failed,
            timestamp=now - timedelta(minutes=10) + timedelta(seconds=i),
            level="ERROR" if i == 2 else "INFO",
            message=message,
        )
        for i, message in enumerate(messages)
    )
    viewer = User.objects.create_user("viewer", password="s3cret-pass", is_staff=True)
    viewer.user_permissions.add(*Permission.objects.filter(codename__in=("view_execution", "view_node")))
    return failed


def test_admin_in_a_real_browser(live_server, tmp_path: Path) -> None:
    failed = make_history()  # before Playwright runs an event loop in this thread (Django refuses the ORM then)
    shots = OUTPUT / connection.vendor
    shots.mkdir(parents=True, exist_ok=True)
    dialogs: list[str] = []
    page_errors: list[str] = []

    def shot(page: Page, name: str) -> Path:
        path = shots / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),  # a fresh user-data dir
            executable_path=str(CHROMIUM),
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1440, "height": 900},
        )
        try:
            page = context.new_page()
            page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
            page.on("pageerror", lambda error: page_errors.append(str(error)))

            # Log in.
            page.goto(f"{live_server.url}/admin/login/?next=/admin/django_workers/execution/")
            page.fill("#id_username", "viewer")
            page.fill("#id_password", "s3cret-pass")
            page.click("input[type=submit]")
            page.wait_for_url("**/admin/django_workers/execution/")

            # The list: three executions, newest first, badges, no add button.
            path = shot(page, "01-executions")
            workers = page.locator("#result_list tbody th.field-worker").all_inner_texts()
            assert workers == ["billing.Sync", f"report{XSS}", "mail.Sender"], f"{workers} (see {path})"
            assert page.locator("#result_list .dw-status-error").inner_text() == "error", f"see {path}"
            badge = page.locator("#result_list .dw-status-success")
            assert badge.evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(46, 125, 50)", (
                f"the badge is styled by django_workers/admin.css (see {path})"
            )
            assert page.locator("a.addlink").count() == 0, f"see {path}"
            assert page.locator("#changelist-filter").is_visible(), f"see {path}"

            # Filter by status.
            page.locator('#changelist-filter a[href="?status__exact=error"]').click()
            page.wait_for_url("**/?status__exact=error")
            path = shot(page, "02-executions-error")
            workers = page.locator("#result_list tbody th.field-worker").all_inner_texts()
            assert workers == ["billing.Sync"], f"{workers} (see {path})"

            # Open it: events oldest first, the error and traceback shown as text.
            page.locator("#result_list tbody th.field-worker a").click()
            page.wait_for_url(f"**/admin/django_workers/execution/{failed.pk}/change/**")
            page.locator(".dw-events").wait_for()
            path = shot(page, "03-execution-detail")
            messages = page.locator(".dw-events td.field-message").all_inner_texts()
            assert messages == ["started", f"fetched page: {XSS}", f"failed: Exception: {XSS}"], (
                f"{messages} (see {path})"
            )
            assert page.locator(".field-error .readonly").inner_text() == f"Exception: {XSS}", f"see {path}"
            traceback = page.locator("pre.dw-traceback").inner_text()
            assert traceback.endswith(f"Exception: {XSS}") and "\n  File " in traceback, f"{traceback!r} (see {path})"
            assert page.get_by_text(f"failed: Exception: {XSS}").is_visible(), f"see {path}"
            assert page.locator("script", has_text="alert(1)").count() == 0, (
                f"a worker's script became a script element (see {path})"
            )

            # The nodes page.
            page.goto(f"{live_server.url}/admin/django_workers/node/")
            path = shot(page, "04-nodes")
            assert page.locator("#result_list .dw-node-alive").inner_text() == "alive", f"see {path}"
            page.locator("#result_list tbody th.field-hostname a").click()
            page.wait_for_url("**/admin/django_workers/node/*/change/**")
            path = shot(page, "05-node-detail")
            assert page.locator(".field-state_display .dw-node-alive").is_visible(), f"see {path}"
            assert page.get_by_text("No events.").is_visible(), f"no node-level events (see {path})"
        finally:
            context.close()

    assert dialogs == [], f"a dialog fired: {dialogs} (screenshots in {shots})"
    assert page_errors == [], f"JavaScript errors: {page_errors} (screenshots in {shots})"
