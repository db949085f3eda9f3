"""The current state of each worker of this node (:class:`~django_workers.models.WorkerState`).

The writer keeps each worker's state in memory as last committed, applies a batch's events to
copies, upserts the rows that changed in the batch's transaction, and keeps the copies once it
is committed (as :class:`~django_workers.history.attempts.AttemptLog` does for attempts). At the
node's registration every registered worker gets its row, ``unknown`` until it does something.

At each heartbeat the writer also corrects what events alone cannot (:meth:`StateLog.reassert`):
rows another node marked ``lost`` while this one was only stalled, and the ``silent`` fact,
which no event clears when a silent attempt's heartbeats resume.

A singleton worker's row also says its role on the node (:class:`~django_workers.models.LeaseRole`)
and the fence of the lease the node holds for it, from the lease events: ``follower`` until the
node takes the lease (``leader``, with its fence), ``releasing`` once it lost it while the worker
has not returned yet, ``stuck`` when it did not return within the stop timeout. Other workers'
role is ``""``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, cast

from ..core.events import (
    AttemptFailed,
    AttemptsExhausted,
    AttemptStarted,
    LifecycleEvent,
    ReportedEvent,
    WorkerControlled,
    WorkerDeferred,
    WorkerLeaseChanged,
    WorkerPaused,
    WorkerSilent,
    WorkerStandby,
    WorkerStuck,
)
from ..core.text import cap
from ..models import ExecutionStatus, LeaseRole, WorkerState
from .buffer import REPORTED
from .sql import escape_nul, upsert

if TYPE_CHECKING:
    from ..core.execution import WorkerExecution

__all__ = ["LAST_ERROR_LIMIT", "STATE_COLUMNS", "State", "StateLog", "upsert_states"]

#: The last error is stored as its first line, cut to this many characters (plus a mark saying
#: how many were cut): the whole text is in the attempt's row, which the state links to.
LAST_ERROR_LIMIT: Final = 1000

STATE_COLUMNS: Final = (
    "node",
    "worker",
    "position",
    "status",
    "attempt",
    "max_attempts",
    "since",
    "execution_id",
    "last_error",
    "last_error_execution_id",
    "exhausted",
    "silent",
    "paused",
    "role",
    "fence",
    "updated_at",
)
_UPDATED: Final = tuple(name for name in STATE_COLUMNS if name not in ("node", "worker"))


@dataclass(slots=True)
class State:
    """What the writer knows of one worker's row (written whole when it changes)."""

    worker: str
    position: int
    status: str = ExecutionStatus.UNKNOWN.value
    attempt: int = 0
    max_attempts: int = 1
    since: datetime | None = None
    execution_id: uuid.UUID | None = None
    last_error: str = ""
    last_error_execution_id: uuid.UUID | None = None
    exhausted: bool = False
    silent: bool = False
    paused: bool = False
    #: A singleton's :class:`~django_workers.models.LeaseRole` value on this node; ``""`` for other workers.
    role: str = ""
    #: The fence of the lease this node holds for a singleton (leader), else None.
    fence: int | None = None

    def as_row(self, node_id: uuid.UUID, now: datetime) -> tuple[Any, ...]:
        """The row's values, in :data:`STATE_COLUMNS` order."""
        return (
            node_id,
            self.worker,
            self.position,
            self.status,
            self.attempt,
            self.max_attempts,
            self.since,
            self.execution_id,
            self.last_error,
            self.last_error_execution_id,
            self.exhausted,
            self.silent,
            self.paused,
            self.role,
            self.fence,
            now,
        )


#: The roles of a singleton whose cancelled attempt has not returned yet.
_RETURNING: Final = (LeaseRole.RELEASING.value, LeaseRole.STUCK.value)


def _first_line(message: str) -> str:
    """The first non-empty line of an error ``message``, cut to :data:`LAST_ERROR_LIMIT` characters."""
    line = next((line.strip() for line in message.splitlines() if line.strip()), "")
    return escape_nul(cap(line, LAST_ERROR_LIMIT))


def _apply(state: State, event: ReportedEvent) -> None:
    """One reported event's effect on its worker's state."""
    kind = type(event)
    record = event.record
    status = event.status.value
    if status != state.status:
        state.status = status
        state.since = record.timestamp
    if event.attempt > 0:
        state.attempt = event.attempt
    elif kind is WorkerDeferred and state.attempt == 0:
        state.attempt = 1  # a deferral is the first attempt's (attempt 0); a pause before start is not
    state.max_attempts = event.max_attempts
    state.execution_id = uuid.UUID(event.execution_id)
    if kind is AttemptStarted:
        state.silent = state.exhausted = state.paused = False
        state.since = record.timestamp  # a new attempt: running since its start
    elif kind is AttemptFailed:
        state.last_error = _first_line(cast(AttemptFailed, event).failure.message)
        state.last_error_execution_id = state.execution_id
        state.silent = False
    elif kind is AttemptsExhausted:
        state.exhausted = True
    elif kind is WorkerSilent:
        state.silent = True
    elif kind is WorkerPaused:
        state.paused = True
        state.silent = False
    elif kind is WorkerControlled:
        action = cast(WorkerControlled, event).action
        if action == "pause":
            state.paused = True
        else:  # restart, resume: a fresh run follows
            state.paused = state.exhausted = False
    elif status != ExecutionStatus.RUNNING:
        state.silent = False
    if kind is WorkerLeaseChanged:
        fence = cast(WorkerLeaseChanged, event).fence
        if fence is not None:
            state.role, state.fence = LeaseRole.LEADER.value, fence
        else:
            # Paused, nothing runs and no standby follows (the pause stands): it follows at once.
            paused = status == ExecutionStatus.PAUSED
            state.role = LeaseRole.FOLLOWER.value if paused else LeaseRole.RELEASING.value
            state.fence = None
    elif kind is WorkerStandby:
        state.role, state.fence = LeaseRole.FOLLOWER.value, None
    elif kind is WorkerStuck:
        state.role, state.fence = LeaseRole.STUCK.value, None
    elif state.role in _RETURNING and status != ExecutionStatus.RUNNING:
        # The cancelled attempt returned: the lease is released, the node follows (a stopping pool
        # publishes no standby, so the row does not wait for one).
        state.role = LeaseRole.FOLLOWER.value


def _role(execution: WorkerExecution) -> tuple[str, int | None]:
    """A singleton's role and fence as its snapshot tells them (what the lease events would have made)."""
    if execution.fence is not None:
        return LeaseRole.LEADER.value, execution.fence
    if execution.stuck:
        return LeaseRole.STUCK.value, None
    if execution.status.value in (ExecutionStatus.RUNNING, ExecutionStatus.DEFERRED):
        return LeaseRole.RELEASING.value, None  # cancelled, not returned yet
    return LeaseRole.FOLLOWER.value, None


class StateLog:
    """The workers' states as last committed by the writer, and what a batch makes of them."""

    def __init__(
        self,
        names: Callable[[], Sequence[str]] | None = None,
        executions: Callable[[], Mapping[str, WorkerExecution]] | None = None,
    ) -> None:
        self._names = names
        #: The pool's snapshots: which workers are singletons (their rows begin as ``follower``).
        self._executions = executions
        self._states: dict[str, State] = {}
        self._positions: dict[str, int] = {}
        self._singletons: frozenset[str] = frozenset()
        #: Whether every registered worker's row was written since the node was (re)registered.
        self.seeded = False

    def _position(self, worker: str) -> int:
        position = self._positions.get(worker)
        if position is None:
            self._refresh_positions()
            position = self._positions.get(worker)
            if position is None:
                position = self._positions[worker] = len(self._positions)
        return position

    def _refresh_positions(self) -> None:
        if self._names is not None:
            for name in self._names():
                self._positions.setdefault(name[:255], len(self._positions))
        if self._executions is not None:
            executions = self._executions()
            self._singletons = frozenset(name[:255] for name, execution in executions.items() if execution.singleton)

    def _new_state(self, worker: str, position: int | None = None) -> State:
        """A worker's state before any event: a singleton follows until its node takes the lease."""
        position = self._position(worker) if position is None else position
        role = LeaseRole.FOLLOWER.value if worker in self._singletons else ""
        return State(worker, position, role=role)

    def seed(self) -> list[State]:
        """Every registered worker's state (``unknown`` when it has done nothing yet), to write whole."""
        self._refresh_positions()
        return [self._states.get(name) or self._new_state(name, position) for name, position in self._positions.items()]

    def forget(self) -> None:
        """The node row was (re)created: every row is to be written again (:meth:`seed`)."""
        self.seeded = False

    def apply(self, events: Iterable[LifecycleEvent]) -> dict[str, State]:
        """The states these events change (copies: nothing changes until :meth:`commit`)."""
        known = self._states
        touched: dict[str, State] = {}
        for event in events:
            if type(event) not in REPORTED:
                continue
            reported = cast(ReportedEvent, event)
            worker = reported.worker[:255]
            state = touched.get(worker)
            if state is None:
                previous = known.get(worker)
                state = self._new_state(worker) if previous is None else replace(previous)
                touched[worker] = state
            _apply(state, reported)
        return {worker: state for worker, state in touched.items() if state != known.get(worker)}

    def reassert(self, lost: Iterable[str], executions: Mapping[str, WorkerExecution]) -> dict[str, State]:
        """At a heartbeat: the states to write again, as copies (nothing changes until :meth:`commit`).

        ``lost``: the workers whose row says ``lost``. While this node runs, only another node
        writes that (this node's own stop does, last), when it took this node for lost (no
        heartbeat within the grace period) and closed its running attempts; this node
        heart-beats, so it was only stalled and its workers still run: their rows are written
        again as this node knows them. ``executions``: the pool's snapshots, whose
        ``silent`` (computed afresh in each) replaces the state's for the attempt the state shows
        running; an attempt that heart-beats again is no longer silent, and no event says so.
        A singleton's role and fence are corrected from its snapshot too, in case the buffer
        dropped the lease events that changed them.
        """
        known = self._states
        changed: dict[str, State] = {}
        for worker in lost:
            state = known.get(worker)
            if state is not None and state.status != ExecutionStatus.LOST:
                changed[worker] = replace(state)
        for name, execution in executions.items():
            worker = name[:255]
            state = changed.get(worker) or known.get(worker)
            if (
                state is not None
                and state.status == ExecutionStatus.RUNNING
                and state.silent != execution.silent
                and str(state.execution_id) == execution.id
            ):
                changed[worker] = replace(state, silent=execution.silent)
                state = changed[worker]
            if state is not None and execution.singleton:
                role, fence = _role(execution)
                if (state.role, state.fence) != (role, fence):
                    changed[worker] = replace(state, role=role, fence=fence)
        return changed

    def commit(self, touched: dict[str, State]) -> None:
        """The batch that changed ``touched`` is committed."""
        self._states.update(touched)


def upsert_states(database: str, node_id: uuid.UUID, states: Iterable[State]) -> None:
    """Insert or update the node's rows of ``states`` (one statement per chunk of rows)."""
    now = datetime.now(UTC)
    rows = [state.as_row(node_id, now) for state in states]
    if not rows:
        return
    upsert(database, WorkerState, STATE_COLUMNS, rows, conflict=("node", "worker"), update=_UPDATED)
