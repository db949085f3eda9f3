"""Singleton workers across real ``runworkers`` replicas on PostgreSQL: faults, watched by an oracle.

Three replicas run the singleton ``fleet-relay`` (tests/scenarios/workers_fleet.py) on one lease.
It writes a shared row every 50 ms with the guard of docs/fleet.md (``… WHERE fence <= :token``)
and records every run and write in an oracle file (tests/fleet/harness.py). After each fault the
oracle is read and checked:

- no overlap: no two runs of different replicas at the same time (a SIGKILLed replica's run ends
  when the test killed it);
- fences strictly increase in the order the runs began, and the resource's fence never goes back;
- takeover (from the fault to the start of the next run) within ``LEASE_TTL + RENEW_INTERVAL + 1``
  seconds, and well under ``LEASE_TTL`` after a graceful stop (the lease is released).

Each replica reaches PostgreSQL through a TCP proxy of its own, which the partition tests cut.
The negative control runs the same partition with the holder's trust window disabled: the oracle
must see the overlap there. The tests print their measurements (``pytest -s``).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db import connection

from tests.fleet.harness import (
    FLEET_WORKERS,
    LEASE_TTL,
    LOST,
    MARGIN,
    RENEW_INTERVAL,
    RESOURCE,
    RESOURCE_TABLE,
    SINGLETON,
    STOP_TIMEOUT,
    TAKEOVER_BOUND,
    TAKEOVER_DEADLINE,
    TOOK,
    UNSAFE_SETTINGS,
    Fleet,
    Replica,
    Run,
    frozen,
    report,
)
from tests.support import StartRunworkers

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        not os.environ.get("DATABASE_URL"),
        reason="needs PostgreSQL: set DATABASE_URL (the PostgreSQL pass of `make test` does)",
    ),
]


def test_the_settings_give_a_holder_time_to_stop_before_its_lease_expires() -> None:
    assert LEASE_TTL > RENEW_INTERVAL + MARGIN + STOP_TIMEOUT


@pytest.fixture
def fleet(start: StartRunworkers, tmp_path: Path) -> Iterator[Fleet]:
    """The fleet of one test, with the shared resource (row 1 of ``fleet_resource``) at fence 0."""
    with connection.cursor() as cursor:
        for statement in RESOURCE_TABLE:
            cursor.execute(statement)
    directory = tmp_path / "oracle"
    directory.mkdir()
    database = connection.settings_dict
    target = (database["HOST"] or "127.0.0.1", int(database["PORT"] or 5432))
    replicas = Fleet(start, directory, FLEET_WORKERS, target)
    try:
        yield replicas
    finally:
        replicas.close()
        with connection.cursor() as cursor:
            cursor.execute("DROP TABLE fleet_resource")


def resource() -> tuple[int, int]:
    """The shared row's counter and fence, as stored."""
    with connection.cursor() as cursor:
        cursor.execute(RESOURCE)
        value, fence = cursor.fetchone()
    return value, fence


def test_sigkill_of_the_holder(fleet: Fleet) -> None:
    holder, run = fleet.lead()

    fault = fleet.kill(holder)
    successor = fleet.wait_takeover(fault, holder.pid, TAKEOVER_DEADLINE)
    fleet.replica(successor.pid).process.expect(TOOK)

    oracle = fleet.kill_all()
    oracle.assert_safe(resource())
    takeover = successor.start - fault
    report("SIGKILL", takeover=f"{takeover:.3f}s", bound=f"{TAKEOVER_BOUND:g}s", fences=(run.fence, successor.fence))
    assert successor.fence == run.fence + 1
    assert takeover <= TAKEOVER_BOUND


def test_graceful_stop_of_the_holder_releases_the_lease(fleet: Fleet) -> None:
    """SIGTERM: the holder cancels its worker, waits for it, and releases the lease: a follower takes over at once."""
    holder, run = fleet.lead()

    fault = time.monotonic()
    holder.process.send(signal.SIGTERM)
    successor = fleet.wait_takeover(fault, holder.pid, TAKEOVER_DEADLINE)
    assert holder.process.wait() == 0
    holder.process.expect(rf"released the lease of {SINGLETON} \(fence {run.fence}\)")

    oracle = fleet.kill_all()
    oracle.assert_safe(resource())
    takeover = successor.start - fault
    report("SIGTERM", takeover=f"{takeover:.3f}s", ttl=f"{LEASE_TTL:g}s", fences=(run.fence, successor.fence))
    assert takeover < LEASE_TTL, "released, not left to expire"
    assert "Traceback" not in holder.process.stderr


def test_a_holder_frozen_past_its_lease_is_fenced_off(fleet: Fleet) -> None:
    """SIGSTOP of the holder for longer than the TTL, then SIGCONT.

    A follower takes over meanwhile. The frozen process cannot know it: when it resumes, its run
    overlaps the new holder's for a moment in time (expected: no clock-based scheme prevents it,
    and the oracle is not asked for zero overlap here). What protects the resource is the fence:
    every write the stale holder attempts after SIGCONT is rejected by the guard, the resource's
    fence never goes back, and the stale holder logs the loss and stands by.
    """
    holder, _ = fleet.lead()

    with frozen(holder.process) as freeze:
        fault = freeze.stopped
        successor = fleet.wait_takeover(fault, holder.pid, TAKEOVER_DEADLINE)
        time.sleep(max(0.0, fault + LEASE_TTL + 0.5 - time.monotonic()))  # held longer than the TTL
    assert freeze.resumed is not None
    resumed = freeze.resumed
    holder.process.expect(LOST)
    fleet.wait(lambda o: any(r.pid == holder.pid and r.end is not None for r in o.runs), "the stale run returns")
    fleet.wait(
        lambda o: any(w.pid == successor.pid and w.outcome == "applied" and w.began > resumed + 0.5 for w in o.writes),
        "the new holder still writes",
    )

    oracle = fleet.kill_all()
    oracle.assert_fenced()
    stale = [w for w in oracle.writes if w.pid == holder.pid and w.began >= resumed]
    assert stale, "the stale holder wrote (its last write, on its way out) after it resumed"
    assert {w.outcome for w in stale} == {"rejected"}, stale
    assert not [r for r in oracle.runs if r.pid == holder.pid and r.start > resumed], "it stood by"
    value, fence = resource()
    oracle.assert_stored(value, fence)
    assert fence == successor.fence
    overlaps = oracle.overlaps()
    assert all(holder.pid in (o.first.pid, o.second.pid) for o in overlaps), "only the frozen run overlaps"
    assert "is stuck" not in holder.process.stderr
    takeover = successor.start - fault
    report(
        "SIGSTOP",
        takeover=f"{takeover:.3f}s",
        bound=f"{TAKEOVER_BOUND:g}s",
        frozen=f"{resumed - fault:.3f}s",
        stale_writes_rejected=len(stale),
        frozen_run_overlap=f"{sum(o.seconds for o in overlaps):.3f}s",
        reason=holder.process.expect(LOST).group(1),  # type: ignore[union-attr]
    )
    assert takeover <= TAKEOVER_BOUND


def test_the_holders_connections_terminated(fleet: Fleet) -> None:
    """pg_terminate_backend of every connection of the holder: it reconnects, and keeps or loses the lease cleanly."""
    holder, run = fleet.lead()

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            [f"fleet-{holder.pid}"],
        )
        terminated = len(cursor.fetchall())
    fault = time.monotonic()
    assert terminated >= 1
    # Watched until a lease that was not renewed in time would have expired and been taken over.
    fleet.wait(
        lambda o: any(w.outcome == "applied" and w.began > fault + TAKEOVER_BOUND for w in o.writes),
        "the singleton writes again",
    )

    oracle = fleet.kill_all()
    oracle.assert_safe(resource())
    later = oracle.first_run_after(fault)
    if later is None:
        outcome = f"kept the lease (fence {run.fence})"
    else:
        outcome = f"lost it: pid {later.pid} took over with fence {later.fence} after {later.start - fault:.3f}s"
        assert later.start - fault <= TAKEOVER_BOUND
    errors = [w for w in oracle.writes if w.pid == holder.pid and w.outcome == "error"]
    report("pg_terminate_backend", connections_terminated=terminated, failed_writes=len(errors), holder=outcome)


def partition(fleet: Fleet, holder: Replica) -> tuple[float, Run, float]:
    """Cut ``holder`` off the database until a follower took over and the TTL passed: the cut, the new run, the heal."""
    fault = time.monotonic()
    holder.proxy.cut()
    successor = fleet.wait_takeover(fault, holder.pid, TAKEOVER_DEADLINE)
    time.sleep(max(0.0, fault + LEASE_TTL + 0.5 - time.monotonic()))  # the partition lasts longer than the TTL
    holder.proxy.heal()
    return fault, successor, time.monotonic()


def test_a_holder_partitioned_from_the_database(fleet: Fleet) -> None:
    """The holder cannot reach the database for longer than the TTL: it cancels its worker on its own clock
    before the lease can expire, and a follower takes over: no overlap."""
    holder, _ = fleet.lead()

    fault, successor, healed = partition(fleet, holder)
    reason = holder.process.expect(LOST).group(1)  # type: ignore[union-attr]
    holder.process.expect(r"the lease database answers again")  # healed: it campaigns again, as a follower

    oracle = fleet.kill_all()
    oracle.assert_safe(resource())
    (stopped,) = [r for r in oracle.runs if r.pid == holder.pid]
    assert stopped.end is not None and not stopped.killed
    takeover = successor.start - fault
    report(
        "partition",
        takeover=f"{takeover:.3f}s",
        bound=f"{TAKEOVER_BOUND:g}s",
        partitioned=f"{healed - fault:.3f}s",
        holder_stopped_after=f"{stopped.end - fault:.3f}s",
        gap=f"{successor.start - stopped.end:.3f}s",
        reason=reason,
    )
    assert reason.startswith("not renewed within")
    assert takeover <= TAKEOVER_BOUND


def test_negative_control_without_the_trust_window_the_oracle_sees_the_overlap(fleet: Fleet) -> None:
    """The partition again, with a holder that trusts its lease forever (settings_fleet_unsafe): it keeps
    running while a follower takes the expired lease. The oracle must report that overlap; the fence
    still rejects the stale holder's writes once it reaches the database again."""
    holder, _ = fleet.lead(UNSAFE_SETTINGS)

    fault, successor, healed = partition(fleet, holder)
    holder.process.expect(rf"lost the lease of {SINGLETON} \(another node holds it\)")
    fleet.wait(lambda o: any(r.pid == holder.pid and r.end is not None for r in o.runs), "the stale run returns")

    oracle = fleet.kill_all()
    oracle.assert_fenced()
    oracle.assert_stored(*resource())
    overlaps = oracle.overlaps()
    seconds = sum(o.seconds for o in overlaps)
    stale = [w for w in oracle.writes if w.pid == holder.pid and w.began >= healed]
    report(
        "negative control",
        overlaps=len(overlaps),
        overlap=f"{seconds:.3f}s",
        takeover=f"{successor.start - fault:.3f}s",
        stale_writes_rejected=f"{sum(w.outcome == 'rejected' for w in stale)}/{len(stale)}",
    )
    assert overlaps, f"the oracle saw no overlap:\n{oracle.describe()}"
    assert all(w.outcome == "rejected" for w in stale if w.outcome != "error")
