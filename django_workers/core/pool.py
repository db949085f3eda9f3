"""``WorkerPool``: registers named workers, runs them concurrently, stops them within a deadline."""

from __future__ import annotations

import contextvars
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

from . import limits
from .backoff import Backoff
from .context import LOGGER_NAME, TRACER_PROVIDER_KEY
from .drivers import TaskDriver, ThreadDriver
from .events import EventRouter, Listener, PoolStarted, PoolStopped, PoolStopping
from .execution import WorkerExecution
from .logs import LoggingListener
from .loop import EventLoopThread
from .supervisor import PAUSE, RESTART, RESUME, AttemptHook, PoolRuntime, SupervisionPolicy, Supervisor
from .watchdog import Watchdog
from .worker import Worker, worker_name

if TYPE_CHECKING:  # types only: the engine imports neither prometheus_client nor opentelemetry
    from opentelemetry.trace import TracerProvider

__all__ = ["DEFAULT_HISTORY_SIZE", "DEFAULT_STOP_TIMEOUT", "WorkerPool"]

logger = logging.getLogger(LOGGER_NAME)

DEFAULT_HISTORY_SIZE = 100
DEFAULT_STOP_TIMEOUT = 30.0


def _seconds(name: str, value: object) -> float:
    return limits.seconds(name, value)  # bounded: Event.wait() overflows long before 1e300 seconds


def _attempts(name: str, value: object) -> int:
    return limits.count(name, value, 0, limits.MAX_ATTEMPTS, "0 = unlimited, 1 = no restart")


def _backoff(name: str, value: object) -> Backoff:
    if not isinstance(value, Backoff):
        raise TypeError(f"{name} must be a django_workers.Backoff, got {limits.shown(value)}")
    return value


class WorkerPool:
    """Runs registered workers concurrently and supervises them.

    Sync workers run in a thread each; async workers run as tasks on one event loop that the pool
    owns in a thread of its own. Failed attempts restart after a backoff, up to
    ``max_executions_attempts`` attempts (0 = unlimited). ``stop()`` cancels every worker and waits
    at most its timeout.

    ``listeners`` receive the typed lifecycle events of :mod:`django_workers.core.events`;
    ``attempt_hooks`` wrap every attempt (see :data:`~django_workers.core.supervisor.AttemptHook`).
    The pool logs every lifecycle event on the ``django_workers`` logger (``log=False`` to opt
    out), counts into ``metrics`` (a :class:`django_workers.metrics.WorkerMetrics`, or any
    listener) when one is given, and opens one OpenTelemetry span per attempt when ``tracing`` is
    true (by default: when a ``tracer_provider`` is given, which is then also annotated by
    :func:`django_workers.tracing.annotate_tracer_provider`; otherwise the global provider is used,
    and never set).

    A number out of its range (:mod:`django_workers.core.limits`: waits of at most a day, for
    instance) raises ``ValueError`` here or in :meth:`register`, never later in a worker's thread.
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
        log: bool = True,
        metrics: Listener | None = None,
        tracer_provider: TracerProvider | None = None,
        tracing: bool | None = None,
    ) -> None:
        self.deferred_start_threshold = _seconds("deferred_start_threshold", deferred_start_threshold)
        self.max_executions_attempts = _attempts("max_executions_attempts", max_executions_attempts)
        self.restart_backoff = Backoff() if restart_backoff is None else _backoff("restart_backoff", restart_backoff)
        self.stop_timeout = _seconds("stop_timeout", stop_timeout)
        self.history_size = limits.count(
            "history_size", history_size, 1, limits.MAX_HISTORY_SIZE, "events kept in memory per worker"
        )
        hooks = tuple(attempt_hooks)
        for hook in hooks:
            if not callable(hook):
                raise TypeError(f"attempt hooks must be callables returning a context manager, got {hook!r}")
        extensions: dict[str, Any] = {}
        if tracing or (tracing is None and tracer_provider is not None):
            # core.tracing imports opentelemetry-api (an ImportError with a pip hint when it is missing).
            from .tracing import annotate_tracer_provider, attempt_span_hook  # noqa: PLC0415 - optional dependency

            hooks = (attempt_span_hook(tracer_provider), *hooks)  # first: its span is current for the others
            if tracer_provider is not None and hasattr(tracer_provider, "add_span_processor"):
                annotate_tracer_provider(tracer_provider)  # idempotent
        if tracer_provider is not None:
            extensions[TRACER_PROVIDER_KEY] = tracer_provider  # read by ctx_tracer()
        self._metrics = metrics
        self._tracer_provider = tracer_provider
        self._lock = threading.RLock()
        self._runtime = PoolRuntime(
            cancel=threading.Event(),
            events=EventRouter(logger),
            state_lock=threading.Lock(),
            on_finished=self._worker_finished,
            attempt_hooks=hooks,
            extensions=extensions,
        )
        if log:
            self.add_listener(LoggingListener())
        for listener in listeners:
            self.add_listener(listener)
        if metrics is not None:
            self.add_listener(metrics)
        self._supervisors: dict[str, Supervisor] = {}
        #: The drivers of the launched workers, in launch order: threads (what stop() joins) and
        #: tasks (what stop() cancels).
        self._threads: list[ThreadDriver] = []
        self._tasks: list[TaskDriver] = []
        self._watchdog: Watchdog | None = None
        self._started = False
        self._stopping = False
        self._base_context: contextvars.Context | None = None
        self._running = 0
        self._idle = threading.Condition(self._lock)
        #: stop(): the threads inside it (with their depth of nested calls), the supervisors being
        #: launched (by the thread launching them) and the sync workers' threads. A worker whose
        #: thread, or launching thread, is inside stop() cannot end before that call returns:
        #: no stop() waits for it.
        self._stoppers: dict[threading.Thread, int] = {}
        self._launchers: dict[Supervisor, threading.Thread] = {}
        self._owners: dict[threading.Thread, Supervisor] = {}

    # -- configuration ------------------------------------------------------------------------

    def add_listener(self, listener: Listener) -> None:
        """Subscribe a callable to the pool's lifecycle events.

        All of them, or those of the classes in its ``event_types`` attribute, if it has one
        (see :mod:`django_workers.core.events`).
        """
        self._runtime.events.add(listener)

    def register(
        self,
        worker: Worker,
        *,
        deferred_start_threshold: float | None = None,
        max_executions_attempts: int | None = None,
        restart_backoff: Backoff | None = None,
        max_silence: float | None = None,
        restart_on_silence: bool = False,
        singleton: bool = False,
    ) -> WorkerPool:
        """Register a worker, with optional per-worker overrides of the pool's settings.

        Hang detection: with ``max_silence`` (seconds), a running attempt that does not call
        ``ctx.heartbeat()`` for that long gets the event ``no heartbeat for <max_silence> seconds``
        and counts as silent (unhealthy); with ``restart_on_silence`` it is also cancelled (a sync
        worker sees ``ctx.cancelled``, an async worker's task is cancelled) and ends in error,
        to be restarted like any failed attempt.

        A ``singleton`` worker runs only while the pool holds a fencing token for it: it stands by
        (status ``standby``) until :meth:`lead` gives one (``ctx.fence``), and again after
        :meth:`stand_by`. Something else decides who holds it: in ``runworkers``, a lease in the
        database shared by every replica (:mod:`django_workers.fleet`).

        Raises ``ValueError`` for a duplicate name. After ``start()`` the worker starts at once.
        Returns the pool, so calls can be chained.
        """
        name = worker_name(worker)
        silence = None if max_silence is None else _seconds("max_silence", max_silence)
        if silence == 0:
            raise ValueError("max_silence must be > 0 seconds (None disables hang detection)")
        if not isinstance(restart_on_silence, bool):
            raise TypeError(f"restart_on_silence must be a bool, got {restart_on_silence!r}")
        if restart_on_silence and silence is None:
            raise ValueError("restart_on_silence needs max_silence (the silence after which to restart)")
        if not isinstance(singleton, bool):
            raise TypeError(f"singleton must be a bool, got {singleton!r}")
        policy = SupervisionPolicy(
            deferred_start_threshold=self.deferred_start_threshold
            if deferred_start_threshold is None
            else _seconds("deferred_start_threshold", deferred_start_threshold),
            max_executions_attempts=self.max_executions_attempts
            if max_executions_attempts is None
            else _attempts("max_executions_attempts", max_executions_attempts),
            restart_backoff=self.restart_backoff
            if restart_backoff is None
            else _backoff("restart_backoff", restart_backoff),
            history_size=self.history_size,
            max_silence=silence,
            restart_on_silence=restart_on_silence,
            singleton=singleton,
        )
        with self._lock:
            if name in self._supervisors:
                raise ValueError(f"a worker named {name!r} is already registered; worker names must be unique")
            if self._stopping:
                raise RuntimeError(f"cannot register worker {name!r}: the pool is stopped")
            supervisor = self._supervisors[name] = Supervisor(self._runtime, worker, name, policy)
            launch = self._started and not supervisor.held
            if launch:
                self._running += 1
            elif self._started:
                supervisor.done = True
        if launch:  # outside the lock: listeners never run under it
            self._launch([supervisor])
        elif self._started:
            supervisor.stand_by()
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
        return self._supervisor(name).snapshot()

    @property
    def listeners(self) -> tuple[Listener, ...]:
        """The subscribed listeners, in subscription order."""
        return self._runtime.events.listeners

    @property
    def attempt_hooks(self) -> tuple[AttemptHook, ...]:
        """The hooks wrapping every attempt, outermost first (the span of a tracing pool first)."""
        return self._runtime.attempt_hooks

    @property
    def metrics(self) -> Listener | None:
        """The metrics (a :class:`~django_workers.metrics.WorkerMetrics`) this pool counts into, or ``None``."""
        return self._metrics

    @property
    def tracer_provider(self) -> TracerProvider | None:
        """The OpenTelemetry tracer provider given to the pool; ``None``: the global one is used."""
        return self._tracer_provider

    @property
    def started(self) -> bool:
        """True once ``start()`` was called."""
        return self._started

    @property
    def stopping(self) -> bool:
        """True once ``stop()`` was called."""
        return self._stopping

    # -- control ------------------------------------------------------------------------------

    def restart(self, name: str, by: str = "") -> None:
        """Restart a worker now, as a fresh run: attempt 1 of a whole budget, without deferral.

        A running attempt is cancelled (a sync worker sees ``ctx.cancelled``, an async worker's
        task is cancelled) and ends as it would at a stop; a backoff or deferral wait ends at
        once; a worker that finished (or gave up, or is paused) runs again. ``by`` names who asked
        (the event reads ``restart requested by <by>``). Returns at once, from any thread.
        ``LookupError`` for an unknown name, ``RuntimeError`` once ``stop()`` was called.
        """
        self._control(name, RESTART, by)

    def pause(self, name: str, by: str = "") -> None:
        """Pause a worker until :meth:`resume` (or :meth:`restart`); status ``paused``, healthy.

        Its running attempt is cancelled (as :meth:`restart` does) and no other starts.

        Before ``start()``, the worker is simply not started (how ``runworkers`` keeps a worker
        paused across its restarts). Pausing a paused worker does nothing. Returns at once.
        """
        self._control(name, PAUSE, by)

    def resume(self, name: str, by: str = "") -> None:
        """Resume a paused worker: a fresh run starts at once (or with the pool, before ``start()``).

        Resuming a worker that is not paused does nothing. Returns at once.
        """
        self._control(name, RESUME, by)

    def lead(self, name: str, fence: int) -> None:
        """Let a singleton worker run, under the fencing token ``fence`` (``ctx.fence``).

        A worker standing by begins a fresh run at once (before ``start()``: with the pool),
        unless an operator paused it; one running under another fence is cancelled and runs
        afresh under this one. ``LookupError`` for an unknown name, ``ValueError`` for a worker
        that is not a singleton, ``RuntimeError`` once ``stop()`` was called.
        """
        if isinstance(fence, bool) or not isinstance(fence, int):
            raise TypeError(f"fence must be an int, got {limits.shown(fence)}")
        self._lease(name, fence, "")

    def stand_by(self, name: str, reason: str = "") -> None:
        """Stop a singleton worker from running here: this node no longer holds its lease.

        A running attempt is cancelled (it ends as at a stop) and the worker stands by, status
        ``standby``, until :meth:`lead`. Returns at once: the attempt may take up to its stop time
        to return (see :meth:`mark_stuck`). ``reason`` is shown in the event (``lease lost: <reason>``).
        """
        if not isinstance(reason, str):
            raise TypeError(f"reason must be a str, got {limits.shown(reason)}")
        self._lease(name, None, reason)

    def mark_stuck(self, name: str, timeout: float) -> bool:
        """Report a singleton that did not return within ``timeout`` seconds of :meth:`stand_by`.

        Its stack is logged and it is unhealthy (``WorkerExecution.stuck``) until the attempt
        ends. False when it had returned (nothing is reported).
        """
        supervisor = self._supervisor(name)
        driver = supervisor.driver
        stack = driver.stack(sys._current_frames()) if driver is not None else "(no stack available)\n"
        return supervisor.mark_stuck(_seconds("timeout", timeout), stack)

    def _supervisor(self, name: str) -> Supervisor:
        with self._lock:
            supervisor = self._supervisors.get(name)
        if supervisor is None:
            raise LookupError(f"execution for worker {name} was not found")
        return supervisor

    def _lease(self, name: str, fence: int | None, reason: str) -> None:
        self._act(
            name,
            "change the lease of",
            lambda supervisor, launched, active: supervisor.lease(fence, reason, launched=launched, active=active),
        )

    def _control(self, name: str, action: str, by: str) -> None:
        if not isinstance(by, str):
            raise TypeError(f"by must be a str (who asked), got {limits.shown(by)}")
        self._act(
            name,
            action,
            lambda supervisor, launched, active: supervisor.request(action, by, launched=launched, active=active),
        )

    def _act(self, name: str, verb: str, decide: Callable[[Supervisor, bool, bool], bool]) -> None:
        """Apply a control or a lease change to a worker; launch a fresh run when it says so."""
        with self._lock:
            supervisor = self._supervisor(name)  # the lock is reentrant
            if self._stopping:
                raise RuntimeError(f"cannot {verb} worker {name!r}: the pool is stopped")
            # Listeners run outside the pool's lock, but the decision (and the count of running
            # workers) must not race with the end of the worker's driver: taken under it.
            launch = decide(supervisor, self._started, self._started and not supervisor.done)
            if launch:
                supervisor.done = False
                self._running += 1
        if launch:
            self._launch([supervisor], fresh=True)

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
            supervisors = []
            standing_by = []
            for supervisor in self._supervisors.values():
                if supervisor.held:  # paused, or a singleton without its lease: not launched until then
                    supervisor.done = True
                    if not supervisor.paused:
                        standing_by.append(supervisor)
                else:
                    supervisors.append(supervisor)
            self._running += len(supervisors)
            launcher = threading.current_thread()
            for supervisor in supervisors:  # from now on: a PoolStarted listener may call stop()
                self._launchers[supervisor] = launcher
        # Outside the lock: listeners never run under it.
        self._runtime.events.publish(PoolStarted(tuple(s.name for s in supervisors)))
        for supervisor in standing_by:
            supervisor.stand_by()
        self._launch(supervisors)

    def _launch(self, supervisors: Sequence[Supervisor], fresh: bool = False) -> None:
        # Called without the lock; each supervisor is launched once by start() or register(), and
        # again (fresh: a restart or resume; no deferral) each time a control revives it.
        # A listener called here (a deferral, a first attempt) may stop the pool: from then on the
        # rest is never launched (retired), and no thread starts that did not begin an attempt.
        base = self._base_context
        assert base is not None
        cancel = self._runtime.cancel
        launcher = threading.current_thread()
        with self._lock:
            for supervisor in supervisors:
                self._launchers[supervisor] = launcher
        try:
            threads: list[threading.Thread] = []
            async_ones: list[Supervisor] = []
            for supervisor in supervisors:
                if cancel.is_set():
                    supervisor.retire()
                    continue
                if fresh:
                    self._forget_driver(supervisor)
                else:
                    supervisor.prepare()
                if supervisor.is_async:
                    async_ones.append(supervisor)
                elif cancel.is_set():  # stopped by a listener of its deferral
                    supervisor.retire()
                else:
                    driver = supervisor.driver = ThreadDriver(supervisor, base)
                    thread = driver.create_thread()
                    with self._lock:  # _forget_driver() rewrites these lists under it
                        self._owners[thread] = supervisor
                        self._threads.append(driver)
                    threads.append(thread)
            # All created, then all started: creating a thread between two starts made the new
            # threads and this one trade the GIL more (benchmark 2 of bench_core.py misses without it).
            for thread in threads:
                thread.start()
            if async_ones and cancel.is_set():
                for supervisor in async_ones:
                    supervisor.retire()
            elif async_ones:
                loop = self._event_loop()
                tasks = []
                for supervisor in async_ones:
                    task_driver = supervisor.driver = TaskDriver(supervisor, loop)
                    tasks.append(task_driver)
                with self._lock:
                    self._tasks.extend(tasks)
                loop.call(self._create_tasks, tasks, base)
            if any(s.policy.max_silence is not None for s in supervisors):
                self._watch()
        finally:
            with self._lock:
                for supervisor in supervisors:
                    self._launchers.pop(supervisor, None)

    def _forget_driver(self, supervisor: Supervisor) -> None:
        # Before a worker is launched again: forget the drivers whose thread or task is over,
        # except each worker's current one. One still ending (it may be the thread relaunching
        # this worker) stays listed, so that stop() joins it.
        supervisor.driver = None
        with self._lock:
            self._threads[:] = [
                d for d in self._threads if d.supervisor.driver is d or (d.thread is not None and d.thread.is_alive())
            ]
            self._tasks[:] = [d for d in self._tasks if d.supervisor.driver is d or d.task is None or not d.task.done()]
            live = {d.thread for d in self._threads}
            for thread in [t for t in self._owners if t not in live]:
                del self._owners[thread]

    def _event_loop(self) -> EventLoopThread:
        with self._lock:
            loop = self._runtime.loop
            created = loop is None
            if loop is None:
                loop = self._runtime.loop = EventLoopThread(self._runtime.cancel)
        if created:
            # Started outside the lock: a stop() may already have scheduled a callback that takes
            # it (_cancel_tasks) on this loop, which would then never run its first callback.
            loop.start()
        return loop

    @staticmethod
    def _create_tasks(drivers: Sequence[TaskDriver], base: contextvars.Context) -> None:
        for driver in drivers:  # on the loop thread
            driver.create_task(base)

    def _watch(self) -> None:
        with self._lock:
            if self._stopping:
                return
            if self._watchdog is None:
                self._watchdog = Watchdog(self._watched, self._runtime.cancel)
                self._watchdog.start()
            watchdog = self._watchdog
        watchdog.wake()

    def _watched(self) -> list[Supervisor]:
        with self._lock:
            return [s for s in self._supervisors.values() if s.policy.max_silence is not None]

    def _cancel_tasks(self) -> None:
        # On the loop thread. First the signal: a task suspended on one of its futures
        # (ctx.until_cancelled(), the pool's own deferral and backoff waits) is woken and sees the
        # stop by itself. Every other started task is cancelled: its worker sees CancelledError.
        loop = self._runtime.loop
        assert loop is not None
        woken = loop.signal.set()
        with self._lock:
            drivers = list(self._tasks)
        for driver in drivers:
            driver.cancel(woken)

    def _worker_finished(self, supervisor: Supervisor) -> None:
        with self._lock:
            # A control that came as the driver was ending, too late for it to follow.
            control = supervisor.take_control(self._stopping)
            if control != RESTART:
                supervisor.done = True
                self._running -= 1
                # No stop() can end its wait while more are running than it may leave running.
                if self._running <= len(self._stoppers) + len(self._launchers):
                    self._idle.notify_all()
        if control is not None and supervisor.follow_control(control) is not None:
            self._launch([supervisor], fresh=True)

    def _spared(self, caller: threading.Thread) -> set[Supervisor]:
        """The running workers that a stop() called in ``caller`` does not wait for (under the lock).

        None, unless a worker cannot end before ``caller`` returns: its own (a sync worker calling
        stop(), or a listener on its thread) or those it is launching (a listener of start() or
        register() calling stop()). Then it spares those, and the workers of the other threads
        in the same case inside stop(), which do not wait for it either: none waits for another.
        """

        def home(thread: threading.Thread) -> set[Supervisor]:
            owned = self._owners.get(thread)
            launched = {s for s, launcher in self._launchers.items() if launcher is thread}
            return {s for s in (launched if owned is None else {owned, *launched}) if not s.done}

        if not home(caller):
            return set()
        return set().union(*(home(thread) for thread in self._stoppers))

    def wait(self, timeout: float | None = None) -> bool:
        """Block until no worker is left running (all finished or exhausted), or ``timeout``.

        Returns True when none is left. Does not stop anything. A ``timeout`` longer than the
        platform's longest timed wait (``float("inf")`` say) waits without one; ``ValueError``
        for NaN.
        """
        if timeout is not None:
            if timeout != timeout:  # noqa: PLR0124 - NaN
                raise ValueError("wait() got NaN seconds; pass a number, or None to wait without a timeout")
            if timeout >= threading.TIMEOUT_MAX:  # Condition.wait() overflows beyond it
                timeout = None
        with self._idle:
            return self._idle.wait_for(lambda: self._running == 0, timeout)

    def stop(self, timeout: float | None = None) -> list[str]:
        """Cancel every worker and wait at most ``timeout`` seconds (default: ``stop_timeout``).

        Returns the names of workers still running at the deadline: they keep status ``running``,
        get the event ``did not stop within <timeout> seconds`` and their stack is logged. A stop
        before ``start()`` is a no-op. Nothing starts or restarts once ``stop()`` is called,
        whatever the listeners do.

        Called from inside the pool (by a sync worker, a listener in a worker's thread, or a
        listener that ``start()``/``register()`` calls), it does not wait for what cannot end
        before it returns, and neither reports nor returns it: the caller's own worker, the
        workers that ``start()``/``register()`` has yet to launch (they never start), and those of
        other threads doing the same at the same time (two workers stopping the pool at once do
        not wait for each other). A ``stop()`` from outside the pool (the end of a ``with pool:``
        block, say) waits for all of them. On the pool's event loop it raises ``RuntimeError``
        (from an async worker: ``await asyncio.to_thread(pool.stop)``).
        """
        timeout = self.stop_timeout if timeout is None else _seconds("timeout", timeout)
        loop = self._runtime.loop
        if loop is not None and loop.in_loop_thread():
            raise RuntimeError(
                "stop() waits for the workers, so it cannot run on the pool's event loop (it would block "
                "every async worker); from an async worker, call: await asyncio.to_thread(pool.stop)"
            )
        deadline = time.monotonic() + timeout
        current = threading.current_thread()
        runtime = self._runtime
        with self._lock:
            if not self._started:
                return []
            first_call = not self._stopping
            self._stopping = True
            if first_call:
                # Before anything else, listeners included: nothing starts or restarts from here
                # on. Under the state lock, where begin_attempt() reads it.
                with runtime.state_lock:
                    runtime.cancel.set()
            self._stoppers[current] = self._stoppers.get(current, 0) + 1
            self._idle.notify_all()  # another stop() may be waiting for this thread's worker
            supervisors = list(self._supervisors.values())
        try:
            return self._stop(timeout, deadline, first_call, supervisors, current)
        finally:
            with self._lock:
                depth = self._stoppers.pop(current) - 1
                if depth:
                    self._stoppers[current] = depth

    def _stop(
        self,
        timeout: float,
        deadline: float,
        first_call: bool,
        supervisors: list[Supervisor],
        current: threading.Thread,
    ) -> list[str]:
        runtime = self._runtime
        names = tuple(s.name for s in supervisors)
        if first_call:
            if self._watchdog is not None:
                self._watchdog.wake()
            for supervisor in supervisors:  # all: one may be begun before its thread is listed
                supervisor.interrupt()
            loop = runtime.loop
            if loop is not None:  # async workers were launched
                loop.call(self._cancel_tasks)
            runtime.events.publish(PoolStopping(names, timeout))
        with self._idle:
            self._idle.wait_for(
                lambda: self._running <= len(self._spared(current)), max(0.0, deadline - time.monotonic())
            )
            spared = self._spared(current)
            # Read now: a launch racing with this stop may have added threads (that began no attempt).
            threads = list(self._threads)
            drivers = list(self._tasks)
        for driver in threads:
            thread = driver.thread
            if driver.supervisor.done and thread is not None and thread is not current:
                thread.join(max(0.0, deadline - time.monotonic()))
        not_stopped = [s for s in supervisors if not s.done and s not in spared]
        if not_stopped:
            frames = sys._current_frames()
            for supervisor in not_stopped:
                stack = supervisor.driver.stack(frames) if supervisor.driver is not None else "(no stack available)\n"
                supervisor.time_out(timeout, stack)
        loop = runtime.loop
        if loop is not None:
            # The loop stops once its workers' tasks are done: at once, or (when one did not stop
            # in time) when the last one ends, without waiting for another stop().
            waiting = not any(s.is_async for s in not_stopped)
            tasks = (driver.task for driver in drivers)  # read on the loop, once every task exists
            if not loop.close(tasks, deadline if waiting else None) and waiting:
                logger.warning(
                    "the worker pool's event-loop thread did not end within %g seconds: a call made "
                    "with asyncio.to_thread() or run_in_executor() has not returned",
                    timeout,
                )
        if self._watchdog is not None:
            self._watchdog.join(max(0.0, deadline - time.monotonic()))
        runtime.events.publish(PoolStopped(names, tuple(s.name for s in not_stopped)))
        return [s.name for s in not_stopped]

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
