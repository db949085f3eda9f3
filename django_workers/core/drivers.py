"""The two ways a worker's attempts run: in a thread of its own, or as a task on the pool's loop.

A driver only runs attempts and waits (interruptibly) for the deferral and the backoff; what an
attempt means and what follows it is the :class:`~django_workers.core.supervisor.Supervisor`'s
(``begin_attempt`` / ``end_attempt``). The pool holds each worker's driver to start it, cancel
it at stop and show where it is when it does not stop in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import threading
from collections.abc import Sequence
from contextlib import AbstractContextManager
from types import FrameType
from typing import TYPE_CHECKING, Any

from .context import LOGGER_NAME, WorkerContext, worker_context
from .loop import EventLoopThread
from .text import format_stack

if TYPE_CHECKING:
    from .supervisor import AttemptHook, Supervisor

__all__ = ["TaskDriver", "ThreadDriver"]

logger = logging.getLogger(LOGGER_NAME)


def _enter_hooks(hooks: Sequence[AttemptHook], ctx: WorkerContext) -> AbstractContextManager[Any]:
    """The attempt hooks entered in order, as one context manager (closed in reverse)."""
    stack = contextlib.ExitStack()
    try:
        for hook in hooks:
            stack.enter_context(hook(ctx))
    except BaseException:
        stack.close()
        raise
    return stack


def _supervision_failed(supervisor: Supervisor) -> None:
    logger.exception(
        "supervision of worker %s failed",
        supervisor.name,
        extra={"worker": supervisor.name, "workerExecutionID": supervisor.execution_id},
    )


class ThreadDriver:
    """Runs a sync worker's attempts, one after the other, in a thread of its own."""

    __slots__ = ("base", "supervisor", "thread")

    def __init__(self, supervisor: Supervisor, base: contextvars.Context) -> None:
        self.supervisor = supervisor
        #: The context of the caller of ``start()``: each attempt runs in a fresh copy of it.
        self.base = base
        self.thread: threading.Thread | None = None

    def create_thread(self) -> threading.Thread:
        """The worker's thread (created, not started), its first attempt begun unless deferred.

        The first attempt begins here, in the launching thread: ``start()`` returns with the
        workers already ``running``, and the new thread only runs the attempt (a new thread that
        did the bookkeeping first kept the GIL while the launcher waited to be woken, which made
        starting many threads miss its benchmark).
        """
        supervisor = self.supervisor
        first = None if supervisor.deferral() else supervisor.begin_attempt()
        self.thread = threading.Thread(
            target=self._run,
            args=(first,),
            name=supervisor.label,
            daemon=True,  # a worker that ignores cancellation must not keep the process alive
        )
        return self.thread

    def _run(self, first: WorkerContext | None) -> None:
        supervisor = self.supervisor
        flag = supervisor.flag  # set by a stop or a control: the waits end early for nothing else
        base, attempt = self.base, self._attempt
        try:
            ctx = first
            if ctx is None:
                delay: float | None = supervisor.deferral()
                # Woken while deferred: stopped (it never starts), paused, or restarted.
                ctx = supervisor.after_wake() if delay and flag.wait(delay) else supervisor.begin_attempt()
            while ctx is not None:
                delay = supervisor.end_attempt(base.copy().run(attempt, ctx))
                if delay is None:
                    return
                ctx = supervisor.after_wake() if delay > 0 and flag.wait(delay) else supervisor.begin_attempt()
        except BaseException:  # pragma: no cover - a bug in the pool itself or a listener
            _supervision_failed(supervisor)
        finally:
            supervisor.finish()

    def _attempt(self, ctx: WorkerContext) -> BaseException | None:
        worker_context.set(ctx)
        supervisor = self.supervisor
        hooks = supervisor.runtime.attempt_hooks
        try:
            if hooks:
                with _enter_hooks(hooks, ctx):
                    supervisor.worker.run(ctx)
            else:
                supervisor.worker.run(ctx)
        except BaseException as exc:  # a worker never takes the process down
            return exc
        return None

    def cancel_attempt(self, attempt: int) -> None:
        """Cancel attempt ``attempt`` (hang detection): its ``ctx.cancelled`` becomes true.

        Nothing when that attempt has ended meanwhile: the next one is not the silent one.
        """
        self.supervisor.interrupt(attempt)

    def wake(self) -> None:
        """Nothing to do: the supervisor set the flag that the attempt and the waits watch."""

    def stack(self, frames: dict[int, FrameType]) -> str:
        """Where the thread is now."""
        thread = self.thread
        if thread is not None and thread.ident in frames:
            return format_stack(frames[thread.ident])
        return "(no stack available)\n"


class TaskDriver:
    """Runs an async worker's attempts as one task on the pool's event loop."""

    __slots__ = ("loop", "started", "supervisor", "task")

    def __init__(self, supervisor: Supervisor, loop: EventLoopThread) -> None:
        self.supervisor = supervisor
        self.loop = loop
        self.task: asyncio.Task[None] | None = None
        #: True once the task took its first step (a stop cancels only a started task).
        self.started = False

    def create_task(self, base: contextvars.Context) -> None:
        """Create the worker's task, in a copy of ``base`` (called on the loop's thread)."""
        self.task = self.loop.loop.create_task(self._run(), name=self.supervisor.label, context=base.copy())

    async def _run(self) -> None:
        self.started = True
        supervisor = self.supervisor
        cancel = supervisor.runtime.cancel
        try:
            delay: float | None = supervisor.deferral()
            # Woken while deferred: stopped (it never starts), paused, or restarted.
            ctx = supervisor.after_wake() if delay and await self._pause(delay) else supervisor.begin_attempt()
            while ctx is not None:
                # The task runs in a context of its own: each attempt sets the variable anew.
                worker_context.set(ctx)
                hooks = supervisor.runtime.attempt_hooks
                error: BaseException | None = None
                try:
                    if hooks:
                        with _enter_hooks(hooks, ctx):
                            await supervisor.worker.run(ctx)
                    else:
                        await supervisor.worker.run(ctx)
                except asyncio.CancelledError as exc:
                    error = None if cancel.is_set() else exc  # cancelled by stop(): a clean end
                    if error is not None:
                        self._uncancel()  # cancelled by the pool for a control or a silence: the task goes on
                except BaseException as exc:
                    error = exc
                delay = supervisor.end_attempt(error)
                # A zero delay still pauses: a worker failing without ever suspending, restarted
                # with no backoff, would otherwise monopolise the loop.
                if delay is None:
                    return
                ctx = supervisor.after_wake() if await self._pause(delay) else supervisor.begin_attempt()
        except BaseException:  # pragma: no cover - a bug in the pool itself or a listener
            _supervision_failed(supervisor)
        finally:
            supervisor.finish()

    async def _pause(self, seconds: float) -> bool:
        """Wait ``seconds`` on the loop (0 still yields to it); True when woken early.

        Woken early: the pool is stopping, or a control cancelled the wait (:meth:`wake`).
        """
        supervisor = self.supervisor
        # stop() came before this task's first step, or a control that _wake() could not deliver.
        if supervisor.runtime.cancel.is_set() or supervisor.has_control():
            return True
        try:
            return await self.loop.signal.wait(seconds)  # stop() wakes it: no cancellation needed
        except asyncio.CancelledError:
            if not self.supervisor.runtime.cancel.is_set():
                self._uncancel()
            return True

    def _uncancel(self) -> None:
        # The pool's own cancellation, handled: later awaits (asyncio.timeout() among them) must
        # not see the task as still being cancelled.
        task = self.task
        if task is not None and task.cancelling():
            task.uncancel()

    def cancel(self, spared: frozenset[asyncio.Task[Any]]) -> None:
        """On the loop thread, at stop: cancel the task unless it is in ``spared``.

        ``spared`` are the tasks the stop signal woke (suspended on ``ctx.until_cancelled()`` or
        the pool's own waits): they see the stop by themselves. A task that has not taken its
        first step is left alone: it sees the stop signal and ends without an attempt (a task
        cancelled before its first step would never run at all).
        """
        task = self.task
        if task is not None and self.started and not task.done() and task not in spared:
            task.cancel()

    def cancel_attempt(self, attempt: int) -> None:
        """Cancel the running attempt ``attempt`` (hang detection), from any thread."""
        self.loop.call(self._cancel_attempt, attempt)

    def _cancel_attempt(self, attempt: int) -> None:
        # On the loop thread: cancel the task if it is still in that attempt.
        if self.task is not None and self.supervisor.running_attempt() == attempt:
            self.task.cancel()

    def wake(self) -> None:
        """Cancel the task's attempt or wait, from any thread, for a pending control."""
        self.loop.call(self._wake)

    def _wake(self) -> None:
        # On the loop thread, between the task's steps: only while the control is still pending
        # (once followed, a cancellation would hit the next attempt).
        task = self.task
        if task is not None and self.started and not task.done() and self.supervisor.has_control():
            task.cancel()

    def stack(self, frames: dict[int, FrameType]) -> str:
        """Where the task is now: its await chain, or the loop's stack when it blocks the loop."""
        if self.task is None:
            return "(no stack available)\n"
        return self.loop.stack_of(self.task, frames)
