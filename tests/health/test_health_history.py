"""The health read from the history tables: live nodes by the database clock, exhausted workers, messages."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.db import OperationalError, connection
from django.db.models.functions import Now
from django.test import override_settings

from django_workers.health.reports import HealthState, history_report, workers_report
from django_workers.models import Execution, ExecutionStatus, Node

pytestmark = pytest.mark.django_db

STALE_AFTER = 30.0
HISTORY_ON: dict[str, Any] = {"HISTORY": {"ENABLED": True}, "WORKERS": []}


def report(**kwargs: Any) -> Any:
    return history_report("default", stale_after=STALE_AFTER, **kwargs)


def test_no_node_at_all_is_unhealthy() -> None:
    result = report()
    assert result.state is HealthState.UNHEALTHY
    assert result.message == "no runworkers process has recorded itself in database 'default'"


def test_a_live_node_with_running_workers_is_healthy(make_node: Callable[..., Node], make_execution: Any) -> None:
    node = make_node()
    make_execution(node, "alpha")
    make_execution(node, "beta", status=ExecutionStatus.DEFERRED)
    result = report()
    assert result.state is HealthState.HEALTHY, result.message
    assert result.source == "history"
    assert [(item.worker, item.status, item.node, item.attempt) for item in result.workers] == [
        ("alpha", "running", str(node), "1/3"),
        ("beta", "deferred", str(node), "1/3"),
    ]
    assert result.message.startswith(f"{node} (alpha: running, beta: deferred; heartbeat ")


def test_freshness_is_judged_by_the_database_clock(make_node: Callable[..., Node], now: datetime) -> None:
    # A host whose clock runs an hour late wrote the heartbeat with Now(): it is fresh all the same.
    node = make_node(last_heartbeat=now - timedelta(hours=1))
    assert report().state is HealthState.UNHEALTHY
    Node.objects.filter(pk=node.pk).update(last_heartbeat=Now())
    assert report().state is HealthState.HEALTHY


def test_a_stale_heartbeat_is_unhealthy(make_node: Callable[..., Node], now: datetime) -> None:
    node = make_node(last_heartbeat=now - timedelta(seconds=STALE_AFTER + 15))
    result = report()
    assert result.state is HealthState.UNHEALTHY
    assert f"no live runworkers process: the last heartbeat, of {node}, is " in result.message
    assert "(stale after 30 s)" in result.message


def test_a_stopped_node_is_not_live(make_node: Callable[..., Node], now: datetime) -> None:
    node = make_node(stopped_at=now)
    result = report()
    assert result.state is HealthState.UNHEALTHY
    assert f"the last one, {node}, stopped at " in result.message


def test_a_worker_that_exhausted_its_attempts_is_unhealthy(make_node: Callable[..., Node], make_execution: Any) -> None:
    node = make_node()
    make_execution(node, "alpha")
    make_execution(node, "beta", attempt=1, status=ExecutionStatus.ERROR)
    make_execution(node, "beta", attempt=2, status=ExecutionStatus.ERROR)
    make_execution(node, "beta", attempt=3, status=ExecutionStatus.ERROR)
    result = report()
    assert result.state is HealthState.UNHEALTHY
    assert result.message == f"failing workers: beta on {node} (attempts exhausted, attempt 3/3)"
    beta = next(item for item in result.workers if item.worker == "beta")
    assert (beta.healthy, beta.problem, beta.attempt) == (False, "attempts exhausted", "3/3")


def test_an_error_with_attempts_left_is_transient(make_node: Callable[..., Node], make_execution: Any) -> None:
    node = make_node()
    make_execution(node, "alpha", attempt=1, status=ExecutionStatus.ERROR)  # a restart is pending
    make_execution(node, "beta", attempt=1, max_attempts=0, status=ExecutionStatus.ERROR)  # unlimited
    assert report().state is HealthState.HEALTHY


def test_only_the_latest_attempt_of_a_worker_counts(make_node: Callable[..., Node], make_execution: Any) -> None:
    node = make_node()
    make_execution(node, "alpha", attempt=1, max_attempts=1, status=ExecutionStatus.ERROR)
    make_execution(node, "alpha", attempt=2, max_attempts=1, status=ExecutionStatus.RUNNING)  # (a newer row wins)
    assert report().state is HealthState.HEALTHY


def test_exhaustion_is_read_from_the_columns_not_from_event_messages(
    make_node: Callable[..., Node], make_execution: Any, make_event: Any
) -> None:
    node = make_node()
    execution = make_execution(node, "alpha", attempt=2, max_attempts=5, status=ExecutionStatus.ERROR)
    assert report().state is HealthState.HEALTHY
    # The event's text decides nothing: attempt 2 of 5 in error is a pending restart.
    make_event(execution, "max execution attempts reached", level="ERROR")
    assert report().state is HealthState.HEALTHY
    # The columns do, without any event: the last allowed attempt is in error.
    make_execution(node, "beta", attempt=5, max_attempts=5, status=ExecutionStatus.ERROR)
    result = report()
    assert result.state is HealthState.UNHEALTHY
    assert result.message == f"failing workers: beta on {node} (attempts exhausted, attempt 5/5)"


def test_exhausted_workers_of_dead_nodes_do_not_count(
    make_node: Callable[..., Node], make_execution: Any, now: datetime
) -> None:
    dead = make_node(hostname="host-dead", last_heartbeat=now - timedelta(hours=2))
    make_execution(dead, "alpha", attempt=3, status=ExecutionStatus.ERROR)
    stopped = make_node(hostname="host-stopped", stopped_at=now)
    make_execution(stopped, "alpha", attempt=3, status=ExecutionStatus.ERROR)
    live = make_node(hostname="host-live")
    make_execution(live, "alpha")
    result = report()
    assert result.state is HealthState.HEALTHY, result.message
    assert {item.node for item in result.workers} == {str(live)}


def test_one_exhausted_worker_on_any_live_node_is_unhealthy(
    make_node: Callable[..., Node], make_execution: Any
) -> None:
    good = make_node(hostname="host-a")
    make_execution(good, "alpha")
    bad = make_node(hostname="host-b")
    make_execution(bad, "alpha", attempt=3, status=ExecutionStatus.ERROR)
    result = report()
    assert result.state is HealthState.UNHEALTHY
    assert result.message == f"failing workers: alpha on {bad} (attempts exhausted, attempt 3/3)"
    assert report(hostname="host-a").state is HealthState.HEALTHY


def test_hostname_restricts_the_nodes(make_node: Callable[..., Node], make_execution: Any, now: datetime) -> None:
    make_node(hostname="host-a")
    make_node(hostname="host-b", last_heartbeat=now - timedelta(hours=1))
    assert report(hostname="host-a").state is HealthState.HEALTHY
    other = report(hostname="host-b")
    assert other.state is HealthState.UNHEALTHY
    assert other.message.startswith("no live runworkers process on host 'host-b': the last heartbeat")
    assert report(hostname="host-c").message == (
        "no runworkers process on host 'host-c' has recorded itself in database 'default'"
    )


def test_workers_without_a_recorded_attempt_are_listed_as_unknown(
    make_node: Callable[..., Node], make_execution: Any
) -> None:
    node = make_node(workers=["alpha", "beta"])
    make_execution(node, "alpha")
    result = report()
    assert result.state is HealthState.HEALTHY  # the recorder writes in batches: not held against the node
    assert [(item.worker, item.status, item.healthy) for item in result.workers] == [
        ("alpha", "running", True),
        ("beta", "unknown", True),
    ]


def test_a_database_error_means_cannot_tell(make_node: Callable[..., Node]) -> None:
    make_node()

    def refuse(*args: Any) -> None:
        raise OperationalError("server closed the connection unexpectedly\nThis probably means...")

    with connection.execute_wrapper(refuse):
        result = report()
    assert result.state is HealthState.UNKNOWN
    assert result.message == (
        "cannot read the worker history in database 'default': "
        "OperationalError: server closed the connection unexpectedly"
    )


def test_the_number_of_queries_does_not_grow_with_the_history(
    make_node: Callable[..., Node], make_execution: Any, django_assert_max_num_queries: Any
) -> None:
    node = make_node()
    for attempt in range(1, 30):
        make_execution(node, "alpha", attempt=attempt, max_attempts=0, status=ExecutionStatus.ERROR)
    make_execution(node, "beta", attempt=2, max_attempts=5, status=ExecutionStatus.ERROR)
    # the live nodes, the latest attempt of each worker, the stuck singletons
    with django_assert_max_num_queries(3):
        report()


# -- choosing the source -------------------------------------------------------------------------------


def test_history_disabled_and_no_pool_means_cannot_tell() -> None:
    with override_settings(WORKERS={"WORKERS": []}):
        result = workers_report()
    assert result.state is HealthState.UNKNOWN
    assert "the history is disabled (WORKERS['HISTORY']['ENABLED'] is False)" in result.message
    assert "no worker pool was started in this process" in result.message


def test_history_enabled_reads_the_tables(make_node: Callable[..., Node], now: datetime) -> None:
    make_node(last_heartbeat=now - timedelta(seconds=20))
    with override_settings(WORKERS=HISTORY_ON):
        assert workers_report().state is HealthState.HEALTHY  # 20 s < 3 heartbeat intervals of 10 s
        assert workers_report(stale_after=5).state is HealthState.UNHEALTHY


def test_only_the_history_settings_are_read(make_node: Callable[..., Node]) -> None:
    # A worker that cannot be imported is the system checks' business: the history still answers.
    make_node()
    with override_settings(WORKERS={"HISTORY": {"ENABLED": True}, "WORKERS": ["no.such.Worker"]}):
        assert workers_report().state is HealthState.HEALTHY
    with override_settings(WORKERS={"WORKERS": ["no.such.Worker"]}):
        result = workers_report()
    assert result.state is HealthState.UNKNOWN
    assert "the history is disabled" in result.message


def test_an_unknown_database_alias_means_cannot_tell() -> None:
    with override_settings(WORKERS=HISTORY_ON):
        result = workers_report(database="elsewhere")
    assert result.state is HealthState.UNKNOWN
    assert result.message == "cannot tell: 'elsewhere' is not a key of settings.DATABASES"


def test_execution_rows_are_ordered_by_creation_not_by_id(
    make_node: Callable[..., Node], make_execution: Any, now: datetime
) -> None:
    node = make_node()
    make_execution(node, "alpha", attempt=2, status=ExecutionStatus.RUNNING, created_at=now - timedelta(seconds=1))
    make_execution(node, "alpha", attempt=1, status=ExecutionStatus.ERROR, created_at=now - timedelta(seconds=9))
    result = report()
    assert [(item.status, item.attempt) for item in result.workers if item.worker == "alpha"] == [("running", "2/3")]
    assert Execution.objects.count() == 2


def test_two_live_processes_with_the_same_host_and_pid_stay_apart(
    make_node: Callable[..., Node], make_execution: Any, now: datetime
) -> None:
    # A container restarted in the same pod: pid 1 again, on the same host name.
    old = make_node(pid=1, workers=["alpha"], started_at=now - timedelta(hours=2))
    new = make_node(pid=1, workers=["alpha"], started_at=now - timedelta(minutes=1))
    make_execution(old, "alpha", status=ExecutionStatus.SUCCESS)
    make_execution(new, "alpha", status=ExecutionStatus.RUNNING)
    result = report()
    assert result.state is HealthState.HEALTHY
    assert [(item.node, item.status) for item in result.workers] == [("host-a:1", "success"), ("host-a:1", "running")]
    first, second = result.message.split("; heartbeat ", 1)[0], result.message.split("; host-a:1 ", 1)[1]
    assert first == "host-a:1 (alpha: success"
    assert second.startswith("(alpha: running; heartbeat ")
