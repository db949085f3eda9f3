"""The one rule of what makes a worker unhealthy, and the probe of a pool built on it.

Framework-free: it reads execution snapshots (:class:`~django_workers.core.WorkerExecution`)
only. Everything that judges health uses it: :class:`WorkerProbe`, ``/readyz``
(:mod:`django_workers.http`), the django-health-check check and ``checkworkers``
(:mod:`django_workers.health.reports`).

A worker is unhealthy when it is

- ``unknown``: registered but not started;
- exhausted: its last allowed attempt failed (``WorkerExecution.exhausted``), it will not run again;
- silent: registered with ``max_silence`` and its running attempt stopped calling ``ctx.heartbeat()``;
- in ``error`` while the pool is stopping: nothing restarts it then;
- stuck: a singleton that did not return within the stop timeout after its node lost the lease
  (another replica may run it by now).

An ``error`` between two attempts, while a restart is pending, is healthy: it is transient. A
``paused`` worker is healthy: an operator holds it (its item says ``paused``); so is a singleton
in ``standby`` (another replica holds its lease).
Problems are facts of the snapshot (fields), never text found in its events.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..core.execution import WorkerExecution, WorkerStatus
from ..core.pool import WorkerPool

__all__ = [
    "EXHAUSTED",
    "NOT_STARTED",
    "STOPPED_IN_ERROR",
    "STUCK",
    "ProbeResult",
    "WorkerProbe",
    "judge",
    "probe_item",
    "probe_message",
    "problem",
    "recorded_problem",
]

#: The problem of a worker registered but not started.
NOT_STARTED = "not started"
#: The problem of a worker whose last allowed attempt failed.
EXHAUSTED = "attempts exhausted"
#: The problem of a worker in ``error`` once the pool is stopping.
STOPPED_IN_ERROR = "failed, and the pool is stopping"
#: The problem of a singleton still running after its lease was lost, beyond the stop timeout.
STUCK = "stuck (still running after losing its lease)"


def problem(execution: WorkerExecution, stopping: bool) -> str:
    """Why the worker of ``execution`` is unhealthy, or ``""`` when it is healthy.

    ``stopping`` is whether its pool is stopping (``pool.stopping``): an ``error`` is final then.
    """
    status = execution.status
    if status is WorkerStatus.UNKNOWN:
        return NOT_STARTED
    if status is WorkerStatus.ERROR and execution.exhausted:
        return EXHAUSTED
    if execution.stuck:
        return STUCK
    if execution.silent:
        return f"silent (no heartbeat for {execution.max_silence:g} seconds)"
    if status is WorkerStatus.ERROR and stopping:
        return STOPPED_IN_ERROR
    return ""


def recorded_problem(status: str, attempt: int, max_attempts: int) -> str:
    """The rule applied to an attempt read from the history tables (no pool at hand).

    An attempt in ``error`` that was the last one allowed (``attempt >= max_attempts > 0``) is
    exhausted: exactly when the supervisor sets ``exhausted`` (and records the event saying so).
    Anything else recorded is healthy; staleness is the node's business, not the attempt's.
    """
    if status == WorkerStatus.ERROR and 0 < max_attempts <= attempt:
        return EXHAUSTED
    return ""


def judge(pool: WorkerPool) -> list[tuple[str, WorkerExecution, str]]:
    """Every worker of ``pool``: its name, its snapshot and its :func:`problem` ("" = healthy)."""
    stopping = pool.stopping  # read first: a later stop only makes the next probe stricter
    return [(name, execution, problem(execution, stopping)) for name, execution in pool.executions().items()]


def probe_message(verdicts: list[tuple[str, WorkerExecution, str]]) -> str:
    """The probe's message: ``name: status`` items of :func:`judge`'s verdicts, joined by ``, ``."""
    return ", ".join(probe_item(name, execution) for name, execution, _ in verdicts)


def probe_item(name: str, execution: WorkerExecution) -> str:
    """One item of a probe message: ``name: status``, with `` (silent)`` or `` (stuck)`` when it is."""
    item = f"{name}: {execution.status.value}"
    if execution.stuck:
        return f"{item} (stuck)"
    return f"{item} (silent)" if execution.silent else item


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """The outcome of a probe: ``success`` and one ``name: status`` item per worker."""

    success: bool
    message: str


class WorkerProbe:
    """Checks the health of a pool's workers (see the module doc for the rule).

    A pool without workers is healthy. The message lists ``name: status`` items in registration
    order, joined by ``, ``; a silent worker's item reads ``name: running (silent)``, a stuck
    singleton's ``name: running (stuck)``.
    """

    def __init__(self, pool: WorkerPool) -> None:
        self.pool = pool

    def check(self) -> ProbeResult:
        """Probe the pool now."""
        verdicts = judge(self.pool)
        return ProbeResult(not any(why for _, _, why in verdicts), probe_message(verdicts))

    def __repr__(self) -> str:
        return f"<WorkerProbe {self.pool!r}>"
