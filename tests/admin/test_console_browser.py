"""The operator console end to end: a real ``runworkers``, the overview in a real browser, Restart pressed.

A ``runworkers`` subprocess (history on, a heartbeat of 0.5 s: the poll of control requests; on
PostgreSQL a ``NOTIFY`` wakes it at once) runs a long-running worker (``sleeper``, looping on
``ctx.sleep``) and a one-shot worker on the test database, which the live server reads too.
Playwright drives Debian's Chromium (headless; never a downloaded browser):

- an operator (``view_execution``, ``view_node``, ``control_workers``) logs in, opens the overview,
  finds the sleeper's row for the subprocess's node, reads its timeline (a bucket's ``<title>``
  counts the started attempt), presses Restart on that row, and reloads until the row shows a fresh
  attempt ``1/2`` that began after the press; the database then holds a new execution for the
  worker, and the executions list and pages show both: the cancelled attempt with its event
  ``restart requested by olga`` and the new one. Screenshots of the overview, light and dark:
  ``/tmp/h4-console-light.png`` and ``/tmp/h4-console-dark.png``;
- view-only staff see no control button, and a POST forged with a valid CSRF token gets 403 and
  records nothing.

Every wait has a deadline. The subprocess gets SIGTERM at teardown and must exit with 0.
"""

from __future__ import annotations

import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission, User
from django.db import connection, connections
from django.test import override_settings
from django.urls import reverse
from playwright.sync_api import BrowserContext, Locator, Page, Playwright, sync_playwright

from django_workers.models import ControlRequest, Execution, ExecutionEvent, ExecutionStatus, Node, WorkerState
from tests.admin.test_admin_browser import CHROMIUM, CHROMIUM_ARGS
from tests.control.conftest import POSTGRESQL, SETTINGS, W, on_test_database
from tests.support import RunworkersProcess, StartRunworkers, wait_for

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)"),
]

SHOTS = Path("/tmp")
#: The heartbeat interval of the subprocess: the longest a request waits for the poll on SQLite.
HEARTBEAT = 0.5
#: Generous deadlines (seconds): the machine is small and shared.
DEADLINE = 30.0
PASSWORD = "s3cret-pass"
OPERATOR = "olga"
VIEWER = "victor"
WORKER = "sleeper"

#: The WORKERS setting of the subprocess and of the web process (so both agree on the history).
#: ORPHAN_GRACE is long: a busy machine must not make the node look stale (no buttons on a stale node).
CONSOLE_WORKERS: dict[str, Any] = {
    "MAX_EXECUTIONS_ATTEMPTS": 2,
    "RESTART_BACKOFF": {"INITIAL": 0.05, "MAXIMUM": 0.05},
    "STOP_TIMEOUT": 10,
    "HISTORY": {"ENABLED": True, "HEARTBEAT_INTERVAL": HEARTBEAT, "ORPHAN_GRACE": 20.0},
    "WORKERS": [f"{W}.Sleeper", f"{W}.OneShot"],
}

COUNTS = re.compile(r"(\d+) started, (\d+) succeeded, (\d+) failed(?:, (\d+) lost)?, (\d+) restarts?")

T = TypeVar("T")


# -- the subprocess and the users ----------------------------------------------------------------------


@dataclass(frozen=True)
class Console:
    """The running ``runworkers`` and what the test knows of it before the browser opens."""

    process: RunworkersProcess
    node: Node
    execution_id: str  # the sleeper's current execution, as its state row says
    url: str  # the live server

    @property
    def label(self) -> str:
        return f"{self.node.hostname}:{self.node.pid}"


def staff(username: str, *codenames: str) -> User:
    user = User.objects.create_user(username, password=PASSWORD, is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="django_workers", codename__in=codenames)
    )
    return user


@pytest.fixture
def console(transactional_db: None, live_server: Any, start: StartRunworkers) -> Iterator[Console]:
    """``runworkers`` on the test database, once its node is recorded and the sleeper's attempt stored.

    Requested after ``transactional_db`` (and ``start`` after it): the process is gone before the
    tables are flushed. Teardown sends SIGTERM and requires exit status 0 (``start`` kills what is left).
    """
    staff(OPERATOR, "view_execution", "view_node", "control_workers")
    staff(VIEWER, "view_execution", "view_node")
    with override_settings(WORKERS=CONSOLE_WORKERS):
        began = time.monotonic()
        process = start(workers=CONSOLE_WORKERS, env=on_test_database(), settings=SETTINGS)
        process.expect(r"runworkers is running", timeout=DEADLINE)
        if POSTGRESQL:
            process.expect(r"control requests: listening on PostgreSQL channel", timeout=DEADLINE)
        process.expect(r"sleeper is running", timeout=DEADLINE)
        wait_for(
            lambda: Node.objects.filter(pid=process.pid, stopped_at__isnull=True).exists(),
            timeout=DEADLINE,
            interval=0.05,
            what="the node row of the runworkers process",
        )
        node = Node.objects.get(pid=process.pid, stopped_at__isnull=True)
        wait_for(
            lambda: (
                WorkerState.objects.filter(
                    node=node, worker=WORKER, status=ExecutionStatus.RUNNING, execution_id__isnull=False
                ).exists()
                and Execution.objects.filter(node=node, worker=WORKER).exists()
            ),
            timeout=DEADLINE,
            interval=0.05,
            what="the sleeper's running state and execution stored",
        )
        state = WorkerState.objects.get(node=node, worker=WORKER)
        print(
            f"\n[{connection.vendor}] runworkers {node.hostname}:{node.pid} ready in {time.monotonic() - began:.2f} s"
        )
        yield Console(process=process, node=node, execution_id=str(state.execution_id), url=live_server.url)

        process.send(signal.SIGTERM)
        code = process.wait(timeout=DEADLINE)
        assert code == 0, f"runworkers exited with {code} after SIGTERM.\n--- stderr ---\n{process.stderr}"


# -- helpers -------------------------------------------------------------------------------------------


def off_the_loop(query: Callable[[], T]) -> T:
    """Run ``query`` (ORM code) in a thread of its own, which closes its connections.

    Inside ``sync_playwright()`` an event loop runs in this thread and Django refuses the ORM here.
    """
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = query()
        except BaseException as exc:  # handed to the test thread
            outcome["error"] = exc
        finally:
            connections.close_all()

    thread = threading.Thread(target=run, name="console-test-query")
    thread.start()
    thread.join(DEADLINE)
    if thread.is_alive():
        pytest.fail(f"a database query did not return within {DEADLINE} s")
    if "error" in outcome:
        raise outcome["error"]
    value: T = outcome["value"]
    return value


def wait_in_database(page: Page, query: Callable[[], T | None], what: str, timeout: float = DEADLINE) -> T:
    """Run ``query`` (off the loop) until it returns something; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while (found := off_the_loop(query)) is None:
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout} s")
        page.wait_for_timeout(100)  # the polling interval, not a synchronisation
    return found


def poll(page: Page, check: Callable[[], str | None], what: str, timeout: float = DEADLINE) -> float:
    """Reload ``page`` until ``check()`` returns None (else it says what it sees); the seconds it took."""
    began = time.monotonic()
    deadline = began + timeout
    while True:
        seen = check()
        if seen is None:
            return time.monotonic() - began
        if time.monotonic() > deadline:
            path = SHOTS / "h4-console-timeout.png"
            page.screenshot(path=str(path), full_page=True)
            pytest.fail(f"{what}: not within {timeout} s; last seen: {seen} (see {path})")
        page.wait_for_timeout(250)  # the polling interval, not a synchronisation
        page.reload()


def launch(playwright: Playwright, tmp_path: Path, name: str) -> BrowserContext:
    context = playwright.chromium.launch_persistent_context(
        str(tmp_path / f"chromium-{name}"),  # a fresh user-data dir
        executable_path=str(CHROMIUM),
        args=CHROMIUM_ARGS,
        headless=True,
        viewport={"width": 1440, "height": 900},
    )
    context.set_default_timeout(DEADLINE * 1000)
    return context


def log_in(page: Page, url: str, username: str) -> None:
    overview = reverse("admin:django_workers_dashboard")
    page.goto(f"{url}/admin/login/?next={overview}")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(f"**{overview}")


def sleeper_row(page: Page, console: Console) -> Locator:
    """The sleeper's row for the subprocess's node."""
    section = page.locator(f'section.dw-worker[data-worker="{WORKER}"]')
    return section.locator("tr.dw-row").filter(has=page.locator("td.dw-node", has_text=console.label))


def row_state(row: Locator) -> tuple[str, str, datetime | None]:
    """Status, attempt and since of a row, as the page shows them (text, not rendered case)."""
    status = (row.locator("td.dw-status .dw-badge").text_content() or "").strip()
    attempt = (row.locator("td.dw-attempt").text_content() or "").strip()
    since = row.locator("td.dw-since time")
    value = since.get_attribute("datetime") if since.count() else None
    return status, attempt, datetime.fromisoformat(value) if value else None


def timeline_counts(page: Page) -> tuple[list[str], tuple[int, int, int, int, int]]:
    """The sleeper's bucket tooltips, and the day's sums: started, succeeded, failed, lost, restarts."""
    titles = page.locator(f'section.dw-worker[data-worker="{WORKER}"] rect.dw-bucket title').all_text_contents()
    sums = [0] * 5
    for title in titles:
        match = COUNTS.search(title)
        if match:
            for i, value in enumerate(match.groups()):
                sums[i] += int(value or 0)
    return titles, (sums[0], sums[1], sums[2], sums[3], sums[4])


# -- the tests -----------------------------------------------------------------------------------------


def test_an_operator_restarts_a_running_worker_from_the_overview(console: Console, tmp_path: Path) -> None:
    dialogs: list[str] = []
    page_errors: list[str] = []
    old_id = console.execution_id

    with sync_playwright() as playwright:
        context = launch(playwright, tmp_path, "operator")
        try:
            page = context.new_page()
            page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
            page.on("pageerror", lambda error: page_errors.append(str(error)))
            log_in(page, console.url, OPERATOR)
            row = sleeper_row(page, console)

            # The row of the subprocess's node: alive, running its first attempt; the timeline counts it.
            def first_attempt_shown() -> str | None:
                _, (started, *_rest) = timeline_counts(page)
                seen = (row.count(), row_state(row) if row.count() == 1 else None, started)
                ok = seen[0] == 1 and seen[1] is not None and seen[1][:2] == ("running", "1/2") and started == 1
                return None if ok else f"rows, (status, attempt, since), started in the timeline: {seen}"

            poll(page, first_attempt_shown, "the sleeper's first attempt on the overview")
            assert row.locator("td.dw-node .dw-node-alive").count() == 1, "the node is shown alive"
            _, _, old_since = row_state(row)
            started_bucket = page.locator(
                f'section.dw-worker[data-worker="{WORKER}"] rect.dw-bucket-started title'
            ).all_text_contents()
            assert len(started_bucket) == 1, f"one bucket of started (not ended) attempts: {started_bucket}"
            assert "1 started, 0 succeeded, 0 failed, 0 restarts" in started_bucket[0], started_bucket
            print(f"timeline before: {started_bucket[0]!r}; execution {old_id} since {old_since}")

            # Restart on that node.
            pressed = datetime.now(UTC)
            began = time.monotonic()
            row.get_by_role("button", name="Restart").click()
            page.wait_for_url(f"**{reverse('admin:django_workers_dashboard')}**")
            message = page.locator("ul.messagelist li").first.inner_text()
            assert "Recorded request #" in message and WORKER in message, message
            assert page.locator("ul.messagelist li.error").count() == 0, message

            # The overview shows a fresh attempt: 1/2 again, since a moment after the press.
            def new_attempt_shown() -> str | None:
                seen = row_state(row) if row.count() == 1 else None
                ok = seen is not None and seen[:2] == ("running", "1/2") and seen[2] is not None and seen[2] > pressed
                return None if ok else f"(status, attempt, since) {seen}; pressed at {pressed}"

            poll(page, new_attempt_shown, "a new attempt of the sleeper on the overview")
            shown_after = time.monotonic() - began
            print(f"the new attempt was on the overview {shown_after:.2f} s after the press")

            # The database: a new execution, and the cancelled one carries the operator's request.
            def new_execution() -> tuple[str, list[str]] | None:
                fresh = (
                    Execution.objects.filter(node=console.node, worker=WORKER, attempt=1, created_at__gt=pressed)
                    .exclude(pk=old_id)
                    .first()
                )
                events = list(
                    ExecutionEvent.objects.filter(execution_id=old_id)
                    .order_by("timestamp", "id")
                    .values_list("message", flat=True)
                )
                asked = f"restart requested by {OPERATOR}" in events
                return (str(fresh.pk), events) if fresh is not None and asked else None

            new_id, old_events = wait_in_database(
                page, new_execution, f"a new execution of {WORKER} and the request's event on {old_id}"
            )
            print(f"restart: execution {old_id} -> {new_id}, stored {time.monotonic() - began:.2f} s after the press")
            assert f"restart requested by {OPERATOR}" in old_events, old_events
            assert old_events.index(f"restart requested by {OPERATOR}") < old_events.index(
                "stopping execution attempt 1/2 with success"
            ), old_events

            # The executions list shows both attempts, newest first; their pages show the events.
            page.goto(f"{console.url}{reverse('admin:django_workers_execution_changelist')}?worker={WORKER}")
            links = page.locator("#result_list tbody th.field-worker a")
            hrefs = [links.nth(i).get_attribute("href") or "" for i in range(links.count())]
            assert len(hrefs) == 2 and new_id in hrefs[0] and old_id in hrefs[1], hrefs
            page.goto(f"{console.url}{reverse('admin:django_workers_execution_change', args=[old_id])}")
            events = page.locator(".dw-events td.field-message").all_inner_texts()
            assert f"restart requested by {OPERATOR}" in events, events
            page.goto(f"{console.url}{reverse('admin:django_workers_execution_change', args=[new_id])}")
            events = page.locator(".dw-events td.field-message").all_inner_texts()
            assert "starting execution attempt 1/2" in events, events

            # Back on the overview: the timeline counts the restart once the tallies are written.
            page.goto(f"{console.url}{reverse('admin:django_workers_dashboard')}")

            def restart_counted() -> str | None:
                titles, sums = timeline_counts(page)
                return (
                    None
                    if sums == (2, 1, 0, 0, 1)
                    else f"sums {sums}; titles {[t for t in titles if COUNTS.search(t)]}"
                )

            poll(page, restart_counted, "the restart in the sleeper's timeline")
            status, attempt, since = row_state(row)
            assert (status, attempt) == ("running", "1/2") and since is not None and since > pressed
            restarts = page.locator(f'section.dw-worker[data-worker="{WORKER}"] .dw-restarts-hour').first
            assert (restarts.text_content() or "").strip() == "1", "the header counts one restart in the hour"

            page.emulate_media(color_scheme="light")
            page.screenshot(path=str(SHOTS / "h4-console-light.png"), full_page=True)
            page.emulate_media(color_scheme="dark")
            page.reload()
            page.screenshot(path=str(SHOTS / "h4-console-dark.png"), full_page=True)
            background = page.evaluate("getComputedStyle(document.body).backgroundColor")
            assert background == "rgb(18, 18, 18)", f"{background}: the admin's dark theme"
        finally:
            context.close()

    assert dialogs == [], dialogs
    assert page_errors == [], page_errors
    request = ControlRequest.objects.get()
    assert (request.action, request.worker, request.node_id, request.requested_by) == (
        "restart",
        WORKER,
        console.node.pk,
        OPERATOR,
    )
    assert LogEntry.objects.filter(user__username=OPERATOR, object_id=str(request.pk)).count() == 1
    state = WorkerState.objects.get(node=console.node, worker=WORKER)
    assert str(state.execution_id) == new_id != old_id
    # The subprocess's log: its pickup applied this request to this node, and the pool recorded it.
    console.process.expect(
        rf"control request #{request.pk}: restart worker '{WORKER}' on this node, requested by {OPERATOR}",
        timeout=DEADLINE,
    )
    console.process.expect(rf"\[{WORKER} {old_id}\] restart requested by {OPERATOR}$", timeout=DEADLINE)


def test_view_only_staff_see_no_control_and_a_forged_post_is_refused(console: Console, tmp_path: Path) -> None:
    control_url = f"{console.url}{reverse('admin:django_workers_control')}"
    overview_url = f"{console.url}{reverse('admin:django_workers_dashboard')}"

    with sync_playwright() as playwright:
        context = launch(playwright, tmp_path, "viewer")
        try:
            page = context.new_page()
            log_in(page, console.url, VIEWER)
            row = sleeper_row(page, console)
            poll(page, lambda: None if row.count() == 1 else "no row yet", "the sleeper's row on the overview")
            assert row_state(row)[:2] == ("running", "1/2")
            assert page.get_by_role("button").filter(has_text=re.compile("Restart|Pause|Resume")).count() == 0
            assert page.locator("form.dw-control").count() == 0
            assert page.locator("th", has_text="Control").count() == 0

            token = next(cookie["value"] for cookie in context.cookies() if cookie["name"] == "csrftoken")
            form = {"action": "restart", "worker": WORKER, "node": str(console.node.pk), "next": overview_url}
            forged = page.request.post(
                control_url,
                form={"csrfmiddlewaretoken": token, **form},
                headers={"Referer": overview_url},
                max_redirects=0,
            )
            body = forged.text()
            assert forged.status == 403, (forged.status, body[:500])
            assert "CSRF verification failed" not in body, "refused for the permission, not for the token"
            # The same post without a valid token is refused by the CSRF check: the token above was valid.
            tokenless = page.request.post(control_url, form=form, headers={"Referer": overview_url}, max_redirects=0)
            assert tokenless.status == 403 and "CSRF verification failed" in tokenless.text()
        finally:
            context.close()

    assert not ControlRequest.objects.exists()
    assert not LogEntry.objects.exists()
    state = WorkerState.objects.get(node=console.node, worker=WORKER)
    assert str(state.execution_id) == console.execution_id, "the worker was not restarted"
