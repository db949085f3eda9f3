"""Database hygiene for worker threads, the way Django does it around a request.

The pool wraps every sync attempt in :func:`connection_hygiene` (unusable or expired
connections of the worker's thread are closed before and after the attempt, and a transaction the
attempt left open is rolled back) and closes all of the thread's connections when the worker's
supervision ends (:func:`close_thread_connections`). Inside one long attempt, wrap each unit of
work in :func:`unit_of_work`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator

from django.db import close_old_connections, connections

from .core.context import LOGGER_NAME, WorkerContext
from .core.events import LifecycleEvent, WorkerFinished

__all__ = ["close_thread_connections", "connection_hygiene", "release_leaked_transactions", "unit_of_work"]

logger = logging.getLogger(LOGGER_NAME)


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


@contextlib.contextmanager
def unit_of_work() -> Iterator[None]:
    """Close unusable or expired connections before and after a block of ORM work.

    Use it inside a long-running attempt, once per unit of work (a message, a batch)::

        while not ctx.cancelled:
            with unit_of_work():
                process(next_batch())
            ctx.sleep(1.0)

    Semantics are those of Django's ``close_old_connections`` around a request: a connection
    killed by the server or older than ``CONN_MAX_AGE`` is replaced on next use.
    """
    close_old_connections()
    try:
        yield
    finally:
        close_old_connections()


def release_leaked_transactions(ctx: WorkerContext | None = None) -> list[str]:
    """Roll back and close the connections of this thread that a transaction was left open on.

    An ``atomic()`` block entered and never exited (or autocommit turned off and never turned
    back on) would otherwise poison the thread for good: Django refuses to close a connection
    inside an atomic block, so every later query fails with "the connection is closed". Each
    such connection is closed (the server rolls the transaction back) and its atomic state is
    dropped, so the next query opens a fresh connection. Logged at WARNING, with the worker's
    name when ``ctx`` is given. Returns the aliases of the connections released.
    """
    released = []
    for conn in connections.all(initialized_only=True):
        if conn.connection is None and not conn.in_atomic_block:
            continue
        autocommit_off = conn.autocommit != conn.settings_dict.get("AUTOCOMMIT", True)
        if not (conn.in_atomic_block or conn.closed_in_transaction or autocommit_off):
            continue
        released.append(conn.alias)
        # Leaving the atomic state lets close() really close; connect() resets the rest.
        conn.in_atomic_block = False
        conn.closed_in_transaction = False
        try:
            conn.close()
        except Exception:  # a broken connection: dropped all the same
            conn.connection = None
        if ctx is not None:
            logger.warning(
                "worker %s left a transaction open on database %r (an atomic block not exited, or "
                "autocommit turned off): it was rolled back and the connection closed",
                ctx.worker_name,
                conn.alias,
                extra={"worker": ctx.worker_name, "workerExecutionID": ctx.execution_id},
            )
        else:
            logger.warning(
                "a transaction was left open on database %r: it was rolled back and the connection closed",
                conn.alias,
            )
    return released


@contextlib.contextmanager
def connection_hygiene(ctx: WorkerContext) -> Iterator[None]:
    """Attempt hook: :func:`unit_of_work` around a sync attempt (a no-op for async workers).

    After the attempt, a transaction it left open is rolled back and its connection closed
    (:func:`release_leaked_transactions`), so the next attempt starts with a usable connection.
    """
    if _in_event_loop():  # async workers reach the ORM through sync_to_async threads
        yield
        return
    release_leaked_transactions(ctx)
    close_old_connections()
    try:
        yield
    finally:
        release_leaked_transactions(ctx)
        close_old_connections()


def close_thread_connections(event: LifecycleEvent) -> None:
    """Listener: close every connection of a sync worker's thread when its supervision ends."""
    if isinstance(event, WorkerFinished) and not _in_event_loop():
        connections.close_all()
