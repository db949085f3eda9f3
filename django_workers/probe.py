"""Health probe of a worker pool: is every worker working, waiting, or done with success.

Framework-free (it reads the pool's execution snapshots only); the Django health check wraps it.
"""

from __future__ import annotations

from dataclasses import dataclass

from .core.execution import WorkerExecution, WorkerStatus
from .core.pool import WorkerPool

__all__ = ["ATTEMPTS_EXHAUSTED", "ProbeResult", "WorkerProbe", "is_exhausted"]

#: The execution event recorded when the last allowed attempt failed.
ATTEMPTS_EXHAUSTED = "max execution attempts reached"


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """The outcome of a probe: ``success`` and one ``name: status`` item per worker."""

    success: bool
    message: str


def is_exhausted(execution: WorkerExecution, stopping: bool = False) -> bool:
    """True when the worker ended in ``error`` and will not run again.

    That is when its last allowed attempt failed (``max execution attempts reached`` is in its
    history, or its attempt counter reached a finite maximum), or when it is in ``error`` after
    the pool was stopped (nothing restarts then). An ``error`` between two attempts, while a
    restart is pending, is not exhaustion.
    """
    if execution.status is not WorkerStatus.ERROR:
        return False
    if stopping or execution.has_event(ATTEMPTS_EXHAUSTED):
        return True
    maximum = execution.max_executions_attempts
    return maximum != 0 and execution.current_execution_attempt >= maximum


class WorkerProbe:
    """Checks the health of a pool's workers.

    A pool is healthy unless one of its workers is ``unknown`` (registered but not started), has
    exhausted its attempts in ``error``, or is silent (registered with ``max_silence`` and its
    running attempt stopped calling ``ctx.heartbeat()``: its item reads ``name: running (silent)``).
    A pool without workers is healthy.
    """

    def __init__(self, pool: WorkerPool) -> None:
        self.pool = pool

    def check(self) -> ProbeResult:
        """Probe the pool now; the message lists ``name: status`` in registration order."""
        stopping = self.pool.stopping  # read first: a later stop only makes the next probe stricter
        success = True
        items = []
        for name, execution in self.pool.executions().items():
            status = execution.status
            if execution.silent:
                items.append(f"{name}: {status.value} (silent)")
                success = False
                continue
            items.append(f"{name}: {status.value}")
            if status is WorkerStatus.UNKNOWN or is_exhausted(execution, stopping):
                success = False
        return ProbeResult(success, ", ".join(items))

    def __repr__(self) -> str:
        return f"<WorkerProbe {self.pool!r}>"
