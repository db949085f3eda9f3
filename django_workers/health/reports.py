"""The health of the workers as any process can see it: from a pool it runs, the history, or a URL.

One answer, three consumers: the django-health-check check of the web process
(:mod:`django_workers.health.check`), ``manage.py checkworkers`` and ``/readyz`` of
``runworkers`` (:mod:`django_workers.http`, which reads its own pool). Every verdict on a worker
comes from :mod:`django_workers.health.rule`.

- :func:`pool_report` reads a pool's execution snapshots (:class:`~django_workers.probe.WorkerProbe`
  semantics and message).
- :func:`history_report` reads the history tables (``WORKERS["HISTORY"]``), written by the
  recorder of every ``runworkers`` process: healthy when at least one node's heartbeat is fresh
  (compared with the database clock) and no worker on a live node has exhausted its attempts or
  is a stuck singleton.
- :func:`url_report` asks the ``/readyz`` of a ``runworkers`` process
  (:meth:`HealthReport.as_json` is what it answers).
- :func:`workers_report` picks: the pool of this process when one was started here, else the
  history, else "cannot tell".

Nothing here raises for a sick system: every outcome is a :class:`HealthReport`, whose state is
``healthy``, ``unhealthy`` or ``unknown`` (cannot tell: database unreachable, history disabled…).
Messages name workers, hosts and pids, never the text of a worker's error (a health endpoint may
be public; the admin and the logs have the errors).
"""

from __future__ import annotations

import enum
import json
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.apps import apps
from django.db import DatabaseError, connections
from django.db.models import F, Window
from django.db.models.functions import Now, RowNumber

from ..core.execution import WorkerStatus
from ..core.pool import WorkerPool
from ..models import Execution, LeaseRole, Node, WorkerState
from ..settings import history_settings
from .rule import STUCK, judge, probe_message, recorded_problem

__all__ = [
    "HealthReport",
    "HealthState",
    "WorkerHealth",
    "describe",
    "history_report",
    "in_process_pool",
    "pool_report",
    "url_report",
    "workers_report",
]


class HealthState(enum.StrEnum):
    """The outcome of a health report."""

    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    #: Cannot tell: the database is unreachable, the history is disabled and no pool runs here…
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class WorkerHealth:
    """One worker (on one node, when read from the history)."""

    worker: str
    #: The status of its current (or last) attempt: a :class:`~django_workers.WorkerStatus` value.
    status: str
    healthy: bool
    #: ``host:pid`` of the ``runworkers`` process when read from the history; ``""`` in-process.
    node: str = ""
    #: ``attempt/max`` of the current (or last) attempt, ``""`` when none was recorded.
    attempt: str = ""
    #: Why it is unhealthy (``attempts exhausted``, ``silent (…)``, ``not started``, ``stuck (…)``), or ``""``.
    problem: str = ""


@dataclass(frozen=True, slots=True)
class HealthReport:
    """What a health check found: a state, one-line message and one item per worker."""

    state: HealthState
    message: str
    workers: tuple[WorkerHealth, ...] = ()
    #: Where the answer comes from: ``"pool"``, ``"history"``, a URL, or ``""`` when nothing could be read.
    source: str = ""

    @property
    def healthy(self) -> bool:
        """True only for :attr:`HealthState.HEALTHY` (cannot tell is not healthy)."""
        return self.state is HealthState.HEALTHY

    def as_json(self) -> dict[str, Any]:
        """The JSON body of ``/readyz``, which :func:`url_report` reads back.

        ``{"status": "healthy"|"unhealthy"|"unknown", "workers": {name: status},
        "failing": {name: problem}, "message": "..."}``
        """
        return {
            "status": self.state.value,
            "workers": {item.worker: item.status for item in self.workers},
            "failing": {item.worker: item.problem for item in self.workers if not item.healthy},
            "message": self.message,
        }


def _attempts(attempt: int, maximum: int) -> str:
    return f"{attempt}/{maximum or 'unlimited'}"


# -- in-process ---------------------------------------------------------------------------------------


def pool_report(pool: WorkerPool) -> HealthReport:
    """The health of a pool running in this process: :class:`WorkerProbe`'s verdict and message."""
    verdicts = judge(pool)
    items = []
    for name, execution, why in verdicts:
        attempt = (
            _attempts(execution.current_execution_attempt, execution.max_executions_attempts)
            if execution.current_execution_attempt
            else ""
        )
        items.append(WorkerHealth(name, execution.status.value, not why, attempt=attempt, problem=why))
    state = HealthState.HEALTHY if all(item.healthy for item in items) else HealthState.UNHEALTHY
    return HealthReport(state, probe_message(verdicts), tuple(items), source="pool")


def in_process_pool() -> WorkerPool | None:
    """The app's pool (``apps.get_app_config("django_workers").pool``) if it was started in this process.

    Never builds a pool: a web process that did not start one gets ``None``.
    """
    if not apps.ready:
        return None
    try:
        config = apps.get_app_config("django_workers")
    except LookupError:
        return None
    # The cached pool itself: the ``pool`` property would build one (and import every worker).
    pool: WorkerPool | None = getattr(config, "_pool", None)
    return pool if pool is not None and pool.started else None


# -- the history tables -----------------------------------------------------------------------------


def _seconds(delta: timedelta | None) -> str:
    if delta is None:
        return "?"
    seconds = max(0.0, delta.total_seconds())
    return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"


def history_report(database: str = "default", *, stale_after: float, hostname: str | None = None) -> HealthReport:
    """The health of every live ``runworkers`` process, read from the history tables of ``database``.

    A node is live when it has not stopped and its last heartbeat is younger than ``stale_after``
    seconds by the database's clock (``Now()``, the clock that wrote it). Healthy when at least one
    node is live and no worker on a live node has exhausted its attempts (its latest attempt is in
    ``error`` and was the last one allowed, read from the ``attempt`` and ``max_attempts``
    columns) or is stuck (a singleton whose state row says role ``stuck``: it did not return
    within the stop timeout after its node lost the lease). A follower (``standby``) is healthy.
    ``hostname`` restricts the report to the nodes of one host. A database error gives an
    ``unknown`` report, never an exception.
    """
    where = f" on host {hostname!r}" if hostname else ""
    try:
        return _read_history(database, stale_after, hostname, where)
    except DatabaseError as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return HealthReport(
            HealthState.UNKNOWN,
            f"cannot read the worker history in database {database!r}: {type(exc).__name__}: {text}",
        )


def _read_history(database: str, stale_after: float, hostname: str | None, where: str) -> HealthReport:
    nodes = Node.objects.using(database).live(stale_after)
    if hostname:
        nodes = nodes.filter(hostname=hostname)
    live = list(nodes.annotate(silence=Now() - F("last_heartbeat")).order_by("hostname", "pid", "started_at"))
    if not live:
        return HealthReport(
            HealthState.UNHEALTHY, _no_live_node(database, hostname, where, stale_after), source="history"
        )

    labels = {node.pk: str(node) for node in live}
    latest = (
        Execution.objects.using(database)
        .filter(node__in=list(labels))
        .annotate(
            rank=Window(
                RowNumber(),
                partition_by=[F("node_id"), F("worker")],
                order_by=[F("created_at").desc(), F("attempt").desc()],
            )
        )
        .filter(rank=1)
        .only("id", "node_id", "worker", "attempt", "max_attempts", "status")
    )
    rows: dict[tuple[Any, str], WorkerHealth] = {}
    for row in latest:
        why = recorded_problem(row.status, row.attempt, row.max_attempts)
        rows[(row.node_id, row.worker)] = WorkerHealth(
            row.worker,
            row.status,
            not why,
            node=labels[row.node_id],
            attempt=_attempts(row.attempt, row.max_attempts),
            problem=why,
        )
    # A stuck singleton: its state row says so (the attempt's row only says running).
    stuck = WorkerState.objects.using(database).filter(node__in=list(labels), role=LeaseRole.STUCK)
    for state in stuck.only("node_id", "worker", "status", "attempt", "max_attempts"):
        recorded = rows.get((state.node_id, state.worker))
        rows[(state.node_id, state.worker)] = WorkerHealth(
            state.worker,
            recorded.status if recorded is not None else state.status,
            False,
            node=labels[state.node_id],
            attempt=recorded.attempt if recorded is not None else _attempts(state.attempt, state.max_attempts),
            problem=STUCK,
        )
    # Grouped by node, not by label: two processes can share host:pid (pid 1 in restarted containers).
    per_node: dict[Any, list[WorkerHealth]] = {}
    for node in live:
        names = list(node.worker_names)
        names += sorted(worker for node_id, worker in rows if node_id == node.pk and worker not in names)
        # A worker with no attempt recorded yet (the recorder writes in batches) is shown, not held
        # against its node.
        per_node[node.pk] = [
            rows.get((node.pk, name)) or WorkerHealth(name, WorkerStatus.UNKNOWN.value, True, labels[node.pk])
            for name in names
        ]
    items = tuple(item for node_items in per_node.values() for item in node_items)

    failing = [item for item in items if not item.healthy]
    if failing:
        listed = "; ".join(f"{item.worker} on {item.node} ({item.problem}, attempt {item.attempt})" for item in failing)
        return HealthReport(HealthState.UNHEALTHY, f"failing workers: {listed}", items, source="history")
    summary = []
    for node in live:
        statuses = ", ".join(f"{item.worker}: {item.status}" for item in per_node[node.pk])
        summary.append(f"{labels[node.pk]} ({statuses or 'no worker'}; heartbeat {_seconds(node.silence)} ago)")
    return HealthReport(HealthState.HEALTHY, "; ".join(summary), items, source="history")


def _no_live_node(database: str, hostname: str | None, where: str, stale_after: float) -> str:
    nodes = Node.objects.using(database).all()
    if hostname:
        nodes = nodes.filter(hostname=hostname)
    last = nodes.annotate(silence=Now() - F("last_heartbeat")).order_by("-last_heartbeat").first()
    if last is None:
        return f"no runworkers process{where} has recorded itself in database {database!r}"
    if last.stopped_at is not None:
        stopped = f"{last.stopped_at:%Y-%m-%d %H:%M:%S}"
        return f"no live runworkers process{where}: the last one, {last}, stopped at {stopped}"
    return (
        f"no live runworkers process{where}: the last heartbeat, of {last}, is {_seconds(last.silence)} old "
        f"(stale after {stale_after:g} s)"
    )


# -- a runworkers endpoint --------------------------------------------------------------------------


def url_report(url: str, timeout: float) -> HealthReport:
    """The report of a ``runworkers`` ``/readyz`` endpoint (``http://127.0.0.1:8081/readyz``).

    200 is healthy, 503 unhealthy; no answer, another status or a body that is not a health
    report is ``unknown``.
    """
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            status, payload = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, payload = exc.code, exc.read()
        exc.close()
    except (OSError, ValueError) as exc:  # URLError, timeouts, refused connections, a malformed URL
        reason = getattr(exc, "reason", exc)
        return HealthReport(HealthState.UNKNOWN, f"cannot tell: no answer from {url}: {reason}")
    try:
        body = json.loads(payload)
        workers = body.get("workers") or {}
        failing = body.get("failing") or {}
        message = str(body.get("message", ""))
        items = tuple(
            WorkerHealth(str(name), str(state), name not in failing, problem=str(failing.get(name, "")))
            for name, state in workers.items()
        )
    except (ValueError, AttributeError, TypeError):
        return HealthReport(HealthState.UNKNOWN, f"cannot tell: {url} answered {status} without a JSON health report")
    if status == 200:
        return HealthReport(HealthState.HEALTHY, message, items, source=url)
    if status == 503:
        return HealthReport(HealthState.UNHEALTHY, message, items, source=url)
    return HealthReport(HealthState.UNKNOWN, f"cannot tell: {url} answered {status}: {message}", items, source=url)


# -- choosing -------------------------------------------------------------------------------------


def workers_report(
    *,
    pool: WorkerPool | None = None,
    database: str | None = None,
    stale_after: float | None = None,
    hostname: str | None = None,
    use_pool: bool = True,
) -> HealthReport:
    """The health of the workers, from the best source this process has.

    ``pool`` (else the app's pool when it was started in this process, unless ``use_pool`` is
    false); else the history tables when ``WORKERS["HISTORY"]["ENABLED"]`` (``database`` defaults
    to ``HISTORY.DATABASE``, ``stale_after`` to the recorder's orphan grace); else an ``unknown``
    report. Only ``WORKERS["HISTORY"]`` is read (no worker is imported): a mistake elsewhere in
    ``settings.WORKERS`` does not hide the history.
    """
    if pool is None and use_pool:
        pool = in_process_pool()
    if pool is not None:
        return pool_report(pool)
    history = history_settings()
    if not history.enabled:
        no_pool = " and no worker pool was started in this process" if use_pool else ""
        return HealthReport(
            HealthState.UNKNOWN,
            f"cannot tell: the history is disabled (WORKERS['HISTORY']['ENABLED'] is False){no_pool}; enable "
            "the history, or ask runworkers itself (runworkers --health-port, checkworkers --url)",
        )
    alias = database or history.database
    if alias not in connections:
        return HealthReport(HealthState.UNKNOWN, f"cannot tell: {alias!r} is not a key of settings.DATABASES")
    # A node the check calls gone is one whose open attempts the recorder of another node closes.
    return history_report(alias, stale_after=history.grace if stale_after is None else stale_after, hostname=hostname)


def describe(items: Sequence[WorkerHealth]) -> list[str]:
    """One line per worker: ``node  worker  status  attempt  problem`` (aligned), for a terminal."""
    if not items:
        return []
    node_width = max(len(item.node) for item in items)
    name_width = max(len(item.worker) for item in items)
    lines = []
    for item in items:
        parts = [item.node.ljust(node_width)] if node_width else []
        parts += [item.worker.ljust(name_width), item.status.ljust(8), (item.attempt or "-").ljust(11)]
        parts.append(("FAILING: " + item.problem) if item.problem else "ok")
        lines.append("  ".join(parts).rstrip())
    return lines
