"""The execution history: a pool listener that stores every execution attempt and its events.

:class:`HistoryRecorder` is a process service (:class:`django_workers.runtime.ProcessService`): ``runworkers``
starts it before the pool when ``WORKERS["HISTORY"]["ENABLED"]`` is true and stops it after the
pool, within the part of the stop timeout it reserves (:meth:`HistoryRecorder.stop_reserve`), so
that even workers that do not stop in time leave a closed history. What it stores is described
in ``docs/history.md``.

Two halves, one queue between them (:mod:`~django_workers.history.buffer`):

- The listener (:meth:`HistoryRecorder.__call__`) runs in the worker's thread. It appends the
  event to a deque and, on the first event of a burst, sets an ``Event``: no lock, no I/O, no
  formatting. A worker never waits on the database and never fails because of it.
- One writer thread (:mod:`~django_workers.history.writer`) does everything else: it registers
  the node (one row per process, :mod:`~django_workers.history.nodes`), writes the events in
  batches (one transaction per batch: an upsert of the attempts' rows, then the events: ``COPY``
  on PostgreSQL, ``executemany`` elsewhere, :mod:`~django_workers.history.sql`), heartbeats the
  node every ``heartbeat_interval`` seconds with the database clock, closes the open attempts of
  nodes that stopped heartbeating (``kill -9``, a lost host) and prunes rows older than the
  retention, a small batch at a time (:mod:`~django_workers.history.retention`).

When the database is down or slow the writer retries with backoff and the deque keeps the newest
``buffer_size`` events; when it overflows the oldest are dropped, counted (``Node.dropped_events``,
the ``worker_recorder_dropped_events_total`` metric), logged, and a node-level marker event says
how many and why (the rate events arrived at, what held the writer back) once it can be written.
Dropped data is never replaced by a guess: an attempt whose end may have been dropped is stored
as ``unknown``. When the workers keep the CPU busy the writer paces itself
(it sleeps several times the CPU time a batch took), so that history never slows them much.

The modules: ``recorder`` (the wiring), ``buffer`` (the queue), ``writer`` (the thread),
``attempts`` (events to rows), ``sql`` (the statements), ``nodes`` (the node row, orphans),
``retention`` (pruning). Importing this package imports the models: only once the app registry
is ready.
"""

from .nodes import close_orphans
from .recorder import HistoryRecorder
from .retention import (
    DEFAULT_PRUNE_BATCH_SIZE,
    DEFAULT_PRUNE_INTERVAL,
    PruneCounts,
    count_prunable,
    prune_history,
    prune_step,
)

__all__ = [
    "DEFAULT_PRUNE_BATCH_SIZE",
    "DEFAULT_PRUNE_INTERVAL",
    "HistoryRecorder",
    "PruneCounts",
    "close_orphans",
    "count_prunable",
    "prune_history",
    "prune_step",
]
