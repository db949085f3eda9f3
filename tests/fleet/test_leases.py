"""The lease of a singleton worker: taken only when free or expired by the database's clock, fenced.

On SQLite and on PostgreSQL (the suite's second pass). Contention runs real threads, each a node
with its own connection, against the same rows.
"""

from __future__ import annotations

import itertools
import random
import threading
import uuid
from datetime import datetime

import pytest
from django.db import connection, connections

from django_workers.fleet import Grant, acquire, current, release, renew
from tests.support import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

A, B = uuid.uuid4(), uuid.uuid4()


def test_a_free_lease_is_taken_with_fence_1_and_held_against_others() -> None:
    grant = acquire("relay", A, 30)
    assert grant is not None
    assert (grant.name, grant.holder, grant.fence) == ("relay", A, 1)
    row = current("relay")
    assert row is not None and (row.holder, row.fence, row.expires_at) == (A, 1, grant.expires_at)
    assert row.since is not None and row.since < grant.expires_at

    assert acquire("relay", B, 30) is None, "held, not expired: nobody else takes it"
    assert acquire("relay", A, 30) is None, "not even its holder: acquire is for a free or expired lease"
    assert acquire("other", B, 30) is not None, "leases are per name"


def test_renew_extends_only_the_holders_own_grant() -> None:
    grant = acquire("relay", A, 30)
    assert grant is not None
    renewed = renew(grant, 60)
    assert renewed is not None
    assert (renewed.fence, renewed.holder) == (1, A)
    assert renewed.expires_at > grant.expires_at
    forged = Grant("relay", B, grant.fence, grant.expires_at)
    assert renew(forged, 60) is None, "another node cannot renew it"
    assert renew(Grant("relay", A, 7, grant.expires_at), 60) is None, "nor its holder with another fence"


def test_release_lets_a_follower_take_it_at_once_with_the_next_fence() -> None:
    first = acquire("relay", A, 3600)
    assert first is not None
    assert release(first)
    row = current("relay")
    assert row is not None and row.holder is None and row.fence == 1

    second = acquire("relay", B, 3600)
    assert second is not None and second.fence == 2
    assert renew(first, 3600) is None, "the old grant is lost for good"
    assert not release(first), "and cannot free the new holder's lease"
    assert current("relay").holder == B  # type: ignore[union-attr]


def test_an_expired_lease_is_taken_over_only_after_its_expiry_by_the_database_clock() -> None:
    first = acquire("relay", A, 0.3)
    assert first is not None
    taken: list[Grant] = []
    wait_for(lambda: taken.append(acquire("relay", B, 30)) or taken[-1] is not None, 10, interval=0.02)
    second = taken[-1]
    row = current("relay")
    assert row is not None and row.since is not None
    assert row.since >= first.expires_at, "the follower took it once the first lease had expired"
    assert second.fence == first.fence + 1
    assert renew(first, 30) is None, "the expired holder cannot come back with its old fence"


def test_a_holder_whose_lease_expired_takes_it_again_with_a_new_fence() -> None:
    first = acquire("relay", A, 0.05)
    assert first is not None
    again: list[Grant | None] = []
    wait_for(lambda: again.append(acquire("relay", A, 30)) or again[-1] is not None, 10, interval=0.02)
    assert again[-1] is not None and again[-1].fence == 2


@pytest.mark.parametrize("ttl", [0, -1.0, float("nan")])
def test_a_time_to_live_must_be_positive(ttl: float) -> None:
    with pytest.raises(ValueError, match="time to live must be > 0 seconds"):
        acquire("relay", A, ttl)


def test_contending_nodes_never_share_a_fence_and_take_over_only_after_expiry_or_release() -> None:
    """Threads (nodes with their own connections) acquire, renew and release at random, briefly."""
    if connection.vendor == "sqlite" and connection.settings_dict["NAME"].startswith("file:memorydb"):
        pytest.skip("an in-memory SQLite database is one connection: threads cannot contend on it")
    lock = threading.Lock()
    #: fence -> (holder, the DB time it was taken, its latest known expiry, released?)
    grants: dict[int, list[object]] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def node(seed: int) -> None:
        rng = random.Random(seed)
        me = uuid.uuid4()
        try:
            start.wait()
            for _ in range(40):
                grant = acquire("contended", me, rng.choice([0.01, 0.02, 0.05]))
                if grant is None:
                    continue
                row = current("contended")
                assert row is not None and row.since is not None
                with lock:
                    assert grant.fence not in grants, f"fence {grant.fence} granted twice"
                    grants[grant.fence] = [me, row.since, grant.expires_at, False]
                for _ in range(rng.randrange(3)):
                    renewed = renew(grant, 0.02)
                    if renewed is None:
                        break
                    grant = renewed
                    with lock:
                        grants[grant.fence][2] = grant.expires_at
                if rng.random() < 0.5 and release(grant):
                    with lock:
                        grants[grant.fence][3] = True
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=node, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    assert len(grants) >= 2, "the check needs some takeovers to mean anything"
    fences = sorted(grants)
    assert fences == list(range(1, len(fences) + 1)), "every change of holder raised the fence by one"
    for previous, following in itertools.pairwise(fences):
        _, taken_at, _, _ = grants[following]
        _, _, expired_at, released = grants[previous]
        assert isinstance(taken_at, datetime) and isinstance(expired_at, datetime)
        assert released or taken_at >= expired_at, (
            f"fence {following} taken at {taken_at} before fence {previous} expired at {expired_at}"
        )
