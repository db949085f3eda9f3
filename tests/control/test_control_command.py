"""``manage.py controlworkers``: what it records and says, in process and as a real subprocess (exit codes)."""

from __future__ import annotations

import socket
from datetime import timedelta
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.contrib.admin.models import ADDITION, LogEntry
from django.core.management import CommandError, call_command
from django.test import override_settings
from django.utils import timezone

from django_workers.control import process_identity
from django_workers.models import ControlRequest
from tests.control.conftest import (
    OPERATOR_PERMISSIONS,
    POSTGRESQL,
    VIEWER_PERMISSIONS,
    Completed,
    W,
    control_workers,
    make_user,
)
from tests.control.test_control_requests import failing_log_entries
from tests.support import collect_logs, free_port

HISTORY_ON = {"HISTORY": {"ENABLED": True, "HEARTBEAT_INTERVAL": 2.5}, "WORKERS": [f"{W}.Sleeper", f"{W}.OneShot"]}


def controlworkers(*args: str) -> str:
    out = StringIO()
    call_command("controlworkers", *args, stdout=out)
    return out.getvalue()


@pytest.mark.django_db
@override_settings(WORKERS=HISTORY_ON)
def test_a_request_to_every_node_is_recorded_and_said() -> None:
    output = controlworkers("pause", "sleeper")
    request = ControlRequest.objects.get()
    assert (request.action, request.worker, request.node_id) == ("pause", "sleeper", None)
    assert request.requested_by == f"{process_identity()} (controlworkers)"
    assert output == (
        f"Recorded control request #{request.pk}: pause of worker 'sleeper' on every node, requested by "
        f"{request.requested_by} at {request.requested_at:%Y-%m-%d %H:%M:%S %Z}. The runworkers processes apply "
        f"it within 2.5 s (the heartbeat interval).\n"
    )
    assert not LogEntry.objects.exists()  # no --user, no LogEntry


@pytest.mark.django_db
@override_settings(WORKERS=HISTORY_ON)
def test_a_request_to_one_node(make_node: Any) -> None:
    node = make_node(hostname="worker-1", workers=["sleeper"])
    output = controlworkers("restart", "sleeper", "--node", str(node.pk))
    assert f"restart of worker 'sleeper' on node worker-1:{node.pid} ({node.pk})" in output
    controlworkers("resume", "sleeper", "--node", f"worker-1:{node.pid}")
    assert list(ControlRequest.objects.order_by("id").values_list("action", "node_id")) == [
        ("restart", node.pk),
        ("resume", node.pk),
    ]


@pytest.mark.django_db(transaction=True)
@override_settings(WORKERS=HISTORY_ON)
def test_user_attributes_the_request_and_writes_a_log_entry() -> None:
    alice = make_user("alice", perms=OPERATOR_PERMISSIONS)
    output = controlworkers("resume", "sleeper", "--user", "alice")
    request = ControlRequest.objects.get()
    assert request.requested_by == "alice"
    assert "requested by alice at" in output
    entry = LogEntry.objects.get()
    assert (entry.user_id, entry.action_flag, entry.object_id) == (alice.pk, ADDITION, str(request.pk))
    assert entry.change_message == "Requested resume of worker 'sleeper' on every node."


@pytest.mark.django_db(transaction=True)
@override_settings(WORKERS=HISTORY_ON)
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("pause", "sleepr"), "unknown worker 'sleepr' (did you mean 'sleeper'?)"),
        (("pause", "sleeper", "--node", "not-a-node"), "node 'not-a-node' is neither a node id (a UUID) nor host:pid"),
        (
            ("pause", "sleeper", "--node", "00000000-0000-0000-0000-000000000000"),
            "unknown node 00000000-0000-0000-0000-000000000000",
        ),
        (("pause", "sleeper", "--user", "nobody"), "unknown user 'nobody': give the username of an existing"),
        (("pause", "sleeper", "--user", "victor"), "user 'victor' may not control workers"),
    ],
)
def test_a_request_that_cannot_be_recorded_is_a_command_error(args: tuple[str, ...], message: str) -> None:
    make_user("victor", perms=VIEWER_PERMISSIONS)
    with pytest.raises(CommandError) as caught:
        controlworkers(*args)
    assert message in str(caught.value)
    assert caught.value.returncode == 1
    assert not ControlRequest.objects.exists()


@pytest.mark.django_db
@override_settings(WORKERS=HISTORY_ON)  # heartbeat 2.5 s: stale after 7.5 s without one
def test_a_stale_node_is_a_command_error(make_node: Any) -> None:
    killed = make_node(hostname="worker-9", workers=["sleeper"], last_heartbeat=timezone.now() - timedelta(minutes=1))
    for designated in (str(killed.pk), f"worker-9:{killed.pid}"):
        with pytest.raises(CommandError) as caught:
            controlworkers("restart", "sleeper", "--node", designated)
        assert caught.value.returncode == 1
        message = str(caught.value)
        assert message.startswith(f"node worker-9:{killed.pid} ({killed.pk}) has not sent a heartbeat for ")
        assert "it is stale (killed, or its host is down?)" in message
        assert "Send the request to every node instead (leave the node out)" in message
    assert not ControlRequest.objects.exists()


@pytest.mark.django_db(transaction=True)
@override_settings(WORKERS=HISTORY_ON)
def test_a_failed_log_entry_in_the_same_database_is_not_recorded_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    make_user("alice", perms=OPERATOR_PERMISSIONS)
    failing_log_entries(monkeypatch)
    with pytest.raises(CommandError) as caught:
        controlworkers("pause", "sleeper", "--user", "alice")
    assert caught.value.returncode == 1
    assert str(caught.value).startswith("cannot record the request: the database is unreachable or not migrated (")
    assert not ControlRequest.objects.exists()


@pytest.mark.django_db(transaction=True)
@override_settings(WORKERS=HISTORY_ON, DATABASE_ROUTERS=["tests.control.test_control_requests.LogEntriesElsewhere"])
def test_a_failed_log_entry_in_another_database_still_exits_0(monkeypatch: pytest.MonkeyPatch) -> None:
    make_user("alice", perms=OPERATOR_PERMISSIONS)
    failing_log_entries(monkeypatch)
    with collect_logs() as logs:
        output = controlworkers("pause", "sleeper", "--user", "alice")
    request = ControlRequest.objects.get()
    assert output.startswith(f"Recorded control request #{request.pk}: pause of worker 'sleeper' on every node")
    assert logs.matching(f"control request #{request.pk} is recorded, but its admin LogEntry could not be written")


@pytest.mark.django_db
@override_settings(WORKERS={"HISTORY": {"ENABLED": False}, "WORKERS": [f"{W}.Sleeper"]})
def test_history_disabled_is_a_command_error() -> None:
    with pytest.raises(CommandError, match=r"history is disabled"):
        controlworkers("pause", "sleeper")


def test_an_unknown_action_is_a_usage_error() -> None:
    with pytest.raises(CommandError, match=r"argument action: invalid choice: 'stop'"):
        controlworkers("stop", "sleeper")


# -- the real command ------------------------------------------------------------------------------------


def assert_clean_failure(result: Completed, message: str) -> None:
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    assert result.stderr.startswith("CommandError: "), result.stderr
    assert message in result.stderr, result.stderr


@pytest.mark.slow
def test_the_command_exits_0_with_what_it_recorded(transactional_db: None, controlworkers: Any) -> None:
    result = controlworkers("pause", "sleeper", workers=control_workers([f"{W}.Sleeper"], heartbeat=0.5))
    assert result.returncode == 0, result
    request = ControlRequest.objects.get()
    assert result.stdout.startswith(f"Recorded control request #{request.pk}: pause of worker 'sleeper' on every node")
    assert result.stdout.rstrip().endswith("The runworkers processes apply it within 0.5 s (the heartbeat interval).")
    assert result.stderr == ""
    assert request.requested_by.endswith(f"@{socket.gethostname()} (controlworkers)")


@pytest.mark.slow
def test_the_command_exits_1_for_an_unknown_worker_or_node(transactional_db: None, controlworkers: Any) -> None:
    workers = control_workers([f"{W}.Sleeper"])
    assert_clean_failure(controlworkers("restart", "nope", workers=workers), "unknown worker 'nope'")
    node = "11111111-1111-1111-1111-111111111111"
    assert_clean_failure(controlworkers("restart", "sleeper", "--node", node, workers=workers), f"unknown node {node}")
    assert not ControlRequest.objects.exists()


@pytest.mark.slow
def test_the_command_exits_1_when_history_is_disabled(transactional_db: None, controlworkers: Any) -> None:
    workers = {"WORKERS": [f"{W}.Sleeper"]}
    assert_clean_failure(controlworkers("restart", "sleeper", workers=workers), "history is disabled")


@pytest.mark.slow
def test_the_command_exits_1_when_the_database_is_unreachable(controlworkers: Any, tmp_path: Path) -> None:
    if POSTGRESQL:
        env = {"DATABASE_URL": f"postgres://postgres@127.0.0.1:{free_port()}/nothing"}
    else:
        env = {"HEALTH_TEST_DB_NAME": str(tmp_path / "missing-directory" / "db.sqlite3")}
    result = controlworkers("pause", "sleeper", workers=control_workers([f"{W}.Sleeper"]), env=env)
    assert_clean_failure(result, "cannot record the request: the database is unreachable or not migrated (")
    assert result.stderr.rstrip().endswith("Check settings.DATABASES and run manage.py migrate.")


@pytest.mark.slow
@pytest.mark.skipif(
    POSTGRESQL,
    reason="an empty SQLite file is a database without tables; the PostgreSQL pass tests the unreachable server",
)
def test_the_command_exits_1_when_the_database_is_not_migrated(controlworkers: Any, tmp_path: Path) -> None:
    empty = tmp_path / "empty.sqlite3"
    empty.touch()
    result = controlworkers(
        "pause", "sleeper", workers=control_workers([f"{W}.Sleeper"]), env={"HEALTH_TEST_DB_NAME": str(empty)}
    )
    assert_clean_failure(result, "the database is unreachable or not migrated (no such table")
