"""Control from the admin: the POST endpoint, its permission and CSRF guard, the actions, the requests log."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.admin.models import ADDITION, LogEntry
from django.contrib.auth.models import User
from django.contrib.messages import get_messages
from django.test import Client, override_settings
from django.urls import reverse
from django.utils import timezone

from django_workers.models import ControlRequest, Execution, ExecutionStatus, Node
from tests.control.conftest import W, logged_in, make_user
from tests.control.test_control_requests import failing_log_entries

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.urls("tests.control.urls"),
]

WORKERS = {"HISTORY": {"ENABLED": True, "HEARTBEAT_INTERVAL": 4}, "WORKERS": [f"{W}.Sleeper"]}


@pytest.fixture(autouse=True)
def history_on() -> Any:
    with override_settings(WORKERS=WORKERS):
        yield


def control_url() -> str:
    return reverse("admin:django_workers_control")


def csrf_client(user: User) -> tuple[Client, str]:
    """A client that enforces CSRF, logged in, with its token (from the admin index, which has a form)."""
    client = logged_in(user, csrf=True)
    assert client.get(reverse("admin:index")).status_code == 200
    return client, client.cookies["csrftoken"].value


def post(client: Client, token: str | None, **data: str) -> Any:
    if token is not None:
        data["csrfmiddlewaretoken"] = token
    return client.post(control_url(), data)


def messages_of(response: Any) -> list[tuple[str, str]]:
    return [(message.level_tag, str(message)) for message in get_messages(response.wsgi_request)]


def test_the_url_name() -> None:
    assert control_url() == "/admin/django_workers/controlrequest/control/"


def test_an_operator_records_a_request_and_goes_back(operator: User) -> None:
    client, token = csrf_client(operator)
    response = post(client, token, action="pause", worker="sleeper", node="", next="/admin/somewhere/?a=1")
    assert response.status_code == 302
    assert response["Location"] == "/admin/somewhere/?a=1"
    request = ControlRequest.objects.get()
    assert (request.action, request.worker, request.node_id, request.requested_by) == (
        "pause",
        "sleeper",
        None,
        "alice",
    )
    assert messages_of(response) == [
        (
            "success",
            f"Recorded request #{request.pk}: pause of worker 'sleeper' on every node. Running runworkers "
            "processes apply it within 4 s.",
        )
    ]
    entry = LogEntry.objects.get()
    assert (entry.user_id, entry.action_flag, entry.object_id) == (operator.pk, ADDITION, str(request.pk))
    assert entry.change_message == "Requested pause of worker 'sleeper' on every node."


def test_a_request_to_one_node(operator: User, make_node: Any) -> None:
    node = make_node(hostname="worker-1", workers=["sleeper"])
    client, token = csrf_client(operator)
    response = post(client, token, action="restart", worker="sleeper", node=str(node.pk), next="/admin/")
    assert response.status_code == 302
    assert ControlRequest.objects.get().node_id == node.pk
    assert f"restart of worker 'sleeper' on node worker-1:{node.pid}" in messages_of(response)[0][1]


@pytest.mark.parametrize("unsafe", ["https://evil.example/", "//evil.example/x", "javascript:alert(1)", ""])
def test_next_must_be_on_this_site(operator: User, unsafe: str) -> None:
    client, token = csrf_client(operator)
    response = post(client, token, action="resume", worker="sleeper", next=unsafe)
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:django_workers_controlrequest_changelist")


def test_an_impossible_request_is_an_error_message_and_nothing_is_recorded(operator: User) -> None:
    client, token = csrf_client(operator)
    missing = uuid.uuid4()
    cases = [
        ({"action": "stop", "worker": "sleeper"}, "unknown action 'stop': use one of restart, pause, resume"),
        ({"action": "pause", "worker": "sleepr"}, "unknown worker 'sleepr' (did you mean 'sleeper'?)"),
        ({"action": "pause", "worker": "sleeper", "node": str(missing)}, f"unknown node {missing}"),
        ({"action": "pause"}, "the worker name must be a non-empty str"),
    ]
    for data, message in cases:
        response = post(client, token, next="/admin/", **data)
        assert response.status_code == 302
        level, text = messages_of(response)[-1]  # the earlier ones were not shown yet: still stored
        assert level == "error"
        assert message in text
    assert not ControlRequest.objects.exists()
    assert not LogEntry.objects.exists()


def test_get_is_405(operator: User) -> None:
    response = logged_in(operator).get(control_url())
    assert response.status_code == 405
    assert response["Allow"] == "POST"


def test_view_only_staff_get_403_on_a_forged_post(viewer: User) -> None:
    client, token = csrf_client(viewer)
    response = post(client, token, action="restart", worker="sleeper", next="/admin/")
    assert response.status_code == 403
    assert not ControlRequest.objects.exists()
    assert not LogEntry.objects.exists()


def test_a_post_without_the_csrf_token_is_403_even_for_a_superuser() -> None:
    client, _ = csrf_client(make_user("root", superuser=True))
    response = post(client, None, action="restart", worker="sleeper", next="/admin/")
    assert response.status_code == 403
    assert b"CSRF" in response.content
    assert not ControlRequest.objects.exists()


def test_outside_the_admin_nobody_controls() -> None:
    anonymous = Client()
    response = anonymous.post(control_url(), {"action": "pause", "worker": "sleeper"})
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))
    not_staff = logged_in(make_user("bob", staff=False, perms=("control_workers",)))
    response = not_staff.post(control_url(), {"action": "pause", "worker": "sleeper"})
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))
    assert not ControlRequest.objects.exists()


# -- the requests log ------------------------------------------------------------------------------------


def test_the_requests_log_is_read_only(viewer: User, make_node: Any) -> None:
    node = make_node(hostname="worker-1", workers=["sleeper"])
    ControlRequest.objects.create(
        action="pause", worker="sleeper", node=None, requested_by="alice", requested_at=timezone.now()
    )
    one = ControlRequest.objects.create(
        action="restart", worker="sleeper", node=node, requested_by="<b>bob</b>", requested_at=timezone.now()
    )
    client = logged_in(viewer)
    page = client.get(reverse("admin:django_workers_controlrequest_changelist"))
    assert page.status_code == 200
    html = page.content.decode()
    assert "every node" in html
    assert f"worker-1:{node.pid}" in html
    assert "&lt;b&gt;bob&lt;/b&gt;" in html and "<b>bob</b>" not in html
    assert 'class="addlink"' not in html
    assert 'name="action"' not in html  # no actions (no delete_selected)
    detail = client.get(reverse("admin:django_workers_controlrequest_change", args=[one.pk]))
    assert detail.status_code == 200
    assert 'name="_save"' not in detail.content.decode()
    assert client.post(reverse("admin:django_workers_controlrequest_add"), {}).status_code == 403
    delete = reverse("admin:django_workers_controlrequest_delete", args=[one.pk])
    assert client.post(delete, {"post": "yes"}).status_code == 403
    assert ControlRequest.objects.count() == 2


# -- the actions of the executions list ------------------------------------------------------------------


def execution(node: Node, worker: str) -> Execution:
    now = timezone.now()
    return Execution.objects.create(
        id=uuid.uuid4(), node=node, worker=worker, attempt=1, max_attempts=1, status=ExecutionStatus.ERROR,
        created_at=now, started_at=now,
    )  # fmt: skip


def test_only_users_with_the_permission_see_the_actions(operator: User, viewer: User, make_node: Any) -> None:
    execution(make_node(), "alpha")
    changelist = reverse("admin:django_workers_execution_changelist")
    html = logged_in(operator).get(changelist).content.decode()
    for name in ("restart_workers", "pause_workers", "resume_workers"):
        assert f'value="{name}"' in html
    assert "Restart the selected workers (on their nodes)" in html
    html = logged_in(viewer).get(changelist).content.decode()
    assert "restart_workers" not in html
    assert 'name="action"' not in html  # no permission, no buttons


def test_an_action_records_one_request_per_worker_and_node(operator: User, make_node: Any) -> None:
    first = make_node(hostname="worker-1", workers=["alpha", "beta"])
    second = make_node(hostname="worker-2", workers=["alpha"])
    stopped = make_node(hostname="gone", workers=["alpha"], stopped_at=timezone.now())
    selected = [
        execution(first, "alpha"),
        execution(first, "alpha"),  # the same pair again
        execution(first, "beta"),
        execution(second, "alpha"),
        execution(stopped, "alpha"),
    ]
    client, token = csrf_client(operator)
    response = client.post(
        reverse("admin:django_workers_execution_changelist"),
        {
            "action": "restart_workers",
            "_selected_action": [str(e.pk) for e in selected],
            "index": "0",
            "csrfmiddlewaretoken": token,
        },
    )
    assert response.status_code == 302
    pairs = sorted(ControlRequest.objects.values_list("action", "worker", "node_id", "requested_by"), key=str)
    assert pairs == sorted(
        [
            ("restart", "alpha", first.pk, "alice"),
            ("restart", "beta", first.pk, "alice"),
            ("restart", "alpha", second.pk, "alice"),
        ],
        key=str,
    )
    assert LogEntry.objects.filter(user=operator).count() == 3
    messages = messages_of(response)
    assert messages[0][0] == "success"
    assert messages[0][1].startswith("Recorded 3 request(s): restart of worker 'alpha' on node worker-1:")
    assert messages[0][1].endswith("Running runworkers processes apply them within 4 s.")
    assert messages[1][0] == "error"
    assert messages[1][1].startswith(f"Not recorded: node gone:{stopped.pid} ({stopped.pk}) stopped at ")


def test_an_action_on_a_stale_node_is_refused_once_for_all_its_workers(operator: User, make_node: Any) -> None:
    live = make_node(hostname="worker-1", workers=["alpha"])
    killed = make_node(hostname="killed", workers=["alpha", "beta"], last_heartbeat=timezone.now() - timedelta(hours=1))
    selected = [execution(live, "alpha"), execution(killed, "alpha"), execution(killed, "beta")]
    client, token = csrf_client(operator)
    response = client.post(
        reverse("admin:django_workers_execution_changelist"),
        {
            "action": "pause_workers",
            "_selected_action": [str(e.pk) for e in selected],
            "index": "0",
            "csrfmiddlewaretoken": token,
        },
    )
    assert response.status_code == 302
    assert list(ControlRequest.objects.values_list("worker", "node_id")) == [("alpha", live.pk)]
    messages = messages_of(response)
    assert [level for level, _ in messages] == ["success", "error"]
    problem = messages[1][1]
    assert re.match(
        rf"Not recorded for workers 'alpha', 'beta': node killed:{killed.pid} \({killed.pk}\) has not sent a "
        r"heartbeat for 360\d s \(more than 12 s\): it is stale",
        problem,
    ), problem
    assert "Send the request to every node instead" in problem


def test_a_post_whose_log_entry_fails_says_not_recorded_and_records_nothing(
    operator: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, token = csrf_client(operator)
    failing_log_entries(monkeypatch)
    response = post(client, token, action="pause", worker="sleeper", next="/admin/")
    assert response.status_code == 302
    [(level, text)] = messages_of(response)
    assert level == "error"
    assert text.startswith("The request was not recorded: the database is unreachable or not migrated (")
    assert not ControlRequest.objects.exists()


def test_a_post_whose_log_entry_fails_in_another_database_is_recorded(
    operator: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, token = csrf_client(operator)
    failing_log_entries(monkeypatch)
    with override_settings(DATABASE_ROUTERS=["tests.control.test_control_requests.LogEntriesElsewhere"]):
        response = post(client, token, action="pause", worker="sleeper", next="/admin/")
    assert response.status_code == 302
    request = ControlRequest.objects.get()
    assert messages_of(response) == [
        (
            "success",
            f"Recorded request #{request.pk}: pause of worker 'sleeper' on every node. Running runworkers "
            "processes apply it within 4 s.",
        )
    ]


def test_a_forged_action_post_by_view_only_staff_records_nothing(viewer: User, make_node: Any) -> None:
    selected = execution(make_node(), "alpha")
    client, token = csrf_client(viewer)
    response = client.post(
        reverse("admin:django_workers_execution_changelist"),
        {"action": "pause_workers", "_selected_action": [str(selected.pk)], "index": "0", "csrfmiddlewaretoken": token},
    )
    assert response.status_code in (200, 302)
    assert not ControlRequest.objects.exists()
    assert not LogEntry.objects.exists()
