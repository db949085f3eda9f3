"""Singleton workers in the health read from the history: stuck is unhealthy, a follower is healthy.

The recorder keeps each singleton's role in its state row (WorkerState.role); the attempt's row of
a stuck singleton only says ``running``, so the report reads the state rows of the live nodes too.
The same report answers ``checkworkers`` and the django-health-check check.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client, override_settings
from django.utils import timezone

from django_workers.health.reports import HealthState, history_report
from django_workers.health.rule import STUCK
from django_workers.models import ExecutionStatus, LeaseRole, Node, WorkerState
from tests.health.conftest import WORKERS_CHECK

STALE_AFTER = 30.0
HISTORY_ON: dict[str, Any] = {"HISTORY": {"ENABLED": True}, "WORKERS": []}


def report() -> Any:
    return history_report("default", stale_after=STALE_AFTER)


def make_state(node: Node, worker: str, **fields: Any) -> WorkerState:
    values: dict[str, Any] = {
        "status": ExecutionStatus.RUNNING,
        "attempt": 1,
        "max_attempts": 3,
        "since": timezone.now(),
        "execution_id": uuid.uuid4(),
        "updated_at": timezone.now(),
    }
    values.update(fields)
    return WorkerState.objects.create(node=node, worker=worker, **values)


@pytest.mark.django_db
def test_a_stuck_singleton_is_unhealthy(make_node: Callable[..., Node], make_execution: Any) -> None:
    node = make_node(workers=["relay", "plain"])
    make_execution(node, "relay", attempt=2)
    make_execution(node, "plain")
    make_state(node, "relay", attempt=2, role=LeaseRole.STUCK)
    make_state(node, "plain")
    result = report()
    assert result.state is HealthState.UNHEALTHY
    assert STUCK == "stuck (still running after losing its lease)"
    assert result.message == f"failing workers: relay on {node} ({STUCK}, attempt 2/3)"
    relay, plain = result.workers
    assert (relay.worker, relay.status, relay.healthy, relay.problem, relay.attempt) == (
        "relay",
        "running",
        False,
        STUCK,
        "2/3",
    )
    assert plain.healthy


@pytest.mark.django_db
def test_a_stuck_singleton_without_a_recorded_attempt_is_unhealthy_all_the_same(
    make_node: Callable[..., Node],
) -> None:
    node = make_node(workers=["relay"])
    make_state(node, "relay", role=LeaseRole.STUCK, attempt=1, max_attempts=0)
    result = report()
    assert result.state is HealthState.UNHEALTHY
    assert [(item.worker, item.status, item.attempt, item.problem) for item in result.workers] == [
        ("relay", "running", "1/unlimited", STUCK)
    ]


@pytest.mark.django_db
def test_followers_leaders_and_releasing_singletons_are_healthy(
    make_node: Callable[..., Node], make_execution: Any
) -> None:
    leader = make_node(workers=["relay"])
    follower = make_node(workers=["relay"])
    releasing = make_node(workers=["relay"])
    make_execution(leader, "relay")
    make_state(leader, "relay", role=LeaseRole.LEADER, fence=4)
    make_execution(follower, "relay", status=ExecutionStatus.STANDBY)
    make_state(follower, "relay", status=ExecutionStatus.STANDBY, role=LeaseRole.FOLLOWER)
    make_execution(releasing, "relay")
    make_state(releasing, "relay", role=LeaseRole.RELEASING)
    result = report()
    assert result.state is HealthState.HEALTHY, result.message
    assert [(item.node, item.status) for item in result.workers] == [
        (str(leader), "running"),
        (str(follower), "standby"),
        (str(releasing), "running"),
    ]
    assert "relay: standby" in result.message


@pytest.mark.django_db
def test_a_stuck_singleton_of_a_dead_node_does_not_count(
    make_node: Callable[..., Node], make_execution: Any, now: datetime
) -> None:
    alive = make_node(workers=["relay"])
    stale = make_node(workers=["relay"], last_heartbeat=now - timedelta(minutes=10))
    stopped = make_node(workers=["relay"], stopped_at=now)
    make_execution(alive, "relay", status=ExecutionStatus.STANDBY)
    make_state(alive, "relay", status=ExecutionStatus.STANDBY, role=LeaseRole.FOLLOWER)
    make_state(stale, "relay", role=LeaseRole.STUCK)
    make_state(stopped, "relay", role=LeaseRole.STUCK)
    assert report().state is HealthState.HEALTHY


@pytest.mark.django_db
def test_checkworkers_names_a_stuck_singleton(make_node: Callable[..., Node], make_execution: Any) -> None:
    node = make_node(workers=["relay"])
    make_execution(node, "relay")
    make_state(node, "relay", role=LeaseRole.STUCK)
    stdout = StringIO()
    with override_settings(WORKERS=HISTORY_ON), pytest.raises(SystemExit) as exited:
        call_command("checkworkers", stdout=stdout, stderr=StringIO())
    assert exited.value.code == 1
    assert stdout.getvalue().splitlines() == [
        f"{node}  relay  running   1/3          FAILING: {STUCK}",
        f"unhealthy: failing workers: relay on {node} ({STUCK}, attempt 1/3)",
    ]


@pytest.mark.django_db(transaction=True)
def test_the_web_check_fails_for_a_stuck_singleton(
    client: Client, make_node: Callable[..., Node], make_execution: Any
) -> None:
    node = make_node(workers=["relay"])
    make_execution(node, "relay")
    state = make_state(node, "relay", status=ExecutionStatus.STANDBY, role=LeaseRole.FOLLOWER)
    with override_settings(WORKERS=HISTORY_ON):
        response = client.get("/health/ready/", HTTP_ACCEPT="application/json")
        assert response.status_code == 200, response.content
        WorkerState.objects.filter(pk=state.pk).update(status=ExecutionStatus.RUNNING, role=LeaseRole.STUCK)
        response = client.get("/health/ready/", HTTP_ACCEPT="application/json")
    assert response.status_code == 500
    assert json.loads(response.content)[WORKERS_CHECK] == (
        f"Unavailable: failing workers: relay on {node} ({STUCK}, attempt 1/3)"
    )
