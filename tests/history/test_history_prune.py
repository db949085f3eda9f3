"""Retention: ``manage.py pruneworkerhistory`` and the recorder's own pruning, in small batches."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from django_workers.history import PruneCounts, count_prunable, prune_step
from django_workers.models import Execution, ExecutionEvent, Node
from tests.history.conftest import Scene
from tests.support import wait_for


@dataclass
class History:
    now: datetime
    dead: Node  # stopped heartbeating 15 days ago: pruned once its executions are
    live: Node  # heartbeats now: never pruned, although some of its executions are old
    old: list[Execution]
    recent: list[Execution]


def make_history() -> History:
    now = timezone.now()

    def node(name: str, heartbeat_days_ago: float) -> Node:
        return Node.objects.create(
            hostname=name,
            pid=1,
            started_at=now - timedelta(days=20),
            last_heartbeat=now - timedelta(days=heartbeat_days_ago),
            version="0.1.0",
        )

    def execution(on: Node, days_ago: float, events: int) -> Execution:
        created = now - timedelta(days=days_ago)
        row = Execution.objects.create(
            id=uuid.uuid4(), node=on, worker="w", attempt=1, max_attempts=1, status="success", created_at=created
        )
        ExecutionEvent.objects.bulk_create(
            ExecutionEvent(node=on, execution=row, timestamp=created + timedelta(seconds=i), level="INFO", message="m")
            for i in range(events)
        )
        return row

    dead, live = node("dead", 15), node("live", 0)
    old = [execution(dead, 10, 3) for _ in range(5)] + [execution(live, 9, 1)]
    recent = [execution(live, 1, 2) for _ in range(2)]
    for on, days_ago in ((dead, 14), (live, 1)):  # node-level markers
        ExecutionEvent.objects.create(
            node=on, execution=None, timestamp=now - timedelta(days=days_ago), level="WARNING", message="dropped"
        )
    return History(now, dead, live, old, recent)


@pytest.fixture
def history(db: None) -> History:
    return make_history()


def run(*args: str) -> str:
    out = StringIO()
    call_command("pruneworkerhistory", *args, stdout=out)
    return out.getvalue()


def test_dry_run_counts_without_deleting(history: History) -> None:
    before = (Execution.objects.count(), ExecutionEvent.objects.count(), Node.objects.count())
    out = run("--older-than", "7", "--dry-run")
    assert out.startswith("Would delete 6 execution(s), 17 event(s), 0 tally row(s) and 1 node(s) older than 7 day(s)")
    assert "(dry run: nothing deleted)" in out
    assert (Execution.objects.count(), ExecutionEvent.objects.count(), Node.objects.count()) == before


def test_pruning_deletes_in_batches_what_the_dry_run_counted(history: History) -> None:
    with CaptureQueriesContext(connection) as queries:
        out = run("--older-than", "7", "--batch-size", "2", "-v", "2")
    assert "Deleted 6 execution(s), 17 event(s), 0 tally row(s) and 1 node(s) older than 7 day(s)" in out
    batches = [line.strip() for line in out.splitlines() if line.strip().startswith("batch ")]
    assert batches == [
        "batch 1: 2 execution(s), 6 event(s), 0 tally row(s) and 0 node(s)",
        "batch 2: 2 execution(s), 6 event(s), 0 tally row(s) and 0 node(s)",
        "batch 3: 2 execution(s), 4 event(s), 0 tally row(s) and 0 node(s)",  # 3 + 1 events: the live node's old one
        "batch 4: 0 execution(s), 1 event(s), 0 tally row(s) and 1 node(s)",  # the dead node's marker, then the node
    ]
    assert "in 4 transaction(s)" in out
    # Each batch is its own transaction (a savepoint inside this test's transaction).
    assert sum("SAVEPOINT" in query["sql"] and "RELEASE" not in query["sql"] for query in queries) >= 4
    assert set(Execution.objects.values_list("pk", flat=True)) == {row.pk for row in history.recent}
    assert ExecutionEvent.objects.count() == 2 * 2 + 1
    assert list(Node.objects.values_list("hostname", flat=True)) == ["live"]
    assert run("--older-than", "7").startswith("Deleted 0 execution(s), 0 event(s), 0 tally row(s) and 0 node(s)")


def test_prune_step_deletes_one_batch(history: History) -> None:
    cutoff = history.now - timedelta(days=7)
    assert count_prunable("default", cutoff) == PruneCounts(6, 17, 1)
    assert prune_step("default", cutoff, batch_size=4) == PruneCounts(executions=4, events=12)
    assert count_prunable("default", cutoff) == PruneCounts(2, 5, 1)


def test_the_default_age_is_the_retention_setting(history: History, settings: object) -> None:
    settings.WORKERS = {"HISTORY": {"RETENTION_DAYS": 30}, "WORKERS": []}  # type: ignore[attr-defined]
    assert run("--dry-run").startswith(
        "Would delete 0 execution(s), 0 event(s), 0 tally row(s) and 0 node(s) older than 30 day(s)"
    )
    settings.WORKERS = {"HISTORY": {"RETENTION_DAYS": 5}, "WORKERS": []}  # type: ignore[attr-defined]
    assert run().startswith("Deleted 6 execution(s)")


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (("--older-than", "-1"), "--older-than must be a number of days >= 0, got '-1'"),
        (("--older-than", "abc"), "--older-than must be a number of days >= 0, got 'abc'"),
        (("--older-than", "nan"), "--older-than must be a number of days >= 0, got 'nan'"),
        (("--older-than", "inf"), "--older-than must be a number of days >= 0, got 'inf'"),
        (("--older-than", "1", "--batch-size", "0"), "--batch-size must be an int >= 1, got '0'"),
        (("--older-than", "1", "--batch-size", "many"), "--batch-size must be an int >= 1, got 'many'"),
        (("--older-than", "1", "--database", "nope"), "unknown database 'nope'; configured databases: 'default'"),
    ],
)
def test_bad_input_is_a_command_error(args: tuple[str, ...], error: str) -> None:
    with pytest.raises(CommandError) as raised:
        run(*args)
    assert str(raised.value) == error


def test_invalid_settings_are_a_command_error(settings: object) -> None:
    settings.WORKERS = {"HISTORY": {"RETENTION_DAYS": 0}}  # type: ignore[attr-defined]
    with pytest.raises(CommandError, match=r"RETENTION_DAYS'\] must be >= 1"):
        run("--dry-run")


def test_the_recorder_prunes_old_history_by_itself_but_not_its_own_node(transactional_db: None, scene: Scene) -> None:
    history = make_history()
    pool = scene.pool()
    recorder = scene.recorder(pool, heartbeat_interval=0.1, retention_days=7, prune_batch_size=2)
    pool.start()
    wait_for(lambda: not Node.objects.filter(hostname="dead").exists(), timeout=15)
    assert set(Execution.objects.values_list("pk", flat=True)) == {row.pk for row in history.recent}
    assert set(Node.objects.values_list("pk", flat=True)) == {history.live.pk, recorder.node_id}
