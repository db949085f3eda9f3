"""The pickup: the process service of ``runworkers`` that applies control requests to its pool.

Started by :func:`django_workers.runtime.build_services` when history is enabled, after the
history recorder (so that the recorder stores what the requests do) and before ``pool.start()``.

- At start, one thread reads the cursor (the newest request's id) and the *standing state*: for
  each worker of the pool, the latest pause, resume or restart addressed to every node (or to this
  node) up to the cursor. A worker whose latest one is a pause is paused before the pool starts, so
  it is never launched (a restart, like a resume, lifts a pause). :meth:`ControlPickup.start`
  waits for that at most :data:`STARTUP_WAIT` seconds: when the database does not answer in time
  the workers start, and the standing pauses are applied as soon as it does.
- Then it polls: every ``poll_interval`` seconds (the heartbeat interval), or at once when the
  PostgreSQL listener (:mod:`~django_workers.control.listen`) is notified, it reads the requests
  newer than the cursor and applies those addressed to this node or to every node, in order:
  ``pool.restart``/``pause``/``resume`` (the pool records them as events of the worker's
  execution), plus a log line naming the request and who asked.

Ids are handed out when rows are inserted but become visible when their transactions commit, so a
request may appear after a newer one: an id skipped by the cursor is looked for again during
:data:`GAP_WAIT` seconds (a rolled-back insert leaves a gap for ever); at start, the ids among the
:data:`GAP_LOOKBACK` below the cursor that are not in the table are looked for the same way. A
request that turns up late never undoes a newer decision: a pause or resume (or a restart that
would lift a newer pause) older than the newest pause, resume or restart already applied to its
worker is skipped. A request committed more than :data:`GAP_WAIT` seconds after a newer one is
skipped for ever (docs/control.md).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Final

from django.db import connections
from django.db.models import Max, Q

from ..core.context import LOGGER_NAME
from ..core.pool import WorkerPool
from ..core.text import safe_str
from ..models import ControlAction, ControlRequest
from .listen import Listener, listen_unavailable

__all__ = ["GAP_LOOKBACK", "GAP_WAIT", "STARTUP_WAIT", "ControlPickup"]

logger = logging.getLogger(LOGGER_NAME)

#: Seconds :meth:`ControlPickup.start` waits for the standing state before the pool starts anyway.
STARTUP_WAIT: Final = 5.0
#: Seconds an id skipped by the cursor (an insert not committed yet) is looked for again.
GAP_WAIT: Final = 60.0
#: At most this many skipped ids are remembered (a burst of rolled-back inserts).
GAP_LIMIT: Final = 1_000
#: At start, the ids among this many below the cursor that are not in the table are looked for again.
GAP_LOOKBACK: Final = 100
#: Seconds :meth:`ControlPickup.stop` waits for each of its threads (daemons: a hung read is left behind).
JOIN_LIMIT: Final = 1.0
#: The actions that decide whether a worker is paused (a restart lifts a pause).
DECISIONS: Final = (ControlAction.PAUSE.value, ControlAction.RESUME.value, ControlAction.RESTART.value)


class ControlPickup:
    """Applies the control requests addressed to node ``node_id`` (or to every node) to a pool.

    A :class:`~django_workers.runtime.ProcessService`. ``poll_interval`` is the longest a request
    waits (the history's heartbeat interval); ``listen`` (default: when the database is
    PostgreSQL with psycopg >= 3.2) adds a ``LISTEN`` that makes it a fraction of a second.
    """

    def __init__(
        self,
        database: str,
        node_id: uuid.UUID,
        *,
        poll_interval: float,
        listen: bool | None = None,
        startup_wait: float = STARTUP_WAIT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not poll_interval > 0:
            raise ValueError(f"poll_interval must be > 0 seconds, got {poll_interval!r}")
        self.database = database
        self.node_id = node_id
        self.poll_interval = float(poll_interval)
        self.listen = listen
        self.startup_wait = float(startup_wait)
        self.clock = clock
        self.name = f"control requests pickup (database {database!r})"
        #: The id of the newest request seen (None until the first read of the database).
        self.cursor: int | None = None
        self._missing: dict[int, float] = {}  # id skipped by the cursor -> give up at (clock)
        self._decided: dict[str, tuple[int, str]] = {}  # worker -> (id, action) of its newest decision seen
        self._pool: WorkerPool | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._synced = threading.Event()
        self._thread: threading.Thread | None = None
        self._listener: Listener | None = None
        self._failing = False

    def __repr__(self) -> str:
        return f"<ControlPickup database={self.database!r} node={self.node_id}>"

    # -- the service ---------------------------------------------------------------------------------

    def start(self, pool: WorkerPool) -> None:
        """Start the thread; wait (at most ``startup_wait`` s) until the standing pauses are applied."""
        if self._thread is not None:
            raise RuntimeError("the control requests pickup is already started")
        self._pool = pool
        listen = self.listen
        if listen is None or listen:
            why_not = listen_unavailable(self.database)
            if why_not is None:
                self._listener = Listener(self.database, self._wake.set)
            elif listen:
                raise ValueError(f"cannot LISTEN for control requests: {why_not}")
            else:
                logger.debug("control requests: polling every %g s (%s)", self.poll_interval, why_not)
        self._thread = threading.Thread(target=self._run, name="runworkers:control", daemon=True)
        self._thread.start()
        if self._listener is not None:
            self._listener.start()
        if not self._synced.wait(self.startup_wait):
            logger.warning(
                "control requests: the database did not answer within %g s; the workers start now, and those "
                "paused on every node are paused as soon as it does",
                self.startup_wait,
            )

    def stop(self, timeout: float) -> None:
        """Stop the threads within ``timeout`` seconds, at most :data:`JOIN_LIMIT` each.

        A request being applied is finished first (applying one returns at once). Both threads are
        daemons: one stuck in a database read or a connection is left behind, with a warning, rather
        than eating the stop budget of the services stopped after this one (the recorder's flush).
        """
        deadline = time.monotonic() + max(0.0, timeout)
        self._stop.set()
        self._wake.set()
        if self._listener is not None and not self._listener.stop(self._join_budget(deadline)):
            logger.warning("control requests: the LISTEN thread did not stop in time; left behind (a daemon)")
        thread = self._thread
        if thread is not None:
            thread.join(self._join_budget(deadline))
            if thread.is_alive():
                logger.warning(
                    "control requests: the pickup thread did not stop in time (a database read that does not "
                    "answer?); left behind (a daemon)"
                )

    @staticmethod
    def _join_budget(deadline: float) -> float:
        return max(0.0, min(JOIN_LIMIT, deadline - time.monotonic()))

    def poll_now(self) -> None:
        """Read the requests at once instead of at the next poll (what a notification does)."""
        self._wake.set()

    # -- the thread ----------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._wake.clear()  # before reading: a request committed meanwhile wakes the next round
                self._round()
                self._wake.wait(self.poll_interval)
        finally:
            connections.close_all()  # this thread's connections

    def _round(self) -> None:
        connection = connections[self.database]
        try:
            connection.close_if_unusable_or_obsolete()
            if self.cursor is None:
                self._sync()
            else:
                self._poll()
        except Exception as exc:
            if not self._failing:
                self._failing = True
                logger.warning(
                    "control requests: reading them from database %r failed (%s); retrying every %g s",
                    self.database,
                    safe_str(exc, 500).strip() or type(exc).__name__,
                    self.poll_interval,
                )
            connection.close()
        else:
            if self._failing:
                self._failing = False
                logger.info("control requests: reading them from database %r again", self.database)
            # As at the end of a request: kept until the next read only when CONN_MAX_AGE allows it.
            connection.close_if_unusable_or_obsolete()

    def _requests(self) -> Q:
        """Rows addressed to this node or to every node."""
        return Q(node__isnull=True) | Q(node_id=self.node_id)

    def _sync(self) -> None:
        """The cursor, the gaps below it, then the standing state of each worker up to it."""
        pool = self._pool
        assert pool is not None
        requests = ControlRequest.objects.using(self.database)
        cursor = requests.aggregate(newest=Max("id"))["newest"] or 0
        # Ids handed out before the cursor was read, committed after: looked for like any gap. Read
        # before the standing state: a row committed in between is in both, and the second is skipped.
        lowest = max(1, cursor - GAP_LOOKBACK + 1)
        present = set(requests.filter(id__gte=lowest, id__lte=cursor).values_list("id", flat=True))
        give_up = self.clock() + GAP_WAIT
        for id_ in range(cursor, lowest - 1, -1):
            if id_ not in present and len(self._missing) < GAP_LIMIT:
                self._missing[id_] = give_up
        names = pool.names()
        standing = requests.filter(self._requests(), id__lte=cursor, action__in=DECISIONS, worker__in=names)
        # One query whatever the pool's size: the rows whose id is the newest of their worker's decisions.
        newest = standing.order_by().values("worker").annotate(newest=Max("id")).values("newest")
        latests = {row.worker: row for row in requests.filter(id__in=newest)}
        for name in names:
            latest = latests.get(name)
            if latest is None:
                continue
            self._decided[name] = (latest.pk, latest.action)
            if latest.action == ControlAction.PAUSE:
                self._apply(latest, standing=True)
        self.cursor = cursor
        self._synced.set()

    def _poll(self) -> None:
        """Apply the requests newer than the cursor (and those skipped by it that turned up)."""
        assert self.cursor is not None
        now = self.clock()
        self._missing = {id_: until for id_, until in self._missing.items() if until > now}
        wanted = Q(id__gt=self.cursor)
        if self._missing:
            wanted |= Q(id__in=list(self._missing))
        rows = list(ControlRequest.objects.using(self.database).filter(wanted).order_by("id"))
        if not rows:
            return
        seen = {row.pk for row in rows}
        newest = max(seen)
        for skipped in range(self.cursor + 1, newest):
            if skipped not in seen and len(self._missing) < GAP_LIMIT:
                self._missing[skipped] = now + GAP_WAIT
        for row in rows:
            self._missing.pop(row.pk, None)
            if (row.node_id is None or row.node_id == self.node_id) and not self._superseded(row):
                try:
                    self._apply(row)
                except Exception:  # never retried: the cursor moves past it
                    logger.exception("control request #%d: applying it failed", row.pk)
            self.cursor = max(self.cursor, row.pk)

    def _superseded(self, request: ControlRequest) -> bool:
        """Whether ``request`` turned up after a newer decision for its worker (then it is skipped).

        Applied in id order, a pause or resume older than the newest pause, resume or restart
        would have been overridden by it; an older restart would not have lifted a newer pause.
        """
        if request.action not in DECISIONS:
            return False
        decided = self._decided.get(request.worker)
        if decided is None or request.pk > decided[0]:
            self._decided[request.worker] = (request.pk, request.action)
            return False
        newer, newer_action = decided
        if request.pk == newer:
            why = "it was read at start, as the worker's standing state"
        elif request.action != ControlAction.RESTART:
            why = f"it turned up late, after the newer request #{newer} ({newer_action}), which decides"
        elif newer_action == ControlAction.PAUSE:
            why = f"it turned up late, and would lift the newer pause #{newer}"
        else:  # a late restart after a resume or a restart: nothing newer forbids it
            return False
        logger.info(
            "control request #%d: %s of worker %r skipped: %s",
            request.pk,
            request.action,
            request.worker,
            why,
            extra={"worker": request.worker},
        )
        return True

    # -- applying a request --------------------------------------------------------------------------

    def _apply(self, request: ControlRequest, *, standing: bool = False) -> None:
        pool = self._pool
        assert pool is not None
        name = request.worker
        try:
            execution_id = pool.execution(name).id
        except LookupError:
            level = logging.WARNING if request.node_id is not None else logging.DEBUG
            logger.log(level, "control request #%d: this node does not run worker %r; ignored", request.pk, name)
            return
        by = request.requested_by
        methods: dict[str, Callable[..., None]] = {
            ControlAction.RESTART.value: pool.restart,
            ControlAction.PAUSE.value: pool.pause,
            ControlAction.RESUME.value: pool.resume,
        }
        method = methods.get(request.action)
        if method is None:
            logger.warning("control request #%d: unknown action %r; ignored", request.pk, request.action)
            return
        try:
            method(name, by=by)
        except RuntimeError:  # the pool is stopping: nothing is started any more
            logger.info("control request #%d: not applied, the pool is stopping", request.pk)
            return
        where = "every node" if request.node_id is None else "this node"
        how = "standing pause of" if standing else request.action
        logger.info(
            "control request #%d: %s worker %r on %s, requested by %s at %s",
            request.pk,
            how,
            name,
            where,
            by,
            f"{request.requested_at:%Y-%m-%d %H:%M:%S %Z}",
            extra={"worker": name, "workerExecutionID": execution_id},
        )
