"""The in-memory queue between the listener (worker threads) and the writer thread.

Appends take no lock: the listener is a deque append, a ``len()`` and a comparison. Every pop
happens under one lock (the writer taking a batch, or an overflow trimming the oldest), so that
the two never pop the same item. On overflow the oldest events go a chunk at a time and are
counted; flush and stop requests (:class:`Marker`) are never dropped.
"""

from __future__ import annotations

import threading
import typing
from collections import deque
from collections.abc import Iterable, Sequence
from itertools import islice
from typing import Any, Final

from ..core.events import LifecycleEvent, Listener, ReportedEvent

__all__ = ["REPORTED", "EventBuffer", "Marker"]


#: The event types that add a line to an execution's report (and a row to the history).
REPORTED: Final = frozenset(typing.get_args(ReportedEvent))


class Marker:
    """A flush or stop request in the queue: done once what precedes it is written."""

    __slots__ = ("done", "ok", "stop")

    def __init__(self, stop: bool = False) -> None:
        self.done = threading.Event()
        self.ok = False
        self.stop = stop

    def finish(self, ok: bool) -> None:
        """Wake whoever waits on the request; ``ok`` says whether what preceded it was written."""
        self.ok = ok
        self.done.set()


def finish_markers(items: Iterable[Any], ok: bool) -> None:
    """Finish the markers among ``items`` (the other items are events)."""
    for item in items:
        if type(item) is Marker:
            item.finish(ok)


class EventBuffer:
    """A bounded queue of lifecycle events and markers, filled without a lock, drained by one writer.

    ``wakeup`` is set by the first event of a burst (the queue had at most one item), by a flush
    or stop request and by an overflow; the writer waits on it when the queue is empty.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.wakeup = threading.Event()
        self._queue: deque[Any] = deque()
        # Overflow: drop this many of the oldest at once, so that a full buffer costs the
        # listener one trim per chunk rather than one per event.
        self._drop_chunk = max(1, min(size // 10, 100))
        self._pop_lock = threading.Lock()
        self._dropped = 0  # only changed under _pop_lock
        # Items that left the queue (taken or trimmed, minus those put back): with the queue's
        # length, how many arrived. The listener does not count (it would cost every event).
        self._removed = 0  # only changed under _pop_lock

    def make_listener(self) -> Listener:
        """The listener: a plain function over closure variables (the cheapest thing to call).

        An append, a ``len()`` and a chained comparison; only the first event after the writer
        emptied the queue sets ``wakeup``, and only an overflow takes the trim path.
        """
        queue = self._queue
        append = queue.append
        notify = self._notify
        size = self.size

        def listener(event: LifecycleEvent) -> None:
            append(event)
            if not 1 < len(queue) <= size:
                notify()

        return listener

    def _notify(self) -> None:
        if len(self._queue) > self.size:
            self._trim()
            return  # the writer is behind, hence awake: no need to wake it
        self.wakeup.set()

    def _trim(self) -> None:
        """Drop the oldest events until the buffer has room again (a chunk at a time).

        The chunk is popped and counted in C (``islice`` over ``popleft``).
        """
        queue = self._queue
        with self._pop_lock:
            excess = len(queue) - (self.size + 1 - self._drop_chunk)
            if excess <= 0:
                return
            popped = list(islice(iter(queue.popleft, None), excess))
            self._removed += len(popped)
            kinds = list(map(type, popped))
            if Marker in kinds:  # a flush or stop request is never dropped
                markers = [item for item in popped if type(item) is Marker]
                queue.extend(markers)
                self._removed -= len(markers)
            # Counted: the events the history would have shown (not the pool's own events).
            self._dropped += sum(map(REPORTED.__contains__, kinds))

    def put(self, marker: Marker) -> None:
        """Queue a flush or stop request and wake the writer."""
        self._queue.append(marker)
        self.wakeup.set()

    def take(self, limit: int) -> tuple[list[Any], int]:
        """Pop up to ``limit`` of the oldest items (events and markers), in order.

        Also the drop count at that moment: every event it counts was older than the items
        taken (the oldest go first), so a count that grew since the previous take means a gap
        in the stream just before these items.
        """
        queue = self._queue
        with self._pop_lock:
            items = list(islice(iter(queue.popleft, None), min(limit, len(queue))))
            self._removed += len(items)
            return items, self._dropped

    def requeue(self, items: Sequence[Any]) -> None:
        """Put items back at the front (oldest first), then drop the oldest if that overflows."""
        with self._pop_lock:
            self._queue.extendleft(reversed(items))
            self._removed -= len(items)
        if len(self._queue) > self.size:
            self._trim()

    def discard(self, items: Iterable[Any]) -> int:
        """Count the reported events among ``items`` (taken, never to be written) as dropped; how many."""
        count = sum(1 for item in items if type(item) in REPORTED)
        with self._pop_lock:
            self._dropped += count
        return count

    def markers(self) -> list[Marker]:
        """The flush and stop requests waiting in the queue (a snapshot)."""
        return [item for item in list(self._queue) if type(item) is Marker]

    def __len__(self) -> int:
        return len(self._queue)

    @property
    def dropped(self) -> int:
        """How many reported events were dropped so far (overflow, or discarded batches)."""
        return self._dropped

    @property
    def arrived(self) -> int:
        """How many items were queued since the start (a snapshot; markers included)."""
        with self._pop_lock:
            return self._removed + len(self._queue)

    @property
    def pending(self) -> int:
        """How many reported events wait in the queue (a snapshot: workers may be adding more)."""
        return sum(1 for item in list(self._queue) if type(item) in REPORTED)
