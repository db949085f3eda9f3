"""submit(): what a control request must be to be recorded, what it records, and the NOTIFY on PostgreSQL."""

from __future__ import annotations

import logging
import re
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.admin.models import ADDITION, LogEntry
from django.contrib.contenttypes.models import ContentType
from django.db import DatabaseError, connection
from django.db.models.functions import Now
from django.test import override_settings
from django.utils import timezone

from django_workers.control import CHANNEL, ControlError, describe_request, process_identity, submit
from django_workers.models import ControlRequest, Execution, Node, WorkerState
from tests.control.conftest import OPERATOR_PERMISSIONS, VIEWER_PERMISSIONS, W, make_user, needs_postgresql
from tests.support import collect_logs

pytestmark = pytest.mark.django_db

HISTORY_ON = {"HISTORY": {"ENABLED": True}, "WORKERS": [f"{W}.Sleeper"]}


def database_now() -> Any:
    return Node.objects.annotate(now=Now()).values_list("now", flat=True).first() or timezone.now()


@override_settings(WORKERS=HISTORY_ON)
def test_a_request_to_every_node_is_recorded_with_the_database_clock_and_the_process_as_author() -> None:
    before = timezone.now()
    request = submit("pause", "sleeper")
    stored = ControlRequest.objects.get()
    assert stored.pk == request.pk
    assert (stored.action, stored.worker, stored.node_id) == ("pause", "sleeper", None)
    assert stored.requested_by == process_identity()
    assert "@" in stored.requested_by
    assert request.requested_at == stored.requested_at  # read back: not the Now() expression
    assert before - timedelta(seconds=5) <= stored.requested_at <= timezone.now() + timedelta(seconds=5)
    assert describe_request(stored) == "pause of worker 'sleeper' on every node"
    assert str(stored) == f"pause sleeper on every node by {process_identity()}"
    assert not LogEntry.objects.exists()  # no user, no LogEntry


@override_settings(WORKERS=HISTORY_ON)
def test_a_request_to_one_node_by_id_text_or_host_pid(make_node: Any) -> None:
    node = make_node(hostname="worker-1", workers=["sleeper"])
    by_object = submit("restart", "sleeper", node, requested_by="ops")
    by_uuid = submit("restart", "sleeper", node.pk, requested_by="ops")
    by_text = submit("resume", "sleeper", f"  {node.pk}  ", requested_by="ops")
    by_host_pid = submit("pause", "sleeper", f"worker-1:{node.pid}", requested_by="ops")
    assert {r.node_id for r in (by_object, by_uuid, by_text, by_host_pid)} == {node.pk}
    assert describe_request(by_uuid) == f"restart of worker 'sleeper' on node worker-1:{node.pid} ({node.pk})"
    assert [r.requested_by for r in ControlRequest.objects.order_by("id")] == ["ops"] * 4


@override_settings(WORKERS=HISTORY_ON)
def test_an_empty_node_means_every_node() -> None:
    assert submit("restart", "sleeper", "").node_id is None
    assert submit("restart", "sleeper", "  ").node_id is None


@override_settings(WORKERS=HISTORY_ON)
@pytest.mark.parametrize("action", ["stop", "", "RESTART", None, 3])
def test_an_unknown_action_is_refused_with_the_choices(action: Any) -> None:
    with pytest.raises(ControlError, match=r"unknown action .*: use one of restart, pause, resume"):
        submit(action, "sleeper")
    assert not ControlRequest.objects.exists()


@override_settings(WORKERS={"HISTORY": {"ENABLED": False}, "WORKERS": [f"{W}.Sleeper"]})
def test_history_disabled_is_refused_with_the_setting_to_change() -> None:
    with pytest.raises(ControlError) as caught:
        submit("pause", "sleeper")
    message = str(caught.value)
    assert "history is disabled" in message
    assert "WORKERS['HISTORY']['ENABLED'] is False" in message
    assert "no runworkers process reads control requests" in message
    assert not ControlRequest.objects.exists()


@override_settings(WORKERS={"HISTORY": {"ENABLED": True}, "WORKERS": [f"{W}.Sleeper", f"{W}.OneShot"]})
def test_an_unknown_worker_is_refused_with_the_known_ones_and_a_suggestion(make_node: Any) -> None:
    make_node(workers=["remote-only"])
    with pytest.raises(ControlError) as caught:
        submit("pause", "sleepr")
    message = str(caught.value)
    assert message.startswith("unknown worker 'sleepr' (did you mean 'sleeper'?)")
    assert "not in settings.WORKERS['WORKERS'] and no runworkers process has run it" in message
    assert "Known workers: sleeper, one-shot, remote-only" in message
    with pytest.raises(ControlError, match=r"the worker name must be a non-empty str"):
        submit("pause", "  ")
    assert not ControlRequest.objects.exists()


@override_settings(WORKERS={"HISTORY": {"ENABLED": True}, "WORKERS": []})
def test_a_worker_seen_in_the_history_is_known_without_being_configured(make_node: Any) -> None:
    node = make_node(workers=["on-a-node"], stopped_at=timezone.now())  # a stopped node's list does not count
    with pytest.raises(ControlError, match="unknown worker 'on-a-node'"):
        submit("pause", "on-a-node")
    Execution.objects.create(
        id=uuid.uuid4(), node=node, worker="ran-once", attempt=1, max_attempts=1, status="success",
        created_at=timezone.now(),
    )  # fmt: skip
    WorkerState.objects.create(node=node, worker="has-state", status="running", updated_at=timezone.now())
    make_node(workers=["on-a-live-node"])
    for name in ("ran-once", "has-state", "on-a-live-node"):
        assert submit("pause", name).worker == name


@override_settings(WORKERS=HISTORY_ON)
def test_an_unknown_node_is_refused_with_the_live_nodes(make_node: Any) -> None:
    live = make_node(hostname="worker-1", workers=["sleeper"])
    missing = uuid.uuid4()
    with pytest.raises(ControlError) as caught:
        submit("pause", "sleeper", missing)
    message = str(caught.value)
    assert message.startswith(f"unknown node {missing}: no running runworkers process recorded itself with it.")
    assert "Leave the node out to address every node" in message
    assert f"worker-1:{live.pid} ({live.pk})" in message
    with pytest.raises(ControlError, match=r"node 'nonsense' is neither a node id \(a UUID\) nor host:pid"):
        submit("pause", "sleeper", "nonsense")
    with pytest.raises(ControlError, match=r"unknown node worker-2:1"):
        submit("pause", "sleeper", "worker-2:1")
    assert not ControlRequest.objects.exists()


@override_settings(WORKERS=HISTORY_ON)
def test_a_stopped_node_is_refused(make_node: Any) -> None:
    stopped = make_node(hostname="old", workers=["sleeper"], stopped_at=timezone.now())
    with pytest.raises(ControlError) as caught:
        submit("restart", "sleeper", stopped.pk)
    message = str(caught.value)
    assert message.startswith(f"node old:{stopped.pid} ({stopped.pk}) stopped at ")
    assert "nothing would pick the request up" in message
    assert "none is running (is runworkers started, with history enabled?)" in message
    # host:pid names live nodes only
    with pytest.raises(ControlError, match=rf"unknown node old:{stopped.pid}"):
        submit("restart", "sleeper", f"old:{stopped.pid}")


@override_settings(WORKERS=HISTORY_ON)  # the default grace: 3 heartbeat intervals of 10 s
def test_a_node_without_a_heartbeat_for_the_grace_is_refused_as_stale(make_node: Any) -> None:
    """A runworkers killed with SIGKILL never records its stop: its heartbeats end, nothing picks requests up."""
    live = make_node(hostname="worker-1", workers=["sleeper"])
    killed = make_node(hostname="worker-2", workers=["sleeper"], last_heartbeat=timezone.now() - timedelta(minutes=5))
    for designated in (killed, killed.pk, str(killed.pk), f"worker-2:{killed.pid}"):
        with pytest.raises(ControlError) as caught:
            submit("pause", "sleeper", designated)
        message = str(caught.value)
        assert re.match(
            rf"node worker-2:{killed.pid} \({killed.pk}\) has not sent a heartbeat for 30\d s \(more than 30 s\): "
            r"it is stale \(killed, or its host is down\?\)",
            message,
        ), message
        assert "Send the request to every node instead (leave the node out)" in message
        assert message.endswith(f"use one of the live nodes: worker-1:{live.pid} ({live.pk})")  # not the stale one
    assert not ControlRequest.objects.exists()
    assert submit("pause", "sleeper", live).node_id == live.pk


@override_settings(WORKERS={"HISTORY": {"ENABLED": True, "HEARTBEAT_INTERVAL": 1, "ORPHAN_GRACE": 120}})
def test_the_stale_rule_is_the_history_grace(make_node: Any) -> None:
    quiet = make_node(workers=["sleeper"], last_heartbeat=timezone.now() - timedelta(seconds=60))
    assert submit("pause", "sleeper", quiet).node_id == quiet.pk  # within ORPHAN_GRACE


@override_settings(WORKERS=HISTORY_ON)
def test_host_pid_designates_the_live_node_of_a_reused_pid(make_node: Any) -> None:
    killed = make_node(hostname="box", pid=7, workers=["sleeper"], last_heartbeat=timezone.now() - timedelta(hours=1))
    again = make_node(hostname="box", pid=7, workers=["sleeper"])  # a container's pid, reused
    assert submit("pause", "sleeper", "box:7").node_id == again.pk
    assert killed.pk != again.pk


@override_settings(WORKERS={"HISTORY": {"ENABLED": True}, "WORKERS": []})
def test_a_stale_nodes_workers_are_not_known_from_its_list(make_node: Any) -> None:
    make_node(workers=["only-there"], last_heartbeat=timezone.now() - timedelta(hours=1))
    with pytest.raises(ControlError, match="unknown worker 'only-there'"):
        submit("pause", "only-there")


@override_settings(WORKERS=HISTORY_ON)
def test_a_node_that_does_not_run_the_worker_is_refused(make_node: Any) -> None:
    node = make_node(workers=["alpha", "sleeper-2"])
    with pytest.raises(ControlError) as caught:
        submit("pause", "sleeper", node)
    assert str(caught.value) == (
        f"node host-a:{node.pid} ({node.pk}) does not run worker 'sleeper' (did you mean 'sleeper-2'?); "
        "it runs: alpha, sleeper-2"
    )


@override_settings(WORKERS=HISTORY_ON)
def test_a_user_is_the_author_and_gets_a_log_entry(transactional_db: None) -> None:
    alice = make_user("alice", perms=OPERATOR_PERMISSIONS)
    request = submit("pause", "sleeper", user=alice)
    assert request.requested_by == "alice"
    entry = LogEntry.objects.get()
    assert entry.user_id == alice.pk
    assert entry.action_flag == ADDITION
    assert entry.content_type == ContentType.objects.get_for_model(ControlRequest)
    assert entry.object_id == str(request.pk)
    assert entry.change_message == "Requested pause of worker 'sleeper' on every node."
    assert entry.get_change_message() == "Requested pause of worker 'sleeper' on every node."
    # requested_by may name the user differently; the LogEntry is still the user's
    submit("resume", "sleeper", user=alice, requested_by="alice (on call)")
    assert ControlRequest.objects.order_by("-id").first().requested_by == "alice (on call)"  # type: ignore[union-attr]
    assert LogEntry.objects.filter(user=alice).count() == 2


def failing_log_entries(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: Any, **kwargs: Any) -> Any:
        raise DatabaseError('relation "django_admin_log" does not exist')

    monkeypatch.setattr(LogEntry.objects, "log_actions", fail)


class LogEntriesElsewhere:
    """A router that sends the admin's LogEntry rows to another database than the history's."""

    def db_for_write(self, model: Any, **hints: Any) -> str | None:
        return "admin_logs" if model is LogEntry else None


@override_settings(WORKERS=HISTORY_ON)
def test_a_log_entry_that_fails_in_the_requests_database_records_nothing(
    transactional_db: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same database: the request and its LogEntry are one transaction, so "not recorded" is the truth."""
    alice = make_user("alice", perms=OPERATOR_PERMISSIONS)
    failing_log_entries(monkeypatch)
    with pytest.raises(DatabaseError, match="django_admin_log"):
        submit("pause", "sleeper", user=alice)
    assert not ControlRequest.objects.exists()


@override_settings(WORKERS=HISTORY_ON, DATABASE_ROUTERS=[f"{__name__}.LogEntriesElsewhere"])
def test_a_log_entry_that_fails_in_another_database_does_not_unrecord_the_request(
    transactional_db: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another database: the request is committed first; a failed LogEntry is a warning, not a failure."""
    alice = make_user("alice", perms=OPERATOR_PERMISSIONS)
    failing_log_entries(monkeypatch)
    with collect_logs() as logs:
        request = submit("pause", "sleeper", user=alice)
    assert ControlRequest.objects.get().pk == request.pk
    [warning] = logs.matching(f"control request #{request.pk} is recorded, but its admin LogEntry could not be")
    assert warning.levelno == logging.WARNING
    assert 'relation "django_admin_log" does not exist' in warning.getMessage()


@override_settings(WORKERS=HISTORY_ON)
def test_a_user_without_the_permission_is_refused(transactional_db: None) -> None:
    victor = make_user("victor", perms=VIEWER_PERMISSIONS)
    with pytest.raises(ControlError) as caught:
        submit("pause", "sleeper", user=victor)
    assert str(caught.value) == (
        "user 'victor' may not control workers: give them the permission django_workers.control_workers "
        '("Can restart, pause and resume workers"), directly or through a group'
    )
    from django.contrib.auth.models import AnonymousUser

    with pytest.raises(ControlError, match="an anonymous user cannot control workers"):
        submit("pause", "sleeper", user=AnonymousUser())
    assert not ControlRequest.objects.exists()
    assert not LogEntry.objects.exists()
    superuser = make_user("root", superuser=True)
    assert submit("pause", "sleeper", user=superuser).requested_by == "root"


@override_settings(WORKERS={"HISTORY": {"ENABLED": True, "DATABASE": "elsewhere"}, "WORKERS": []})
def test_an_invalid_history_setting_is_refused_with_the_check_message() -> None:
    with pytest.raises(ControlError) as caught:
        submit("pause", "sleeper")
    assert str(caught.value).startswith(
        "settings.WORKERS['HISTORY'] is invalid (manage.py check says why): "
        "WORKERS['HISTORY']['DATABASE'] is 'elsewhere', which is not a key of settings.DATABASES."
    )


@override_settings(WORKERS=HISTORY_ON)
def test_an_unknown_using_alias_is_refused() -> None:
    with pytest.raises(ControlError, match=r"database 'elsewhere' is not in settings.DATABASES"):
        submit("pause", "sleeper", using="elsewhere")


@needs_postgresql
@override_settings(WORKERS=HISTORY_ON)
def test_on_postgresql_the_insert_notifies_the_channel_when_it_commits(transactional_db: None) -> None:
    import psycopg

    params = dict(connection.get_connection_params())
    listener = psycopg.connect(**params, autocommit=True)
    try:
        listener.execute(f"LISTEN {CHANNEL}")
        request = submit("restart", "sleeper")
        payloads = [notify.payload for notify in listener.notifies(timeout=5, stop_after=1)]
        assert payloads == [str(request.pk)]
    finally:
        listener.close()
