"""What ``runworkers`` says about its workers: their settings (``--list``, start-up) and outcome.

At ``-v 1`` the start-up and the shutdown are one summary line each, whatever the number of
workers; the per-worker lines are DEBUG (``-v 2``), except the final status of a worker that did
not end well (not a success, or did not stop), which is always logged.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Mapping, Sequence

from ..core.backoff import Backoff
from ..core.context import LOGGER_NAME
from ..core.execution import WorkerExecution, WorkerStatus
from ..core.pool import WorkerPool
from ..core.text import safe_repr
from ..settings import WorkerSpec, WorkersSettings

__all__ = ["describe_worker", "listing", "log_idle", "log_shutdown", "log_startup", "seconds"]

logger = logging.getLogger(LOGGER_NAME)


def seconds(value: float) -> str:
    """``1 second``, ``2.5 seconds``."""
    return f"{value:g} second" + ("" if value == 1 else "s")


def _describe_backoff(backoff: Backoff) -> str:
    if backoff.initial == 0:
        return "none (restart at once)"
    return (
        f"initial {backoff.initial:g} s, maximum {backoff.maximum:g} s, "
        f"multiplier {backoff.multiplier:g}, jitter {backoff.jitter:g}"
    )


def _describe_attempts(attempts: int) -> str:
    if attempts == 0:
        return "unlimited"
    return f"{attempts} (no restart)" if attempts == 1 else str(attempts)


def describe_worker(
    spec: WorkerSpec | None, execution: WorkerExecution, workers_settings: WorkersSettings
) -> list[tuple[str, str]]:
    """(label, value) pairs describing one worker as it will run, the pool's defaults applied."""
    backoff = workers_settings.restart_backoff
    if spec is not None and spec.restart_backoff is not None:
        backoff = spec.restart_backoff
    deferral = execution.deferred_start_threshold
    described = [
        ("class", spec.path if spec is not None else "?"),
        ("attempts", _describe_attempts(execution.max_executions_attempts)),
        ("deferred start", seconds(deferral) if deferral else "none"),
        ("restart backoff", _describe_backoff(backoff)),
        ("options", safe_repr(dict(spec.options), 1000) if spec is not None else "{}"),
    ]
    if execution.singleton:
        fleet = workers_settings.fleet
        described.append(
            (
                "singleton",
                f"on one replica at a time (lease of {seconds(fleet.lease_ttl)}, renewed every {seconds(fleet.renew)})",
            )
        )
    return described


def listing(workers_settings: WorkersSettings, pool: WorkerPool) -> list[str]:
    """The lines ``runworkers --list`` prints: the selection, then each worker with its settings."""
    specs = {spec.name: spec for spec in workers_settings.workers}
    executions = pool.executions()
    history = "on" if workers_settings.history.enabled else "off"
    selected, configured = len(executions), len(workers_settings.workers)
    count = f"{selected} worker(s)" if selected == configured else f"{selected} of {configured} worker(s)"
    lines = [f"{count}; stop timeout {seconds(pool.stop_timeout)}; history {history}"]
    for name, execution in executions.items():
        lines.extend(("", name))
        lines.extend(
            f"    {label:<16} {value}" for label, value in describe_worker(specs.get(name), execution, workers_settings)
        )
    return lines


def log_startup(workers_settings: WorkersSettings, pool: WorkerPool) -> None:
    """One INFO line for the process; one DEBUG line per worker with its settings."""
    executions = pool.executions()
    logger.info(
        "runworkers starting (pid %d): %d worker(s), stop timeout %s, history %s",
        os.getpid(),
        len(executions),
        seconds(pool.stop_timeout),
        "on" if workers_settings.history.enabled else "off",
    )
    if not logger.isEnabledFor(logging.DEBUG):
        return
    specs = {spec.name: spec for spec in workers_settings.workers}
    for name, execution in executions.items():
        description = describe_worker(specs.get(name), execution, workers_settings)
        logger.debug("worker %s: %s", name, "; ".join(f"{label} {value}" for label, value in description))


def log_idle(finished: Mapping[str, WorkerStatus]) -> None:
    """Every worker has finished on its own (or is paused): WARNING when any ended in error (else INFO)."""
    statuses = ", ".join(f"{name}: {status}" for name, status in finished.items())
    fine = (WorkerStatus.SUCCESS, WorkerStatus.PAUSED, WorkerStatus.STANDBY)
    level = logging.WARNING if any(status not in fine for status in finished.values()) else logging.INFO
    logger.log(
        level,
        "no worker is running any more (%s); runworkers keeps running until it receives SIGTERM or SIGINT",
        statuses,
    )


def log_shutdown(pool: WorkerPool, not_stopped: Sequence[str]) -> None:
    """One INFO line counting the final statuses; a line of its own for each worker that did not end well.

    A worker that did not stop is logged at ERROR; one that ended otherwise than in success
    (error, or never started) at INFO; one that succeeded at DEBUG only.
    """
    executions = pool.executions()
    left_running = set(not_stopped)
    counts = Counter(execution.status for execution in executions.values())
    logger.info(
        "final statuses of %d worker(s): %s",
        len(executions),
        ", ".join(f"{counts[status]} {status}" for status in WorkerStatus if counts[status]) or "none",
    )
    for name, execution in executions.items():
        attempts = execution.max_executions_attempts or "unlimited"
        detail = f"{execution.status} after attempt {execution.current_execution_attempt}/{attempts}"
        if execution.status == WorkerStatus.ERROR and execution.last_error is not None:
            detail += f" ({execution.last_error})"
        if name in left_running:
            logger.error("worker %s final status: %s; it did not stop", name, detail)
        elif execution.status != WorkerStatus.SUCCESS:
            logger.info("worker %s final status: %s", name, detail)
        else:
            logger.debug("worker %s final status: %s", name, detail)
