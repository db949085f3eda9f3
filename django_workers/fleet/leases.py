"""Leases of singleton workers: one row per worker name, taken, renewed and released by single statements.

A lease is a row of :class:`~django_workers.models.Lease`: its ``holder`` (a node id), when it
expires (``expires_at``, by the database's clock) and its ``fence``, a counter that grows by one at
every change of holder. On PostgreSQL every operation here is one statement in its own
transaction (:func:`acquire`: ``INSERT … ON CONFLICT DO UPDATE … RETURNING``, which also creates
the row the first time; :func:`renew`: ``UPDATE … RETURNING``; :func:`release`: ``UPDATE``), with
no session state: no advisory lock, no session variable, no ``LISTEN``, so it works through
PgBouncer in transaction mode. :func:`acquire` and :func:`renew` commit synchronously whatever the
server's setting (``set_config('synchronous_commit', 'on', true)`` in their ``RETURNING``, scoped
to their transaction): on a server that runs with ``synchronous_commit`` off, an acknowledged
acquisition could otherwise be lost in a crash and its fence handed out twice.

Other databases (SQLite, for development on one host) use the same table through the ORM: an
``INSERT … ON CONFLICT DO NOTHING``, and an ``UPDATE`` then a read in a short transaction.

- :func:`acquire` takes a lease that is free (released) or expired by the database's clock,
  raising its fence; it never takes one that another node holds and has not let expire.
- :func:`renew` extends a lease its holder still holds with the same fence.
- :func:`release` frees it (a follower may take it at once, instead of waiting for the expiry).

What a holder may trust, and when it must stop its worker, is the caller's business (the
holder's monotonic clock, from the start of its last successful renewal); these functions only
say what the database agreed to.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from django.db import connections, transaction
from django.db.models import F, Q
from django.db.models.functions import Now

from ..models import Lease

__all__ = ["Grant", "acquire", "current", "release", "renew"]

#: The ``expires_at`` of a lease row nobody has held yet: long expired.
_NEVER = datetime(2000, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Grant:
    """A lease the database gave (or renewed) to ``holder``: its fence and its expiry."""

    name: str
    holder: uuid.UUID
    fence: int
    #: The expiry by the database's clock (a holder trusts its own clock, with a margin, instead).
    expires_at: datetime
    #: When ``holder`` took the lease (the database's clock).
    since: datetime | None = None


def _seconds(ttl: float) -> timedelta:
    if not ttl > 0:
        raise ValueError(f"a lease's time to live must be > 0 seconds, got {ttl!r}")
    return timedelta(seconds=ttl)


def acquire(name: str, holder: uuid.UUID, ttl: float, *, using: str = "default") -> Grant | None:
    """Take the lease ``name`` for ``holder`` for ``ttl`` seconds, if it is free or expired.

    Returns the grant (with a fence one more than the previous holder's), or None when another
    holder's lease has not expired by the database's clock. A holder whose own lease expired gets
    it again with a new fence: the gap may have let another run, so it is a change of holder.
    """
    duration = _seconds(ttl)
    if connections[using].vendor == "postgresql":
        took = _one(using, _ACQUIRE, [name, holder, duration.total_seconds()])
        return None if took is None else Grant(name, holder, took[0], took[1], took[2])
    Lease.objects.using(using).bulk_create(
        [Lease(name=name, holder=None, fence=0, expires_at=_NEVER)], ignore_conflicts=True
    )
    with transaction.atomic(using=using):  # the UPDATE and the read of what it wrote, together
        taken = (
            Lease.objects.using(using)
            .filter(Q(holder__isnull=True) | Q(expires_at__lt=Now()), name=name)
            .update(holder=holder, fence=F("fence") + 1, expires_at=Now() + duration, since=Now())
        )
        if not taken:
            return None
        row = Lease.objects.using(using).get(name=name)
    return Grant(name, holder, row.fence, row.expires_at, row.since)


#: Acknowledged means durable, whatever the server's ``synchronous_commit``: an acquisition lost in a
#: crash would hand its fence out again, a lost renewal would end the lease before its holder thinks.
#: Set for this transaction only, from the statement that wrote the row (evaluated before its commit).
_DURABLE: Final = "set_config('synchronous_commit', 'on', true)"

#: PostgreSQL: create the row if needed and take it if free or expired, in one statement (one round
#: trip, one transaction in autocommit), returning what it wrote; nothing when another holds it.
_ACQUIRE: Final = """
    INSERT INTO {table} AS lease (name, holder, fence, expires_at, since)
    VALUES (%s, %s, 1, statement_timestamp() + %s * interval '1 second', statement_timestamp())
    ON CONFLICT (name) DO UPDATE
    SET holder = EXCLUDED.holder, fence = lease.fence + 1, expires_at = EXCLUDED.expires_at, since = EXCLUDED.since
    WHERE lease.holder IS NULL OR lease.expires_at < statement_timestamp()
    RETURNING fence, expires_at, since, {durable}
"""
#: PostgreSQL: extend a lease its holder still holds with the same fence, in one statement.
_RENEW: Final = """
    UPDATE {table} SET expires_at = statement_timestamp() + %s * interval '1 second'
    WHERE name = %s AND holder = %s AND fence = %s
    RETURNING expires_at, {durable}
"""


def _one(using: str, sql: str, params: list[Any]) -> tuple[Any, ...] | None:
    connection = connections[using]
    with connection.cursor() as cursor:
        cursor.execute(sql.format(table=connection.ops.quote_name(Lease._meta.db_table), durable=_DURABLE), params)
        row: tuple[Any, ...] | None = cursor.fetchone()
        return row


def renew(grant: Grant, ttl: float, *, using: str = "default") -> Grant | None:
    """Extend ``grant`` by ``ttl`` seconds from now (the database's clock), if its holder still holds it.

    None when the lease changed holder (or fence) meanwhile: the grant is lost for good.
    """
    duration = _seconds(ttl)
    if connections[using].vendor == "postgresql":
        returned = _one(using, _RENEW, [duration.total_seconds(), grant.name, grant.holder, grant.fence])
        if returned is None:
            return None
        return Grant(grant.name, grant.holder, grant.fence, returned[0], grant.since)
    with transaction.atomic(using=using):
        renewed = (
            Lease.objects.using(using)
            .filter(name=grant.name, holder=grant.holder, fence=grant.fence)
            .update(expires_at=Now() + duration)
        )
        if not renewed:
            return None
        expires_at = Lease.objects.using(using).values_list("expires_at", flat=True).get(name=grant.name)
    return Grant(grant.name, grant.holder, grant.fence, expires_at, grant.since)


def release(grant: Grant, *, using: str = "default") -> bool:
    """Free the lease of ``grant`` at once, if its holder still holds it; True when it did."""
    return bool(
        Lease.objects.using(using)
        .filter(name=grant.name, holder=grant.holder, fence=grant.fence)
        .update(holder=None, expires_at=Now())
    )


def current(name: str, *, using: str = "default") -> Lease | None:
    """The lease row of ``name`` as stored (None when nobody ever took it)."""
    return Lease.objects.using(using).filter(name=name).first()
