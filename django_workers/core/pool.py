"""``WorkerPool``: registers named workers, runs them concurrently, stops them within a deadline."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import math
import sys
import threading
import time
import traceback
from collections.abc import Iterable, Sequence
from types import FunctionType, MethodType, TracebackType
from typing import Any

from .backoff import Backoff
from .context import LOGGER_NAME, StopSignal
from .events import EVENT_TYPES, LifecycleEvent, Listener, PoolStarted, PoolStopped, PoolStopping, listener_event_types
from .execution import WorkerExecution
from .supervisor import AttemptHook, Supervisor, uuid4_batch
from .worker import Worker, worker_name

__all__ = ["DEFAULT_HISTORY_SIZE", "DEFAULT_STOP_TIMEOUT", "WorkerPool"]

logger = logging.getLogger(LOGGER_NAME)

DEFAULT_HISTORY_SIZE = 100
DEFAULT_STOP_TIMEOUT = 30.0


def _seconds(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds (int or float), got {value!r}")
    seconds = float(value)
    if math.isnan(seconds) or math.isinf(seconds) or seconds < 0:
        raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value!r}")
    return seconds


def _attempts(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int (0 = unlimited), got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0 (0 = unlimited, 1 = no restart), got {value!r}")
    return value


def _backoff(name: str, value: object) -> Backoff:
    if not isinstance(value, Backoff):
        raise TypeError(f"{name} must be a django_workers.Backoff, got {value!r}")
    return value


def _await_chain(coro: Any) -> traceback.StackSummary:
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


class WorkerPool:
    """Runs registered workers concurrently and supervises them.

    Sync workers run in a thread each; async workers run as tasks on one event loop that the pool
    owns in a thread of its own. Failed attempts restart after a backoff, up to
    ``max_executions_attempts`` attempts (0 = unlimited). ``stop()`` cancels every worker and waits
    at most its timeout.

    ``listeners`` receive the typed lifecycle events of :mod:`django_workers.core.events`;
    ``attempt_hooks`` wrap every attempt (see :data:`~django_workers.core.supervisor.AttemptHook`).
    """

    def __init__(
        self,
        deferred_start_threshold: float = 0.0,
        max_executions_attempts: int = 1,
        restart_backoff: Backoff | None = None,
        stop_timeout: float = DEFAULT_STOP_TIMEOUT,
        history_size: int = DEFAULT_HISTORY_SIZE,
        listeners: Iterable[Listener] = (),
        attempt_hooks: Iterable[AttemptHook] = (),
    ) -> None:
        self.deferred_start_threshold = _seconds("deferred_start_threshold", deferred_start_threshold)
        self.max_executions_attempts = _attempts("max_executions_attempts", max_executions_attempts)
        self.restart_backoff = Backoff() if restart_backoff is None else _backoff("restart_backoff", restart_backoff)
        self.stop_timeout = _seconds("stop_timeout", stop_timeout)
        if isinstance(history_size, bool) or not isinstance(history_size, int) or history_size < 1:
            raise ValueError(f"history_size must be an int >= 1 (events kept per worker), got {history_size!r}")
        self.history_size = history_size
        self._lock = threading.RLock()
        #: Guards the execution reports of all the pool's workers (see Supervisor). One lock, not
        #: one per worker: its critical sections are a few stores, and a lock that stays in the
        #: CPU cache is cheaper to take than ten thousand that do not.
        self._state_lock = threading.Lock()
        self._listeners: list[Listener] = []
        #: What to call for each event class, in subscription order (see add_listener), and the
        #: listener each of those calls belongs to.
        self._routes: dict[type, tuple[Listener, ...]] = dict.fromkeys(EVENT_TYPES, ())
        self._listener_of: dict[int, Listener] = {}
        for listener in listeners:
            self.add_listener(listener)
        #: Shared, read-only objects that every WorkerContext exposes as ``ctx.extensions``.
        self._extensions: dict[str, Any] = {}
        self._attempt_hooks: tuple[AttemptHook, ...] = tuple(attempt_hooks)
        for hook in self._attempt_hooks:
            if not callable(hook):
                raise TypeError(f"attempt hooks must be callables returning a context manager, got {hook!r}")
        #: The stop signal shared by every worker (``ctx.cancelled``, ``ctx.sleep``, waits).
        self._cancel = threading.Event()
        self._watchdog: threading.Thread | None = None
        self._watch_wakeup = threading.Event()
        self._supervisors: dict[str, Supervisor] = {}
        #: The launched sync workers (a thread each), in launch order: what stop() joins.
        self._threaded: list[Supervisor] = []
        self._started = False
        self._stopping = False
        self._base_context: contextvars.Context | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        #: The stop signal as async workers wait for it on the loop (exists with the loop).
        self._signal: StopSignal | None = None
        self._loop_thread: threading.Thread | None = None
        self._loop_closing = False
        self._running = 0
        self._idle = threading.Condition(self._lock)

    # -- configuration ------------------------------------------------------------------------

    def add_listener(self, listener: Listener) -> None:
        """Subscribe a callable to the pool's lifecycle events.

        All of them, or those of the classes in its ``event_types`` attribute, if it has one
        (see :mod:`django_workers.core.events`).
        """
        if not callable(listener):
            raise TypeError(f"a listener must be a callable taking one event, got {listener!r}")
        event_types = listener_event_types(listener)
        # An object with a __call__ method is routed as its bound method: calling that directly
        # skips the lookup of __call__ that calling the object does on every event.
        method = getattr(type(listener), "__call__", None)  # noqa: B004 - not a callability test
        call = MethodType(method, listener) if isinstance(method, FunctionType) else listener
        with self._lock:
            self._listeners.append(listener)
            self._listener_of[id(call)] = listener  # by id: a listener need not be hashable
            # Replaced, not mutated: a publishing thread iterates the tuple it read, undisturbed.
            for event_type in event_types:
                self._routes[event_type] += (call,)

    def register(
        self,
        worker: Worker,
        *,
        deferred_start_threshold: float | None = None,
        max_executions_attempts: int | None = None,
        restart_backoff: Backoff | None = None,
        max_silence: float | None = None,
        restart_on_silence: bool = False,
    ) -> WorkerPool:
        """Register a worker, with optional per-worker overrides of the pool's settings.

        Hang detection: with ``max_silence`` (seconds), a running attempt that does not call
        ``ctx.heartbeat()`` for that long gets the event ``no heartbeat for <max_silence> seconds``
        and counts as silent (unhealthy); with ``restart_on_silence`` it is also cancelled (a sync
        worker sees ``ctx.cancelled``, an async worker's task is cancelled) and ends in error,
        to be restarted like any failed attempt.

        Raises ``ValueError`` for a duplicate name. After ``start()`` the worker starts at once.
        Returns the pool, so calls can be chained.
        """
        name = worker_name(worker)
        deferred = (
            self.deferred_start_threshold
            if deferred_start_threshold is None
            else _seconds("deferred_start_threshold", deferred_start_threshold)
        )
        attempts = (
            self.max_executions_attempts
            if max_executions_attempts is None
            else _attempts("max_executions_attempts", max_executions_attempts)
        )
        backoff = self.restart_backoff if restart_backoff is None else _backoff("restart_backoff", restart_backoff)
        silence = None if max_silence is None else _seconds("max_silence", max_silence)
        if silence == 0:
            raise ValueError("max_silence must be > 0 seconds (None disables hang detection)")
        if not isinstance(restart_on_silence, bool):
            raise TypeError(f"restart_on_silence must be a bool, got {restart_on_silence!r}")
        if restart_on_silence and silence is None:
            raise ValueError("restart_on_silence needs max_silence (the silence after which to restart)")
        with self._lock:
            if name in self._supervisors:
                raise ValueError(f"a worker named {name!r} is already registered; worker names must be unique")
            if self._stopping:
                raise RuntimeError(f"cannot register worker {name!r}: the pool is stopped")
            supervisor = Supervisor(
                self, worker, name, deferred, attempts, backoff, self.history_size, silence, restart_on_silence
            )
            self._supervisors[name] = supervisor
            launch = self._started
            if launch:
                self._running += 1
        if launch:  # outside the lock: listeners never run under it
            self._launch([supervisor])
            self._watch_wakeup.set()
        return self

    # -- reading ------------------------------------------------------------------------------

    def names(self) -> list[str]:
        """Registered worker names, in registration order."""
        with self._lock:
            return list(self._supervisors)

    def executions(self) -> dict[str, WorkerExecution]:
        """Snapshots of every registered worker's execution report, in registration order."""
        with self._lock:
            supervisors = list(self._supervisors.values())
        return {supervisor.name: supervisor.snapshot() for supervisor in supervisors}

    def execution(self, name: str) -> WorkerExecution:
        """The snapshot of one worker; ``LookupError`` for an unknown name."""
        with self._lock:
            supervisor = self._supervisors.get(name)
        if supervisor is None:
            raise LookupError(f"execution for worker {name} was not found")
        return supervisor.snapshot()

    @property
    def listeners(self) -> tuple[Listener, ...]:
        """The subscribed listeners, in subscription order."""
        return tuple(self._listeners)

    @property
    def started(self) -> bool:
        """True once ``start()`` was called."""
        return self._started

    @property
    def stopping(self) -> bool:
        """True once ``stop()`` was called."""
        return self._stopping

    # -- running ------------------------------------------------------------------------------

    def start(self) -> None:
        """Start every registered worker in the background and return at once.

        Workers inherit a copy of the caller's ``contextvars`` context (a fresh copy per attempt
        for sync workers). Raises ``RuntimeError`` when called twice.
        """
        with self._lock:
            if self._started:
                raise RuntimeError("the pool is already started; a WorkerPool can be started once")
            self._started = True
            self._base_context = contextvars.copy_context()
            supervisors = list(self._supervisors.values())
            names = tuple(self._supervisors)
            self._running += len(supervisors)
        # Outside the lock: listeners never run under it.
        self._publish(PoolStarted(names))
        self._launch(supervisors)

    def _launch(self, supervisors: Sequence[Supervisor]) -> None:
        # Called without the lock; each supervisor is launched exactly once (by start() or register()).
        assert self._base_context is not None
        base = self._base_context
        async_ones: list[Supervisor] = []
        threads: list[threading.Thread] = []
        watched = False
        for supervisor, execution_id in zip(supervisors, uuid4_batch(len(supervisors)), strict=True):
            supervisor.prepare(execution_id)
            if supervisor.max_silence is not None:
                watched = True
            if supervisor.is_async:
                async_ones.append(supervisor)
                continue
            # The first attempt (unless deferred) begins here, before its thread exists: the new
            # thread then only runs it. A new thread that first did the bookkeeping kept the GIL
            # for microseconds after Thread.start() had woken this thread, which then had to wait
            # to be woken a second time, for every worker (benchmark 2 of bench_core.py: about
            # 1.3x -> 1.1x the raw threads on Python 3.13). And start() returns with the workers
            # already "running".
            first = None if supervisor.deferred_start_threshold else supervisor.begin_attempt()
            thread = threading.Thread(
                target=supervisor.drive_sync,
                args=(base, first),
                name=supervisor.label,
                daemon=True,  # a worker that ignores cancellation must not keep the process alive
            )
            supervisor.thread = thread
            threads.append(thread)
            self._threaded.append(supervisor)  # list.append is atomic: no lock needed
        # All created, then all started: creating a thread between two starts made the new
        # threads and this one trade the GIL more (benchmark 2 of bench_core.py: 1.3x -> 1.1x).
        for thread in threads:
            thread.start()
        if async_ones:
            with self._lock:
                loop = self._ensure_loop()
            loop.call_soon_threadsafe(self._create_tasks, async_ones)
        if watched:
            with self._lock:
                if self._watchdog is None and not self._stopping:
                    self._watchdog = threading.Thread(target=self._watch, name="worker-pool:watchdog", daemon=True)
                    self._watchdog.start()

    def _watch(self) -> None:
        """The watchdog: reports (and maybe cancels) attempts silent for longer than max_silence.

        It sleeps until the earliest moment a watched attempt could become silent; heartbeats do
        not wake it (it re-reads them when it wakes), registrations and stop() do.
        """
        while not self._cancel.is_set():
            now = time.monotonic()
            wake_at = now + 60.0
            with self._lock:
                watched = [s for s in self._supervisors.values() if s.max_silence is not None]
            for supervisor in watched:
                due = supervisor.check_silence(now)
                if due is not None:
                    wake_at = min(wake_at, due)
                elif supervisor.max_silence is not None:
                    # Not running yet (or already reported): look again within its max_silence.
                    wake_at = min(wake_at, now + supervisor.max_silence)
            self._watch_wakeup.wait(max(0.001, wake_at - time.monotonic()))
            self._watch_wakeup.clear()

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            loop = asyncio.new_event_loop()
            ready = threading.Event()

            def run() -> None:
                signal.thread_id = threading.get_ident()
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                try:
                    loop.run_forever()
                finally:
                    asyncio.set_event_loop(None)

            signal = StopSignal(loop, self._cancel)
            thread = threading.Thread(target=run, name="worker-pool:event-loop", daemon=True)
            self._loop, self._loop_thread, self._signal = loop, thread, signal
            thread.start()
            ready.wait()
        return self._loop

    def _create_tasks(self, batch: list[Supervisor]) -> None:
        # Runs on the loop thread.
        assert self._loop is not None and self._base_context is not None
        create_task, base = self._loop.create_task, self._base_context
        for supervisor in batch:
            supervisor.task = create_task(supervisor.drive_async(), name=supervisor.label, context=base.copy())

    def _cancel_tasks(self) -> None:
        # Runs on the loop thread. First the signal: a task suspended on one of its futures
        # (ctx.until_cancelled(), the pool's own deferral and backoff waits) is woken, and sees
        # the stop by itself. Every other task is cancelled: its worker sees CancelledError where
        # it awaits. Which future a task is suspended on is asyncio's Task._fut_waiter; a task
        # without it is cancelled, the behaviour for everything but the signal.
        # A task that has not started yet is left alone: it will see the stop signal and end
        # without an attempt (a task cancelled before its first step would never run at all).
        assert self._signal is not None
        woken = self._signal.set()
        for supervisor in list(self._supervisors.values()):
            task = supervisor.task
            if (
                task is not None
                and getattr(task, "_fut_waiter", None) not in woken
                and supervisor.task_started
                and not task.done()
            ):
                task.cancel()

    def _worker_finished(self, supervisor: Supervisor) -> None:
        with self._lock:  # the lock of the _idle condition (a cheaper way in than the condition's)
            supervisor.done = True
            self._running -= 1
            if self._running <= 1:  # 1: stop() called by the last worker running waits for the others
                self._idle.notify_all()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until no worker is left running (all finished or exhausted), or ``timeout``.

        Returns True when none is left. Does not stop anything.
        """
        with self._idle:
            return self._idle.wait_for(lambda: self._running == 0, timeout)

    def stop(self, timeout: float | None = None) -> list[str]:
        """Cancel every worker and wait at most ``timeout`` seconds (default: ``stop_timeout``).

        Returns the names of workers still running at the deadline: they keep status ``running``,
        get the event ``did not stop within <timeout> seconds`` and their stack is logged. A stop
        before ``start()`` is a no-op. Nothing restarts once ``stop()`` is called.
        """
        timeout = self.stop_timeout if timeout is None else _seconds("timeout", timeout)
        if self._loop_thread is not None and threading.current_thread() is self._loop_thread:
            raise RuntimeError(
                "stop() waits for the workers, so it cannot run on the pool's event loop (it would block "
                "every async worker); from an async worker, call: await asyncio.to_thread(pool.stop)"
            )
        deadline = time.monotonic() + timeout
        with self._lock:
            if not self._started:
                return []
            first_call = not self._stopping
            self._stopping = True
            supervisors = list(self._supervisors.values())
            threaded = list(self._threaded)
            names = tuple(self._supervisors)
        if first_call:
            self._publish(PoolStopping(names, timeout))
            self._cancel.set()
            self._watch_wakeup.set()
            for supervisor in threaded:
                if supervisor.attempt_cancel is not None:
                    supervisor.attempt_cancel.set()
            if self._loop is not None:  # async workers were launched
                with contextlib.suppress(RuntimeError):  # the loop was closed by an earlier stop
                    self._loop.call_soon_threadsafe(self._cancel_tasks)
        current = threading.current_thread()
        # A worker calling stop() (or a listener, in its thread) cannot wait for itself. Only sync
        # workers have threads: async ones are never "own", and leave no thread to join.
        own = sum(1 for s in threaded if s.thread is current)
        with self._idle:
            # Every launched worker is counted in _running until it is done: the others are all
            # done when the count is down to this thread's own worker, if any.
            self._idle.wait_for(lambda: self._running <= own, max(0.0, deadline - time.monotonic()))
            everyone_done = self._running <= own
        for supervisor in threaded:
            thread = supervisor.thread
            if supervisor.done and thread is not None and thread is not current:
                thread.join(max(0.0, deadline - time.monotonic()))
        not_stopped = [] if everyone_done else [s for s in supervisors if not s.done and s.thread is not current]
        if not_stopped:
            frames = sys._current_frames()
            for supervisor in not_stopped:
                if not supervisor.timed_out:
                    supervisor.time_out(timeout, self._stack_of(supervisor, frames))
        if not any(s.is_async for s in not_stopped):
            self._close_loop(deadline)
        if self._watchdog is not None and self._watchdog is not current:
            self._watchdog.join(max(0.0, deadline - time.monotonic()))
        self._publish(PoolStopped(names, tuple(s.name for s in not_stopped)))
        return [s.name for s in not_stopped]

    def _stack_of(self, supervisor: Supervisor, frames: dict[int, Any]) -> str:
        if supervisor.thread is not None and supervisor.thread.ident in frames:
            return "".join(traceback.format_stack(frames[supervisor.thread.ident]))
        task, loop_thread = supervisor.task, self._loop_thread
        if task is None:
            return "(no stack available)\n"
        running = asyncio.current_task(self._loop)  # read from another thread: a snapshot
        if running is task and loop_thread is not None and loop_thread.ident in frames:
            # The task is not suspended: it blocks the event loop itself.
            return "blocking the event loop at:\n" + "".join(traceback.format_stack(frames[loop_thread.ident]))
        return "".join(traceback.format_list(_await_chain(task.get_coro())))

    def _close_loop(self, deadline: float) -> None:
        with self._lock:
            loop, thread = self._loop, self._loop_thread
            if loop is None or thread is None:
                return
            first = not self._loop_closing
            self._loop_closing = True
        if first:
            loop.call_soon_threadsafe(loop.stop)
        thread.join(max(0.1, deadline - time.monotonic()))
        if first and not thread.is_alive():
            loop.close()

    def _publish(self, event: LifecycleEvent) -> None:
        self._dispatch(self._routes[type(event)], event)

    def _dispatch(self, calls: tuple[Listener, ...], event: LifecycleEvent) -> None:
        # ``calls`` is ``self._routes[type(event)]``, which the supervisor has read already (to
        # build no event that nobody handles).
        for call in calls:
            try:
                call(event)
            except Exception:
                listener = self._listener_of.get(id(call), call)
                logger.exception("worker pool listener %r failed on %s", listener, type(event).__name__)

    # -- context manager ------------------------------------------------------------------------

    def __enter__(self) -> WorkerPool:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "stopping" if self._stopping else "started" if self._started else "new"
        return f"<WorkerPool {state} workers={self.names()!r}>"
