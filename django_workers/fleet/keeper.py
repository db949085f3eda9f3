"""The lease keeper: the process service that runs a pool's singleton workers only while it holds their leases.

One :class:`LeaseKeeper` per ``runworkers`` process holds a *seat* per singleton worker of its
pool; a seat is a follower, a leader, releasing, or stuck.

- A **follower** campaigns every ``renew`` seconds (:func:`~django_workers.fleet.leases.acquire`,
  one ``UPDATE``): the database gives it the lease only once the previous holder released it or
  its expiry has passed by the database's clock. Then it leads: ``pool.lead(name, fence)``, the
  worker runs with ``ctx.fence``. A worker an operator paused is not campaigned for.
- A **leader** renews every ``renew`` seconds. It trusts its lease until
  ``start of its last successful renewal + ttl - margin`` on its own monotonic clock, and cancels
  its worker ``stop_timeout`` seconds before that (``pool.stand_by``), so that the worker, given
  its stop time to return, is gone before the lease can expire. A separate thread (the guard)
  enforces that deadline, so a statement hanging on an unreachable database cannot delay it.
  A renewal the database refuses (another node took it over) loses the lease at once, as does an
  operator's pause (handing the worker over to another replica).
- **Releasing**: its worker was cancelled. Once it returned, the lease is released (a follower
  may take it at once instead of waiting for the expiry) and the seat follows again. A worker
  still running ``stop_timeout`` seconds later is **stuck** (``pool.mark_stuck``: its stack is
  logged, it is unhealthy): the seat never campaigns while that run is alive.

At stop (after the pool stopped its workers), every lease whose worker returned is released; one
whose worker did not is left to expire. Every statement is one of
:mod:`~django_workers.fleet.leases`: no session state, so it works through PgBouncer in
transaction mode.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from django.db import DatabaseError, connections

from ..core.context import LOGGER_NAME
from ..core.execution import WorkerStatus
from ..core.pool import WorkerPool
from ..core.text import safe_str
from . import leases
from .leases import Grant

__all__ = ["FOLLOWER", "LEADER", "RELEASING", "STUCK", "LeaseKeeper", "SeatState"]

logger = logging.getLogger(LOGGER_NAME)

LEADER: Final = "leader"
FOLLOWER: Final = "follower"
RELEASING: Final = "releasing"
STUCK: Final = "stuck"

#: Seconds between two looks at a cancelled worker (has it returned yet?).
RETURN_POLL: Final = 0.02
#: Seconds :meth:`LeaseKeeper.stop` waits for each of its threads (daemons: a hung statement is left behind).
JOIN_LIMIT: Final = 2.0


@dataclass(frozen=True, slots=True)
class SeatState:
    """What this node knows of one singleton's lease (a snapshot)."""

    name: str
    #: ``leader``, ``follower``, ``releasing`` (cancelled, waiting for the worker to return) or ``stuck``.
    role: str
    #: The fence of the lease held (or being released), else None.
    fence: int | None
    #: When this node took the lease (the database's clock), else None.
    since: datetime | None


class _Seat:
    """One singleton's lease on this node (changed under the keeper's lock)."""

    __slots__ = ("cancel_at", "grant", "lost_at", "name", "next_at", "returned", "role", "since")

    def __init__(self, name: str) -> None:
        self.name = name
        self.role: str = FOLLOWER
        self.grant: Grant | None = None
        #: Monotonic: when the worker is cancelled unless a renewal succeeded first (leader).
        self.cancel_at = 0.0
        #: Monotonic: the next campaign (follower) or renewal (leader).
        self.next_at = 0.0
        #: Monotonic: when the lease was lost (releasing, stuck).
        self.lost_at = 0.0
        #: The cancelled worker has returned: the lease may be released.
        self.returned = False
        self.since: datetime | None = None


class LeaseKeeper:
    """Holds the leases of ``pool``'s singleton workers for ``holder`` (this node's id).

    ``ttl``, ``renew`` and ``margin`` are ``WORKERS["FLEET"]``'s ``LEASE_TTL``, effective
    ``RENEW_INTERVAL`` and ``MARGIN``; ``stop_timeout`` the pool's. The settings check
    (``ttl > renew + margin + stop_timeout``) makes sure the worker is cancelled after at least one
    renewal could be retried. ``clock`` is the monotonic clock (a seam for tests).
    """

    name = "lease keeper"

    def __init__(
        self,
        holder: uuid.UUID,
        *,
        ttl: float,
        renew: float,
        margin: float,
        stop_timeout: float,
        database: str = "default",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < renew < ttl:
            raise ValueError(f"the renew interval must be > 0 and < the lease's ttl, got {renew!r} and {ttl!r}")
        window = ttl - margin - stop_timeout
        if window <= 0:
            raise ValueError(
                f"a lease of {ttl:g} seconds cannot cover its margin ({margin:g} s) and the stop timeout "
                f"({stop_timeout:g} s): the worker would be cancelled as soon as it started"
            )
        self.holder = holder
        self.ttl = ttl
        self.renew = renew
        self.margin = margin
        self.stop_timeout = stop_timeout
        self.database = database
        #: Seconds after the start of a successful renewal (or acquisition) when the worker is cancelled.
        self.window = window
        #: Seconds before retrying a statement that failed (the database is down, say).
        self.retry = min(renew, max(0.1, renew / 5))
        self._clock = clock
        self._pool: WorkerPool | None = None
        self._seats: dict[str, _Seat] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._wake = threading.Event()  # the campaigner: a release is due, or the stop
        self._guard_wake = threading.Event()  # the guard: a deadline changed, or the stop
        self._threads: list[threading.Thread] = []
        self._failing = False  # a statement failed: logged once until one succeeds

    # -- reading ------------------------------------------------------------------------------

    def seats(self) -> list[SeatState]:
        """A snapshot of every singleton's seat on this node, in registration order."""
        with self._lock:
            return [
                SeatState(seat.name, seat.role, None if seat.grant is None else seat.grant.fence, seat.since)
                for seat in self._seats.values()
            ]

    # -- the service ----------------------------------------------------------------------------

    def start(self, pool: WorkerPool) -> None:
        """Take a seat for each singleton of ``pool`` and start campaigning (before ``pool.start()``)."""
        self._pool = pool
        for name, execution in pool.executions().items():
            if execution.singleton:
                self._seats[name] = _Seat(name)
        if not self._seats:
            return
        for target, label in ((self._campaigner, "lease-keeper"), (self._guard, "lease-guard")):
            thread = threading.Thread(target=target, name=label, daemon=True)
            self._threads.append(thread)
            thread.start()

    def stop(self, timeout: float) -> None:
        """Stop campaigning and release every lease whose worker returned (after ``pool.stop()``)."""
        self._stopping.set()
        self._wake.set()
        self._guard_wake.set()
        deadline = time.monotonic() + min(timeout, JOIN_LIMIT)
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                logger.warning(
                    "the %s thread did not end in time (a statement may hang); its leases are left to expire",
                    thread.name,
                )

    # -- the campaigner: every statement runs here ------------------------------------------------

    def _campaigner(self) -> None:
        try:
            while not self._stopping.is_set():
                for seat in list(self._seats.values()):
                    if self._stopping.is_set():
                        break
                    self._serve(seat)
                self._wait_next()
        except BaseException:  # pragma: no cover - a bug here must not pass silently
            logger.exception("the lease keeper failed; its singleton workers stand by once their leases end")
            raise
        finally:
            try:
                self._release_at_stop()
            finally:
                connections.close_all()

    def _serve(self, seat: _Seat) -> None:
        with self._lock:
            role, due, returned = seat.role, seat.next_at, seat.returned
        if role in (RELEASING, STUCK):
            if returned:
                self._release(seat)
            return
        if self._clock() < due:
            return
        if role == LEADER:
            self._renew(seat)
        else:
            self._campaign(seat)

    def _wait_next(self) -> None:
        now = self._clock()
        with self._lock:
            due = [seat.next_at for seat in self._seats.values() if seat.role in (LEADER, FOLLOWER)]
            releasing = any(seat.returned for seat in self._seats.values())
        if releasing:
            return
        wait = max(0.0, min(due, default=now + self.renew) - now)
        self._wake.wait(wait)
        self._wake.clear()

    def _statement_failed(self, what: str, seat: _Seat, exc: BaseException) -> None:
        connections[self.database].close()  # a broken connection is opened again next time
        if not self._failing:
            self._failing = True
            logger.warning(
                "could not %s the lease of %s (%s); retrying every %g seconds",
                what,
                seat.name,
                safe_str(exc).strip() or type(exc).__name__,
                self.retry,
                extra={"worker": seat.name, "workerExecutionID": ""},
            )

    def _statement_succeeded(self) -> None:
        if self._failing:
            self._failing = False
            logger.info("the lease database answers again")

    def _campaign(self, seat: _Seat) -> None:
        pool = self._pool
        assert pool is not None
        if pool.stopping or pool.execution(seat.name).paused:
            with self._lock:
                seat.next_at = self._clock() + self.renew
            return
        began = self._clock()
        try:
            grant = leases.acquire(seat.name, self.holder, self.ttl, using=self.database)
        except DatabaseError as exc:
            self._statement_failed("take", seat, exc)
            with self._lock:
                seat.next_at = began + self.retry
            return
        self._statement_succeeded()
        if grant is None:
            with self._lock:
                seat.next_at = began + self.renew
            return
        # Granted too late to be trusted (a slow statement, a pause right after it), or the pool
        # is stopping: never led, released at once, the worker never ran under it.
        if self._clock() >= began + self.window or not self._lead(pool, seat.name, grant.fence):
            with self._lock:
                seat.grant, seat.role, seat.returned = grant, RELEASING, True
            return
        with self._lock:
            seat.role, seat.grant, seat.since = LEADER, grant, grant.since
            seat.cancel_at = began + self.window
            seat.next_at = began + self.renew
        self._guard_wake.set()  # the deadline may already be past: the guard stands it by at once
        logger.info(
            "took the lease of %s with fence %d: it runs on this node",
            seat.name,
            grant.fence,
            extra={"worker": seat.name, "workerExecutionID": ""},
        )

    @staticmethod
    def _lead(pool: WorkerPool, name: str, fence: int) -> bool:
        """Lead the worker under ``fence``; False when the pool is stopping.

        Called before the seat becomes leader: a lease lost from then on finds the worker leading.
        """
        try:
            pool.lead(name, fence)
        except RuntimeError:
            return False
        return True

    def _renew(self, seat: _Seat) -> None:
        pool = self._pool
        assert pool is not None
        if not pool.stopping and pool.execution(seat.name).paused:
            self._lose(seat, "paused by an operator: another node may take it")
            return
        grant = seat.grant
        assert grant is not None
        began = self._clock()
        try:
            renewed = leases.renew(grant, self.ttl, using=self.database)
        except DatabaseError as exc:
            self._statement_failed("renew", seat, exc)
            with self._lock:
                seat.next_at = began + self.retry
            return
        self._statement_succeeded()
        if renewed is None:
            self._lose(seat, "another node holds it")
            return
        with self._lock:
            if seat.role == LEADER and seat.grant is grant:
                seat.cancel_at = began + self.window
                seat.next_at = began + self.renew
        self._guard_wake.set()

    def _release(self, seat: _Seat) -> None:
        """Release the seat's lease (its worker has returned, or never ran under it); the seat follows."""
        grant = seat.grant
        if grant is not None:
            try:
                released = leases.release(grant, using=self.database)
            except DatabaseError as exc:
                self._statement_failed("release", seat, exc)  # it expires by itself
            else:
                self._statement_succeeded()
                if released:
                    logger.info(
                        "released the lease of %s (fence %d)",
                        seat.name,
                        grant.fence,
                        extra={"worker": seat.name, "workerExecutionID": ""},
                    )
        with self._lock:
            seat.role, seat.grant, seat.since, seat.returned = FOLLOWER, None, None, False
            seat.next_at = self._clock() + self.renew

    def _release_at_stop(self) -> None:
        pool = self._pool
        for seat in self._seats.values():
            if seat.grant is None:
                continue
            if pool is not None and pool.execution(seat.name).status is WorkerStatus.RUNNING:
                logger.warning(
                    "the lease of %s is left to expire: its worker has not returned",
                    seat.name,
                    extra={"worker": seat.name, "workerExecutionID": ""},
                )
                continue
            self._release(seat)

    # -- losing a lease (either thread) ----------------------------------------------------------

    def _lose(self, seat: _Seat, reason: str) -> None:
        pool = self._pool
        assert pool is not None
        with self._lock:
            if seat.role != LEADER:
                return
            seat.role, seat.lost_at, seat.returned = RELEASING, self._clock(), False
        with contextlib.suppress(RuntimeError):  # the pool is stopping: its stop cancels the worker
            pool.stand_by(seat.name, reason)
        logger.warning(
            "lost the lease of %s (%s): its worker is cancelled",
            seat.name,
            reason,
            extra={"worker": seat.name, "workerExecutionID": ""},
        )
        self._guard_wake.set()

    # -- the guard: deadlines, and cancelled workers returning ------------------------------------

    def _guard(self) -> None:
        try:
            while not self._stopping.is_set():
                self._guard_once()
        except BaseException:  # pragma: no cover - a bug here must not pass silently
            logger.exception("the lease guard failed")
            raise

    def _guard_once(self) -> None:
        pool = self._pool
        assert pool is not None
        now = self._clock()
        with self._lock:
            expired = [seat for seat in self._seats.values() if seat.role == LEADER and now >= seat.cancel_at]
        for seat in expired:
            self._lose(seat, f"not renewed within {self.window:g} seconds")
        with self._lock:
            waiting = [seat for seat in self._seats.values() if seat.role in (RELEASING, STUCK) and not seat.returned]
        for seat in waiting:
            if pool.execution(seat.name).status is not WorkerStatus.RUNNING:
                with self._lock:
                    seat.returned = True
                self._wake.set()
            elif seat.role == RELEASING and now >= seat.lost_at + self.stop_timeout:
                # First: a stuck seat's worker reads stuck. False: it returned meanwhile.
                if not pool.mark_stuck(seat.name, self.stop_timeout):
                    with self._lock:
                        seat.returned = True
                    self._wake.set()
                    continue
                with self._lock:
                    seat.role = STUCK
                logger.error(
                    "%s is stuck: it did not return within %g seconds of losing its lease; this node will not "
                    "take its lease again while that run is alive",
                    seat.name,
                    self.stop_timeout,
                    extra={"worker": seat.name, "workerExecutionID": ""},
                )
        now = self._clock()
        with self._lock:
            deadlines = [seat.cancel_at for seat in self._seats.values() if seat.role == LEADER]
            polling = any(seat.role in (RELEASING, STUCK) and not seat.returned for seat in self._seats.values())
        wait = max(0.0, min(deadlines, default=now + self.renew) - now)
        if polling:
            wait = min(wait, RETURN_POLL)
        self._guard_wake.wait(wait)
        self._guard_wake.clear()
