"""The event loop that runs a pool's async workers, in a thread of its own."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from types import FrameType
from typing import Any

from .stop import StopSignal
from .text import cap_middle, format_stack

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
    thread; :meth:`close` stops the loop once the given tasks are done and joins the thread.
    The loop's default executor (``asyncio.to_thread``, ``run_in_executor(None, ...)``) is its
    own: the thread shuts it down, waiting for its threads, then closes the loop, so nothing it
    started outlives it.
    """

    def __init__(self, cancel: threading.Event, name: str = "worker-pool:event-loop") -> None:
        self.loop = asyncio.new_event_loop()
        #: The pool's stop, as the tasks on this loop wait for it.
        self.signal = StopSignal(self.loop, cancel)
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        #: The threads of the default executor, recorded by each as it starts (our own record:
        #: a stop() called in one of them must not wait for the loop, which waits for them).
        self._executor_threads: set[threading.Thread] = set()
        self.executor = ThreadPoolExecutor(thread_name_prefix=f"{name}:to-thread", initializer=self._executor_thread)
        self.loop.set_default_executor(self.executor)
        self._ready = threading.Event()
        self._closing = False
        self._lock = threading.Lock()

    def _executor_thread(self) -> None:
        self._executor_threads.add(threading.current_thread())

    def _run(self) -> None:
        loop = self.loop
        self.signal.thread_id = threading.get_ident()
        asyncio.set_event_loop(loop)
        loop.call_soon(self._ready.set)
        try:
            loop.run_forever()
        finally:
            try:
                # Calls still running in the executor's threads (a cancelled worker's to_thread,
                # say) are waited for here, in the loop's thread, which stop() joins within its deadline.
                self.executor.shutdown(wait=True, cancel_futures=True)
            finally:
                asyncio.set_event_loop(None)
                loop.close()

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

    def in_executor_thread(self) -> bool:
        """True when called from a thread of the loop's default executor (``asyncio.to_thread``)."""
        return threading.current_thread() in self._executor_threads

    def stack_of(self, task: asyncio.Task[Any], frames: dict[int, FrameType]) -> str:
        """Where ``task`` is: its await chain, or the loop thread's stack when it blocks the loop."""
        running = asyncio.current_task(self.loop)  # read from another thread: a snapshot
        ident = self.thread.ident
        if running is task and ident is not None and ident in frames:
            return "blocking the event loop at:\n" + format_stack(frames[ident])
        return cap_middle("".join(traceback.format_list(await_chain(task.get_coro()))))

    def close(self, tasks: Iterable[asyncio.Task[Any] | None], deadline: float | None) -> bool:
        """Stop the loop once every task of ``tasks`` is done, and join its thread until ``deadline``.

        The thread then closes the loop by itself, so a loop left running for a task that did not
        end in time ends with that task, without another call. ``tasks`` is iterated on the loop,
        after the callbacks scheduled before (a None is no task). ``deadline`` (monotonic) None:
        only request it. Never joins from the loop's own thread or one of its executor's (the
        loop ends after them). Returns False when it joined in vain (the thread still runs).
        """
        with self._lock:
            first = not self._closing
            self._closing = True
        if first:
            self.call(self._stop_when_done, tasks)
        if deadline is None or self.thread.ident is None or self.in_loop_thread() or self.in_executor_thread():
            return True  # (not started yet: it runs the callback above, and ends, once started)
        self.thread.join(max(0.1, deadline - time.monotonic()))
        return not self.thread.is_alive()

    def _stop_when_done(self, tasks: Iterable[asyncio.Task[Any] | None]) -> None:
        # On the loop thread.
        pending = {task for task in tasks if task is not None and not task.done()}
        if not pending:
            self.loop.stop()
            return

        def done(task: asyncio.Task[Any]) -> None:
            pending.discard(task)
            if not pending:
                self.loop.stop()

        for task in pending:
            task.add_done_callback(done)
