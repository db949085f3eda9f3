"""The life of one ``runworkers`` process that runs workers, from its options to its exit status.

Prepare (system checks, settings, the pool) in a helper thread while the main thread keeps
listening, so that a stop request ends the start-up at its next step and a second one forces the
exit → build the services → start them, then the pool → wait for a stop request (or, with
``--reload``, a file change) → ``pool.stop()`` in a helper thread while the main thread keeps
listening, so that a second signal can force the exit → stop the services with what is left of the
stop timeout → the exit status. The pool gets the stop timeout less what services reserve for their
own stop (the history recorder's last flush), so that they have it even when workers do not stop in
time.

Exit status (docs/runworkers.md): 0 after a graceful stop, whatever the workers' final statuses;
1 configuration error; 3 stop timeout with workers left running (their stacks are logged);
128 + the signal number (130 SIGINT, 143 SIGTERM) when a second signal forces the exit.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NoReturn, Protocol, runtime_checkable

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import CommandError
from django.db import connections

from ..core.context import LOGGER_NAME
from ..core.events import LifecycleEvent, WorkerFinished
from ..core.execution import WorkerStatus
from ..core.pool import WorkerPool
from ..runtime import (
    MetricsUnavailableError,
    ProcessService,
    build_pool,
    build_services,
    start_services,
    stop_services,
)
from ..settings import WorkersSettings, load_settings
from ..settings.imports import describe_exception
from ..settings.workers import checkpoint_before_constructing
from . import describe
from .signals import Wakeup

__all__ = [
    "EXIT_CONFIGURATION",
    "EXIT_OK",
    "EXIT_RELOAD",
    "EXIT_STOP_TIMEOUT",
    "RunOptions",
    "StartupInterrupted",
    "exit_now",
    "prepare",
    "run_workers",
]

logger = logging.getLogger(LOGGER_NAME)

EXIT_OK = 0
EXIT_CONFIGURATION = 1
EXIT_STOP_TIMEOUT = 3
#: A ``--reload`` worker process exits with it to be restarted by its reloader process (internal).
EXIT_RELOAD = 75

_STILL_RUNNING = (WorkerStatus.RUNNING, WorkerStatus.DEFERRED, WorkerStatus.UNKNOWN)


@runtime_checkable
class _ReservesStopTime(Protocol):
    """A service that needs part of the stop timeout after the pool stopped (the history recorder)."""

    def stop_reserve(self, stop_timeout: float) -> float: ...


@dataclass(frozen=True)
class RunOptions:
    """What ``runworkers`` is asked to do, as plain values (the command parses its options into them)."""

    #: Run only these workers (empty: all of them); ``--worker``.
    only: tuple[str, ...] = ()
    #: Do not run these workers; ``--exclude``.
    exclude: tuple[str, ...] = ()
    #: Seconds a graceful stop waits (None: ``WORKERS["STOP_TIMEOUT"]``); ``--stop-timeout``.
    stop_timeout: float | None = None
    #: Overrides ``METRICS["PORT"]``/``["ADDRESS"]`` (None: the setting); ``--metrics-port``/``--metrics-address``.
    metrics_port: int | None = None
    metrics_address: str | None = None
    #: Overrides ``HEALTH["PORT"]`` (None: the setting); ``--health-port``.
    health_port: int | None = None
    #: ``-v``: the logging level when runworkers configures the logging.
    verbosity: int = 1
    #: ``--reload``: restart the workers when a file changes (development).
    reload: bool = False


#: Runs the system checks; raises ``SystemCheckError`` (a ``CommandError``) when they fail.
Check = Callable[[], None]


class StartupInterrupted(BaseException):
    """A stop request ended the start-up at a step boundary (raised in the start-up thread).

    Not an ``Exception``: the system checks report what a check raises, and the validation what a
    worker constructor raises, as configuration errors; this one must reach the runner.
    """


def _no_checkpoint() -> None:
    pass


def prepare(
    options: RunOptions, check: Check | None, checkpoint: Callable[[], None] = _no_checkpoint
) -> tuple[WorkersSettings, WorkerPool]:
    """Run the checks, read the settings and build the (unstarted) pool; CommandError if impossible.

    ``checkpoint`` is called between these steps and before each worker constructor; what it raises
    propagates (:class:`StartupInterrupted`). Each worker is constructed once (the checks, the
    settings and the pool share the instances).
    """
    try:
        with checkpoint_before_constructing(checkpoint):
            if check is not None:
                check()
            checkpoint()
            try:
                workers_settings = load_settings()
                checkpoint()
                pool = build_pool(
                    workers_settings, only=options.only, exclude=options.exclude, stop_timeout=options.stop_timeout
                )
            except ImproperlyConfigured as exc:
                raise CommandError(str(exc)) from exc
            except ValueError as exc:  # an unknown --worker / --exclude name
                raise CommandError(f"cannot select the workers to run: {exc}") from exc
    except SystemExit as exc:
        # Project code (a system check, a tracer provider factory) called sys.exit(): without this, the
        # process would exit with its code and no message, like a process that died.
        raise CommandError(
            f"cannot start: {describe_exception(exc)} was raised while preparing the workers "
            f"(sys.exit() called by a system check or a factory?)"
        ) from exc
    return workers_settings, pool


def _start_up(options: RunOptions, check: Check | None, wake: Wakeup) -> tuple[WorkersSettings, WorkerPool] | None:
    """:func:`prepare` in a helper thread, the main thread listening; None when a stop request ended it.

    A first stop request ends the start-up at its next step (a system check or a worker constructor
    that is running is not interrupted); a second one forces the exit at once, as during the stop.
    """
    prepared: list[tuple[WorkersSettings, WorkerPool]] = []
    failed: list[BaseException] = []
    done = threading.Event()

    def checkpoint() -> None:
        if wake.stop_requests:
            raise StartupInterrupted

    def start_up() -> None:
        try:
            prepared.append(prepare(options, check, checkpoint))
        except StartupInterrupted:
            pass
        except BaseException as exc:  # the main thread raises it
            failed.append(exc)
        finally:
            # What the checks or the constructors opened is not needed any more: the connection
            # budget of the process is one per sync worker using the ORM.
            connections.close_all()
            done.set()  # before the wake-up: the main thread re-checks it after every wake-up
            wake.notify()

    # A daemon: a forced exit does not wait for a constructor that never returns.
    starter = threading.Thread(target=start_up, name="runworkers:start-up", daemon=True)
    starter.start()
    acknowledged = announced = False
    while not done.is_set():
        left = 0.0
        if wake.stop_requests:
            if not acknowledged:
                acknowledged = True
                wake.acknowledge()
                logger.info(
                    "%s during start-up: exiting without starting the workers once the current step returns",
                    wake.first_request(),
                )
            left, announced = _second_signal(wake, lambda: "the start-up to finish", announced)
        wake.wait(left or None)
    starter.join()
    if failed:
        raise failed[0]
    return prepared[0] if prepared else None


def _require_workers(workers_settings: WorkersSettings, pool: WorkerPool) -> None:
    if pool.names():
        return
    if not workers_settings.workers:
        raise CommandError(
            "no worker to run: settings.WORKERS['WORKERS'] is empty. Add the dotted paths of your "
            "Worker subclasses to it (see docs/settings.md)."
        )
    raise CommandError(
        "no worker to run: --worker/--exclude left none of the configured workers "
        f"({', '.join(workers_settings.worker_names())})."
    )


def _services(workers_settings: WorkersSettings, pool: WorkerPool, options: RunOptions) -> list[ProcessService]:
    """The services of this process; the messages name the options (runtime.py does not know them)."""
    try:
        return build_services(
            workers_settings,
            pool,
            metrics_port=options.metrics_port,
            metrics_address=options.metrics_address,
            health_port=options.health_port,
        )
    except MetricsUnavailableError as exc:
        raise CommandError(f"--metrics-port/--metrics-address cannot be used: {exc.reason}") from exc
    except (ImproperlyConfigured, ValueError) as exc:
        raise CommandError(str(exc)) from exc


def run_workers(
    options: RunOptions,
    wake: Wakeup,
    *,
    check: Check | None = None,
    on_broken: Callable[[CommandError], int] | None = None,
    exit_at_once: bool = False,
) -> int:
    """Run the workers until a stop request; the exit status.

    ``on_broken`` handles a configuration that cannot run (``--reload`` waits for a fix);
    without it, the ``CommandError`` propagates. ``exit_at_once``: at a stop timeout, leave with
    ``os._exit`` (stuck threads must not keep the process alive) instead of raising a
    ``CommandError`` that carries status 3.
    """
    try:
        prepared = _start_up(options, check, wake)
        if prepared is not None:
            _require_workers(*prepared)
    except CommandError as exc:
        if on_broken is None:
            raise
        return on_broken(exc)
    if prepared is None or wake.stop_requests:
        logger.info("%s before the workers started: exiting", wake.first_request())
        return EXIT_OK
    workers_settings, pool = prepared
    services = _services(workers_settings, pool, options)
    return _supervise(pool, workers_settings, wake, services, exit_at_once=exit_at_once)


def _supervise(
    pool: WorkerPool,
    workers_settings: WorkersSettings,
    wake: Wakeup,
    services: Sequence[ProcessService],
    *,
    exit_at_once: bool,
) -> int:
    names = pool.names()
    finished: dict[str, WorkerStatus] = {}

    def on_event(event: LifecycleEvent) -> None:
        if isinstance(event, WorkerFinished):
            finished[event.worker] = event.status
            wake.notify()

    pool.add_listener(on_event)
    describe.log_startup(workers_settings, pool)
    try:
        start_services(services, pool)
    except Exception as exc:
        raise CommandError(f"cannot start runworkers: {exc}") from exc
    pool.start()
    logger.info("runworkers is running; SIGTERM or SIGINT (Ctrl-C) stops it gracefully")

    idle_reported = False
    while not (wake.stop_requests or wake.reload):
        wake.wait()
        if not idle_reported and len(finished) == len(names):
            idle_reported = True
            describe.log_idle(finished)

    if wake.stop_requests:
        wake.acknowledge()
        logger.info(
            "%s: stopping %d worker(s) gracefully within %s",
            wake.first_request(),
            len(names),
            describe.seconds(pool.stop_timeout),
        )
    stop_began = time.monotonic()
    reserved = sum(s.stop_reserve(pool.stop_timeout) for s in services if isinstance(s, _ReservesStopTime))
    workers_wait = max(0.0, pool.stop_timeout - reserved)
    not_stopped = _stop(pool, wake, workers_wait)
    describe.log_shutdown(pool, not_stopped)
    # The services (history flush, endpoints) get what is left of the stop timeout.
    stop_services(services, max(0.0, pool.stop_timeout - (time.monotonic() - stop_began)))

    reloading = wake.reload and not wake.stop_requests
    if not_stopped:
        code = EXIT_RELOAD if reloading else EXIT_STOP_TIMEOUT
        message = (
            f"{len(not_stopped)} worker(s) did not stop within {describe.seconds(workers_wait)}: "
            f"{', '.join(not_stopped)}; exiting with status {code} without waiting for them"
        )
        logger.error("%s", message)
        if exit_at_once:
            # A stuck thread (or a non-daemon thread it started) must not keep the process alive.
            connections.close_all()
            exit_now(code)
        raise CommandError(message, returncode=code)
    if reloading:
        logger.info("runworkers stopped its workers to reload")
        return EXIT_RELOAD
    logger.info("runworkers stopped gracefully")
    return EXIT_OK


def _second_signal(wake: Wakeup, waiting_for: Callable[[], str], announced: bool) -> tuple[float, bool]:
    """While a helper thread works after a stop request: force the exit on a second signal.

    Returns how long the window lasts in which a repeat of the first signal counts as a copy
    of it (0 once it is over), and whether "a second signal forces the exit" was logged.
    """
    forcing = wake.forcing_signal()
    if forcing is not None:
        _force_exit(wake, forcing, waiting_for())
    left = wake.copy_window_left()
    if not announced and not left:
        announced = True
        logger.info("a second SIGTERM or SIGINT now forces the exit")
    return left, announced


def _still_running(pool: WorkerPool) -> list[str]:
    return [name for name, execution in pool.executions().items() if execution.status in _STILL_RUNNING]


def _stop(pool: WorkerPool, wake: Wakeup, timeout: float) -> list[str]:
    """``pool.stop(timeout)`` in a helper thread, so that the main thread can honour a second signal."""
    result: list[list[str]] = []
    done = threading.Event()

    def stop() -> None:
        try:
            result.append(pool.stop(timeout))
        finally:
            done.set()  # before the wake-up: the main thread re-checks it after every wake-up
            wake.notify()

    stopper = threading.Thread(target=stop, name="runworkers:stop")
    stopper.start()

    def waiting_for() -> str:
        return ", ".join(_still_running(pool)) or "the pool to finish stopping"

    announced = not (wake.signals or wake.relayed)  # a stop for a reload: no signal to repeat
    while not done.is_set():
        left, announced = _second_signal(wake, waiting_for, announced)
        wake.wait(left or None)
    stopper.join()
    if result:
        return result[0]
    # stop() itself failed (its traceback was printed): report what is still running.
    return _still_running(pool)


def _force_exit(wake: Wakeup, signum: int, not_waiting_for: str) -> NoReturn:
    code = 128 + signum
    logger.error(
        "%s: forced exit with status %d, not waiting for %s", wake.second_request(signum), code, not_waiting_for
    )
    exit_now(code)


def exit_now(code: int) -> NoReturn:
    """Exit at once, without waiting for threads that may never end (stuck workers)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)
