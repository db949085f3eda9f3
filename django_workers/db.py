"""Database hygiene for worker threads, the way Django does it around a request.

The pool wraps every sync attempt in :func:`connection_hygiene` (unusable or expired
connections of the worker's thread are closed before and after the attempt) and closes all of
the thread's connections when the worker's supervision ends (:func:`close_thread_connections`).
Inside one long attempt, wrap each unit of work in :func:`unit_of_work`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

from django.db import close_old_connections, connections

from .core.context import WorkerContext
from .core.events import LifecycleEvent, WorkerFinished

__all__ = ["close_thread_connections", "connection_hygiene", "unit_of_work"]


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


@contextlib.contextmanager
def connection_hygiene(ctx: WorkerContext) -> Iterator[None]:
    """Attempt hook: :func:`unit_of_work` around a sync attempt (a no-op for async workers)."""
    if _in_event_loop():  # async workers reach the ORM through sync_to_async threads
        yield
        return
    with unit_of_work():
        yield


def close_thread_connections(event: LifecycleEvent) -> None:
    """Listener: close every connection of a sync worker's thread when its supervision ends."""
    if isinstance(event, WorkerFinished) and not _in_event_loop():
        connections.close_all()
