"""What runworkers logs about its workers: summaries at INFO, per-worker lines only where they matter."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from django_workers.core.execution import WorkerExecution, WorkerStatus
from django_workers.runner import describe
from django_workers.settings import WorkersSettings


class FakePool:
    """What the summaries read of a pool: its executions and its stop timeout."""

    stop_timeout = 10.0

    def __init__(self, **statuses: WorkerStatus) -> None:
        self._executions = {
            name: WorkerExecution(
                id=f"id-{name}",
                name=name,
                status=status,
                current_execution_attempt=1,
                max_executions_attempts=3,
                deferred_start_threshold=0.0,
                events=(),
                last_error="boom" if status == WorkerStatus.ERROR else None,
            )
            for name, status in statuses.items()
        }

    def executions(self) -> dict[str, WorkerExecution]:
        return dict(self._executions)


def records(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(record.levelno, record.getMessage()) for record in caplog.records]


def test_the_shutdown_summary_counts_and_details_only_the_workers_that_did_not_end_well(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pool: Any = FakePool(a=WorkerStatus.SUCCESS, b=WorkerStatus.ERROR, c=WorkerStatus.RUNNING, d=WorkerStatus.SUCCESS)
    with caplog.at_level(logging.DEBUG, logger="django_workers"):
        describe.log_shutdown(pool, ["c"])
    assert records(caplog) == [
        (logging.INFO, "final statuses of 4 worker(s): 1 running, 2 success, 1 error"),
        (logging.DEBUG, "worker a final status: success after attempt 1/3"),
        (logging.INFO, "worker b final status: error after attempt 1/3 (boom)"),
        (logging.ERROR, "worker c final status: running after attempt 1/3; it did not stop"),
        (logging.DEBUG, "worker d final status: success after attempt 1/3"),
    ]


def test_the_startup_describes_each_worker_only_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    pool: Any = FakePool(a=WorkerStatus.UNKNOWN, b=WorkerStatus.UNKNOWN)
    with caplog.at_level(logging.INFO, logger="django_workers"):
        describe.log_startup(WorkersSettings(), pool)
    assert len(caplog.records) == 1
    assert "2 worker(s), stop timeout 10 seconds, history off" in caplog.records[0].getMessage()

    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="django_workers"):
        describe.log_startup(WorkersSettings(), pool)
    assert [message for level, message in records(caplog) if level == logging.DEBUG] == [
        f"worker {name}: class ?; attempts 3; deferred start none; "
        "restart backoff initial 1 s, maximum 30 s, multiplier 2, jitter 0.1; options {}"
        for name in ("a", "b")
    ]
