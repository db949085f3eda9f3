"""The event loop that runs a pool's async workers, in a thread of its own."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import traceback
from collections.abc import Callable
from types import FrameType
from typing import Any

from .stop import StopSignal

__all__ = ["EventLoopThread", "await_chain"]


def await_chain(coro: Any) -> traceback.StackSummary:
    """Where a suspended coroutine waits: its frame, then each coroutine it awaits, innermost last."""
    frames = []
    seen = 0
    while coro is not None and seen < 100:
        seen += 1
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None) or getattr(coro, "ag_frame", None)
        if frame is None:
            break
        frames.append((frame, frame.f_lineno))
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None) or getattr(coro, "ag_await", None)
    return traceback.StackSummary.extract(iter(frames))


class EventLoopThread:
    """A new event loop run by a daemon thread, with the pool's :class:`StopSignal` on it.

    :meth:`start` returns once the loop runs; :meth:`call` schedules a callback on it from any
    thread; :meth:`close` stops the loop, joins the thread and closes the loop (once).
    """

    def __init__(self, cancel: threading.Event, name: str = "worker-pool:event-loop") -> None:
        self.loop = asyncio.new_event_loop()
        #: The pool's stop, as the tasks on this loop wait for it.
        self.signal = StopSignal(self.loop, cancel)
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._ready = threading.Event()
        self._closing = False
        self._lock = threading.Lock()

    def _run(self) -> None:
        loop = self.loop
        self.signal.thread_id = threading.get_ident()
        asyncio.set_event_loop(loop)
        loop.call_soon(self._ready.set)
        try:
            loop.run_forever()
        finally:
            asyncio.set_event_loop(None)

    def start(self) -> None:
        """Start the thread and wait until the loop runs."""
        self.thread.start()
        self._ready.wait()

    def call(self, callback: Callable[..., object], *args: Any) -> None:
        """Schedule ``callback(*args)`` on the loop (thread-safe); nothing once the loop is closed."""
        with contextlib.suppress(RuntimeError):  # closed by an earlier stop
            self.loop.call_soon_threadsafe(callback, *args)

    def in_loop_thread(self) -> bool:
        """True when called from the loop's own thread."""
        return threading.current_thread() is self.thread

    def stack_of(self, task: asyncio.Task[Any], frames: dict[int, FrameType]) -> str:
        """Where ``task`` is: its await chain, or the loop thread's stack when it blocks the loop."""
        running = asyncio.current_task(self.loop)  # read from another thread: a snapshot
        ident = self.thread.ident
        if running is task and ident is not None and ident in frames:
            return "blocking the event loop at:\n" + "".join(traceback.format_stack(frames[ident]))
        return "".join(traceback.format_list(await_chain(task.get_coro())))

    def close(self, deadline: float) -> None:
        """Stop the loop and join its thread until ``deadline`` (monotonic); close it if it ended."""
        with self._lock:
            first = not self._closing
            self._closing = True
        if first:
            self.call(self.loop.stop)
        self.thread.join(max(0.1, deadline - time.monotonic()))
        if first and not self.thread.is_alive():
            self.loop.close()
