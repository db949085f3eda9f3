"""A real browser (Playwright driving Debian's Chromium, headless) against the admin of the test project.

Logs in, lists executions (the error column, times to the second with the zone, ``host:pid``, the
``lost`` badge), filters by status, opens one with its events (no "History" button), opens a node
(its workers aligned with the other values), and checks that what a worker produced
(``<script>alert(1)</script>`` in an error, an event, a worker name) is shown as text and runs
nothing. The list and the node are shot in the light and the dark theme. Screenshots go to
``test-output/admin-browser/<database>/``.

Never downloads a browser: it uses ``/usr/bin/chromium`` (``.ci/run`` installs Debian's package)
and skips, saying so, only where that file does not exist.
"""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.utils import timezone
from playwright.sync_api import Locator, Page, sync_playwright

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


#: The error of a failed attempt: a long first line (cut in the list) and a second line.
LONG_ERROR = (
    'OperationalError: connection to server at "db.internal" (10.0.0.5), port 5432 failed: FATAL: remaining'
    " connection slots are reserved for roles with the SUPERUSER attribute\nDETAIL: too many clients"
)
LOST = "node web-2:77 was lost (no heartbeat since 2026-12-03 14:05:09 UTC)"
WORKERS = ["mail.Sender", "outbox.Relay", f"report{XSS}", "billing.Sync"]
TIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$")


def make_history() -> Execution:
    """A node, five executions (one failed with a script in its error, events and worker name; one lost)."""
    now = timezone.now()
    node = Node.objects.create(
        hostname="web-1",
        pid=4242,
        started_at=now - timedelta(hours=2),
        last_heartbeat=now,
        version="0.1.0",
        workers=WORKERS,
    )
    gone = Node.objects.create(
        hostname="web-2",
        pid=77,
        started_at=now - timedelta(hours=3),
        last_heartbeat=now - timedelta(hours=1),
        version="0.1.0",
    )
    for minutes, where, worker, status, error in (
        (50, gone, "outbox.Relay", ExecutionStatus.LOST, LOST),
        (40, node, "mail.Sender", ExecutionStatus.ERROR, LONG_ERROR),
        (30, node, "mail.Sender", ExecutionStatus.SUCCESS, ""),
        (20, node, f"report{XSS}", ExecutionStatus.RUNNING, ""),
    ):
        Execution.objects.create(
            id=uuid.uuid4(),
            node=where,
            worker=worker,
            attempt=1,
            max_attempts=0,
            status=status,
            created_at=now - timedelta(minutes=minutes),
            started_at=now - timedelta(minutes=minutes),
            finished_at=now - timedelta(minutes=minutes - 1) if status != ExecutionStatus.RUNNING else None,
            duration=60.0 if status != ExecutionStatus.RUNNING else None,
            error=error,
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


def check_list_columns(page: Page, path: Path) -> None:
    """The error column (first line, cut, the whole text in its title), host:pid, times, the lost badge."""
    rows = page.locator("#result_list tbody tr")
    header = page.locator("#result_list thead th").all_inner_texts()
    assert [text.strip() for text in header[-4:]] == ["HOST:PID", "STARTED", "DURATION", "ERROR"], (
        f"{header} (see {path})"
    )
    failed = rows.nth(0).locator("td.field-error_display .dw-error")
    assert failed.inner_text() == f"Exception: {XSS}", f"see {path}"
    assert failed.get_attribute("title") == f"Exception: {XSS}", f"see {path}"
    cut = rows.nth(3).locator("td.field-error_display .dw-error")
    text = cut.inner_text()
    assert text.endswith("\u2026") and len(text) <= 120 and LONG_ERROR.startswith(text[:-1]), f"{text!r} (see {path})"
    assert cut.get_attribute("title") == LONG_ERROR, f"see {path}"
    assert rows.nth(1).locator("td.field-error_display").inner_text() == "-", f"see {path}"
    hosts = page.locator("#result_list td.field-node_display").all_inner_texts()
    assert hosts == ["web-1:4242"] * 4 + ["web-2:77"], f"{hosts} (see {path})"
    for text in page.locator("#result_list td.field-started_display").all_inner_texts():
        assert TIME.match(text), f"{text!r} (see {path})"
    lost = rows.nth(4).locator(".dw-status-lost")
    assert lost.inner_text() == "lost", f"see {path}"
    colours = {
        status: page.locator(f"#result_list .dw-status-{status}").first.evaluate(
            "e => getComputedStyle(e).backgroundColor"
        )
        for status in ("lost", "error")
    }
    assert colours["lost"] == "rgb(106, 27, 154)" and colours["lost"] != colours["error"], f"{colours} (see {path})"
    assert rows.nth(4).locator("td.field-error_display .dw-error").inner_text() == LOST, f"see {path}"
    overflow = page.locator("#changelist .results").evaluate("e => e.scrollWidth - e.clientWidth")
    assert overflow <= 0, f"the list is {overflow}px wider than the page (see {path})"


def check_workers_list(page: Page, path: Path) -> None:
    """The node's workers: one per line, their left edge on the other values' (the host's, say)."""
    items = page.locator(".field-workers_display ul.dw-workers li")
    assert items.all_inner_texts() == WORKERS, f"see {path}"
    host = page.locator(".field-hostname .readonly").bounding_box()
    boxes = [items.nth(i).bounding_box() for i in range(len(WORKERS))]
    assert host is not None and all(box is not None for box in boxes), f"see {path}"
    lefts = {round(box["x"]) for box in boxes if box is not None}
    assert lefts == {round(host["x"])}, f"the workers start at {lefts}, the values at {host['x']} (see {path})"
    tops = [box["y"] for box in boxes if box is not None]
    assert tops == sorted(tops) and len(set(tops)) == len(tops), f"one worker per line (see {path})"
    style = items.first.evaluate("e => getComputedStyle(e).listStyleType")
    assert style == "none", f"{style} (see {path})"


def assert_readable(locator: Locator, path: Path) -> None:
    """The text of ``locator`` contrasts with the page background (light on dark, or dark on light)."""
    colour = locator.evaluate("e => getComputedStyle(e).color")
    background = locator.page.evaluate("() => getComputedStyle(document.body).backgroundColor")
    assert abs(luminance(colour) - luminance(background)) > 0.4, f"{colour} on {background} (see {path})"


def luminance(css: str) -> float:
    """The relative luminance (0 to 1) of an ``rgb(...)``/``rgba(...)`` colour."""
    red, green, blue = (int(part) / 255 for part in re.findall(r"\d+", css)[:3])
    return 0.2126 * red + 0.7152 * green + 0.0722 * blue


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
            context.set_default_timeout(10_000)
            page = context.new_page()
            page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
            page.on("pageerror", lambda error: page_errors.append(str(error)))

            # Log in.
            page.goto(f"{live_server.url}/admin/login/?next=/admin/django_workers/execution/")
            page.fill("#id_username", "viewer")
            page.fill("#id_password", "s3cret-pass")
            page.click("input[type=submit]")
            page.wait_for_url("**/admin/django_workers/execution/")

            # The list: five executions, newest first, badges, no add button.
            path = shot(page, "01-executions")
            workers = page.locator("#result_list tbody th.field-worker").all_inner_texts()
            expected = ["billing.Sync", f"report{XSS}", "mail.Sender", "mail.Sender", "outbox.Relay"]
            assert workers == expected, f"{workers} (see {path})"
            assert page.locator("#result_list .dw-status-error").first.inner_text() == "error", f"see {path}"
            badge = page.locator("#result_list .dw-status-success")
            assert badge.evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(46, 125, 50)", (
                f"the badge is styled by django_workers/admin.css (see {path})"
            )
            assert page.locator("a.addlink").count() == 0, f"see {path}"
            assert page.locator("#changelist-filter").is_visible(), f"see {path}"
            check_list_columns(page, path)

            # The dark theme: the same list, readable (light text on the dark background).
            page.emulate_media(color_scheme="dark")
            path = shot(page, "01-executions-dark")
            assert_readable(page.locator("#result_list td.field-error_display .dw-error").first, path)
            assert_readable(page.locator("#result_list td.field-node_display").first, path)
            page.emulate_media(color_scheme="light")

            # Filter by status: lost is offered, and so is error.
            page.locator('#changelist-filter a[href="?status__exact=lost"]').click()
            page.wait_for_url("**/?status__exact=lost")
            path = shot(page, "02-executions-lost")
            assert page.locator("#result_list tbody th.field-worker").all_inner_texts() == ["outbox.Relay"], path
            page.locator('#changelist-filter a[href="?status__exact=error"]').click()
            page.wait_for_url("**/?status__exact=error")
            path = shot(page, "02-executions-error")
            workers = page.locator("#result_list tbody th.field-worker").all_inner_texts()
            assert workers == ["billing.Sync", "mail.Sender"], f"{workers} (see {path})"

            # Open it: events oldest first, the error and traceback shown as text, no "History" button.
            page.locator("#result_list tbody th.field-worker a").first.click()
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
            assert page.locator(".historylink").count() == 0, f"no History button (see {path})"
            assert page.locator("ul.object-tools").count() == 0, f"see {path}"
            for field in ("created_display", "started_display", "finished_display"):
                text = page.locator(f".field-{field} .readonly").inner_text()
                assert TIME.match(text), f"{field}: {text!r} (see {path})"
            assert page.locator(".field-node .readonly").inner_text() == "web-1:4242", f"see {path}"
            response = page.goto(f"{live_server.url}/admin/django_workers/execution/{failed.pk}/history/")
            assert response is not None and response.status == 403

            # The nodes page.
            page.goto(f"{live_server.url}/admin/django_workers/node/?state=alive")
            path = shot(page, "04-nodes")
            assert page.locator("#result_list .dw-node-alive").inner_text() == "alive", f"see {path}"
            page.locator("#result_list tbody th.field-hostname a").click()
            page.wait_for_url("**/admin/django_workers/node/*/change/**")
            path = shot(page, "05-node-detail")
            assert page.locator(".field-state_display .dw-node-alive").is_visible(), f"see {path}"
            assert page.get_by_text("No events.").is_visible(), f"no node-level events (see {path})"
            assert page.locator(".historylink").count() == 0, f"no History button (see {path})"
            check_workers_list(page, path)
            page.emulate_media(color_scheme="dark")
            path = shot(page, "05-node-detail-dark")
            check_workers_list(page, path)
            assert_readable(page.locator("ul.dw-workers li").first, path)
        finally:
            context.close()

    assert dialogs == [], f"a dialog fired: {dialogs} (screenshots in {shots})"
    assert page_errors == [], f"JavaScript errors: {page_errors} (screenshots in {shots})"
