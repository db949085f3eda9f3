"""The pool's stop as the tasks on its event loop see it: futures that ``stop()`` completes.

``ctx.until_cancelled()`` and the pool's own deferral and backoff waits (async workers) wait on a
:class:`StopFuture` of the pool's :class:`StopSignal`. A task suspended in ``await`` on one of
them is woken by the stop instead of being cancelled: the future records which task awaits it,
so the pool knows whom to spare (its own record, not asyncio's private ``Task._fut_waiter``).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Generator
from typing import Any

__all__ = ["StopFuture", "StopSignal"]


def _wake(waiter: asyncio.Future[bool]) -> None:
    if not waiter.done():
        waiter.set_result(False)


#: A StopSignal forgets its cancelled futures (a ``wait_for(ctx.until_cancelled(), 1)`` loop makes
#: one a second) when it holds more than four times as many as after the last sweep, and this many:
#: memory stays bounded and sweeping costs little per future made.
_SWEEP_AT = 1024


class StopFuture(asyncio.Future[bool]):
    """A future that the stop completes with True; it records the task awaiting it.

    Only a task that awaits the future itself (``await ctx.until_cancelled()``) is recorded: one
    that hands it to ``asyncio.wait()`` or ``gather()`` awaits something else, and is cancelled
    by the stop like any other. While the future is pending, the task recorded is still
    suspended on it: a task stops awaiting a pending future only by being cancelled, which
    cancels the future too.
    """

    __slots__ = ("awaited_by",)

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop=loop)
        #: The task suspended in ``await`` on this future, if any.
        self.awaited_by: asyncio.Task[Any] | None = None

    def __await__(self) -> Generator[Any, None, bool]:
        if not self.done():
            self.awaited_by = asyncio.current_task(self.get_loop())
        return super().__await__()

    __iter__ = __await__


class StopSignal:
    """The pool's stop, as the tasks on its event loop wait for it without being cancelled.

    :meth:`future` gives a future that :meth:`set` completes with True; :meth:`wait` awaits one
    with a timeout. Every method runs on the loop's thread (the pool calls :meth:`set` from a
    loop callback).
    """

    __slots__ = ("_cancel", "_sweep_at", "_waiters", "is_set", "loop", "thread_id")

    def __init__(self, loop: asyncio.AbstractEventLoop, cancel: threading.Event) -> None:
        self.loop = loop
        #: The thread that runs the loop (set by that thread before the loop runs).
        self.thread_id: int | None = None
        #: The pool's stop flag, set (by ``stop()``, in its thread) before this signal.
        self._cancel = cancel
        self.is_set = False
        #: The pending futures, in the order they were made (a dict used as an ordered set).
        self._waiters: dict[StopFuture, None] = {}
        self._sweep_at = _SWEEP_AT

    def set(self) -> frozenset[asyncio.Task[Any]]:
        """Complete every pending future with True, now and for good (later ones are born done).

        Returns the tasks that were suspended on one of them: this call wakes them, they will see
        the stop by themselves, and need no cancellation.
        """
        self.is_set = True
        waiters, self._waiters = self._waiters, {}
        woken = frozenset(w.awaited_by for w in waiters if w.awaited_by is not None and not w.done())
        for waiter in waiters:
            if not waiter.done():  # a cancelled one, or one its timer completed
                waiter.set_result(True)
        return woken

    def future(self) -> StopFuture:
        """A future that :meth:`set` completes with True (done already if it was set)."""
        waiter = StopFuture(self.loop)
        if self.is_set:
            waiter.set_result(True)
            return waiter
        waiters = self._waiters
        waiters[waiter] = None
        if len(waiters) > self._sweep_at:  # amortised: forget the cancelled ones
            for done in [w for w in waiters if w.done()]:
                del waiters[done]
            self._sweep_at = max(_SWEEP_AT, 4 * len(waiters))
        return waiter

    async def wait(self, timeout: float | None = None) -> bool:
        """Wait until the signal is set (True) or ``timeout`` seconds have passed (False)."""
        if self.is_set:
            return True
        waiter = self.future()
        timer = None if timeout is None else self.loop.call_later(timeout, _wake, waiter)
        try:
            await waiter
        except BaseException:  # cancelled: forget the waiter
            self._waiters.pop(waiter, None)
            if timer is not None:
                timer.cancel()
            raise
        if timer is not None:  # woken by set() (which forgot every waiter) or by the timer
            timer.cancel()
            self._waiters.pop(waiter, None)
        # The pool's stop flag is set before the signal: a timer that fires in between is a stop too.
        return self.is_set or self._cancel.is_set()
