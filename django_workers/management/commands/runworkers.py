"""``manage.py runworkers``: run the configured workers in the foreground until signalled.

The main thread owns the process. It builds and starts the pool, then sleeps on a self-pipe
(:class:`_Wakeup`). Signal handlers, the pool's listener, the file watcher (``--reload``) and the
thread that calls ``pool.stop()`` only record what happened and write a byte to that pipe; the
main thread wakes up and decides.

Exit status (docs/runworkers.md): 0 after a graceful stop, whatever the workers' final statuses;
1 configuration error; 3 stop timeout with workers left running (their stacks are logged);
128 + the signal number (130 SIGINT, 143 SIGTERM) when a second signal forces the exit.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

from django.apps import apps
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser, SystemCheckError
from django.db import connections
from django.utils import autoreload

from ...conf import WorkerSpec, WorkersSettings, build_pool, build_services, load_settings
from ...core.backoff import Backoff
from ...core.context import LOGGER_NAME
from ...core.events import LifecycleEvent, WorkerFinished
from ...core.execution import WorkerExecution, WorkerStatus
from ...logging import WorkerLogFilter
from ...pool import WorkerPool
from ...services import ProcessService, start_services, stop_services

logger = logging.getLogger(LOGGER_NAME)

EXIT_OK = 0
EXIT_CONFIGURATION = 1
EXIT_STOP_TIMEOUT = 3
#: A ``--reload`` worker process exits with it to be restarted by its reloader process (internal).
EXIT_RELOAD = 75

#: Names the read end of the pipe on which the reloader process relays its signals (internal).
RELAY_ENV = "DJANGO_WORKERS_RELOADER_FD"

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

LOG_FORMAT = "%(asctime)s %(levelname)-7s [%(worker)s %(workerExecutionID)s] %(message)s"

_STILL_RUNNING = (WorkerStatus.RUNNING, WorkerStatus.DEFERRED, WorkerStatus.UNKNOWN)


# -- waking the main thread ------------------------------------------------------------------------


#: A signal with the number of the first stop request that arrives this many seconds after it at
#: most is a copy of that request, not a second one: ``timeout`` and some process managers signal
#: the process and then its process group, and the copy can land after the graceful stop began.
COPY_WINDOW = 0.2


class _Wakeup:
    """A self-pipe on which the main thread sleeps; anything that needs it writes a byte.

    Signal handlers only append the signal number and write; the main thread does the work.
    Stop requests come from signals received directly, signals relayed by the ``--reload``
    parent process, or that parent's exit. A Ctrl-C in a terminal reaches both the parent and the
    worker process (one process group), so a signal and its relayed copy count once: the number
    of stop requests is the larger of the two counts.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._read, write = os.pipe()
        self._write: int | None = write
        os.set_blocking(self._read, False)
        os.set_blocking(write, False)
        # Reentrant: a signal handler runs in the main thread, possibly while it holds the lock.
        self._lock = threading.RLock()
        self._previous: dict[int, Any] = {}
        self._previous_wakeup_fd = -1
        #: Signals received by this process, in order (appended by the handler), each with when.
        self.signals: list[tuple[int, float]] = []
        #: Signals received by the ``--reload`` parent and relayed here, each with when.
        self.relayed: list[tuple[int, float]] = []
        #: The ``--reload`` parent process exited (its end of the relay pipe closed).
        self.parent_gone = False
        #: A watched file changed (``--reload``).
        self.reload = False
        #: How many signals (received, relayed) the main thread took as the first stop request.
        self._acknowledged = (1, 1)

    def notify(self) -> None:
        """Wake the main thread (from any thread, or a signal handler)."""
        with self._lock:
            if self._write is not None:
                # Full pipe: a wake-up is pending already, nothing is lost.
                with contextlib.suppress(OSError):
                    os.write(self._write, b"\0")

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.signals.append((signum, self._clock()))
        self.notify()

    def relay(self, signums: bytes) -> None:
        """Count signals relayed by the ``--reload`` parent (called by the thread that reads them)."""
        now = self._clock()
        self.relayed.extend([(signum, now) for signum in signums])
        self.notify()

    def install(self) -> bool:
        """Handle SIGINT and SIGTERM; False when not in the main thread (signals are then left alone).

        The kernel may deliver a signal to any thread; Python then only flags the main thread,
        whose ``select()`` would sleep on. The wakeup fd makes the C-level handler write to the
        pipe whichever thread took the signal, so the main thread wakes and runs the handler.
        """
        if threading.current_thread() is not threading.main_thread():
            return False
        for signum in STOP_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._on_signal)
        assert self._write is not None
        self._previous_wakeup_fd = signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)
        return True

    def wait(self, timeout: float | None = None) -> None:
        """Sleep until something calls :meth:`notify` (or ``timeout`` seconds)."""
        select.select([self._read], [], [], timeout)
        with contextlib.suppress(BlockingIOError):
            while os.read(self._read, 4096):
                pass

    @property
    def stop_requests(self) -> int:
        """How many distinct stop requests arrived (see the class docstring)."""
        return max(len(self.signals), len(self.relayed), 1 if self.parent_gone else 0)

    def first_request(self) -> str:
        """What asked for the first stop, for the log."""
        for received in (self.signals, self.relayed):
            if received:
                return f"received {signal.Signals(received[0][0]).name}"
        return "the reloader process exited" if self.parent_gone else "a file changed"

    def acknowledge(self) -> None:
        """The main thread acts on the stop request: the signals so far count as that one request.

        One request can arrive as several signals: ``timeout`` or a process manager that signals
        the process and then its process group, a Ctrl-C that reaches the ``--reload`` parent
        too. A later signal forces the exit, unless it is a copy of the first one: the same
        signal, at most :data:`COPY_WINDOW` seconds after it.
        """
        self._acknowledged = (max(1, len(self.signals)), max(1, len(self.relayed)))

    def forcing_signal(self) -> int | None:
        """The signal that made a second stop request, if any."""
        for received, acknowledged in zip((self.signals, self.relayed), self._acknowledged, strict=True):
            first, first_at = received[0] if received else (None, 0.0)
            for signum, at in received[acknowledged:]:
                if signum == first and at - first_at <= COPY_WINDOW:
                    continue  # a copy of the first request
                return signum
        return None

    def copy_window_left(self) -> float:
        """Seconds until a repeat of the first stop signal forces the exit (0 once it does)."""
        firsts = [received[0][1] for received in (self.signals, self.relayed) if received]
        return max(0.0, min(firsts) + COPY_WINDOW - self._clock()) if firsts else 0.0

    def close(self) -> None:
        """Restore the previous signal handlers and close the pipe (later notifications are no-ops)."""
        if self._previous:
            signal.set_wakeup_fd(self._previous_wakeup_fd)
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()
        with self._lock:
            write, self._write = self._write, None
            if write is not None:
                os.close(write)
                os.close(self._read)


# -- logging ---------------------------------------------------------------------------------------


class _StderrFormatter(logging.Formatter):
    """Shows ``-`` for the worker fields of records emitted outside a worker."""

    def format(self, record: logging.LogRecord) -> str:
        """Format a copy of the record when its worker fields are empty (other handlers see the original)."""
        if getattr(record, "worker", "") and getattr(record, "workerExecutionID", ""):
            return super().format(record)
        copy = logging.makeLogRecord(record.__dict__)
        copy.worker = getattr(record, "worker", "") or "-"
        copy.workerExecutionID = getattr(record, "workerExecutionID", "") or "-"
        return super().format(copy)


def _level(verbosity: int) -> int:
    if verbosity <= 0:
        return logging.ERROR
    return logging.INFO if verbosity == 1 else logging.DEBUG


def _reaches_a_handler(target: logging.Logger) -> bool:
    current: logging.Logger | None = target
    while current is not None:
        if any(not isinstance(handler, logging.NullHandler) for handler in current.handlers):
            return True
        if not current.propagate:
            return False
        current = current.parent
    return False


def configure_logging(verbosity: int) -> Callable[[], None]:
    """Log to stderr at the level of ``-v``, unless the project configures the logger.

    When ``LOGGING`` names the ``django_workers`` logger, nothing is changed. Otherwise the
    logger's level follows ``-v`` (0 ERROR, 1 INFO, 2 and 3 DEBUG) and, unless its records already
    reach a handler (a root handler from ``LOGGING``, say), a stderr handler is added. Returns a
    function that undoes it.
    """
    configured = getattr(settings, "LOGGING", None) or {}
    if LOGGER_NAME in (configured.get("loggers") or {}):
        return lambda: None
    previous_level = logger.level
    logger.setLevel(_level(verbosity))
    handler: logging.Handler | None = None
    if not _reaches_a_handler(logger):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_StderrFormatter(LOG_FORMAT))
        handler.addFilter(WorkerLogFilter())
        logger.addHandler(handler)

    def undo() -> None:
        logger.setLevel(previous_level)
        if handler is not None:
            logger.removeHandler(handler)

    return undo


# -- describing the configuration ----------------------------------------------------------------


def _seconds(value: float) -> str:
    return f"{value:g} second" + ("" if value == 1 else "s")


def _describe_backoff(backoff: Backoff) -> str:
    if backoff.initial == 0:
        return "none (restart at once)"
    return (
        f"initial {backoff.initial:g} s, maximum {backoff.maximum:g} s, "
        f"multiplier {backoff.multiplier:g}, jitter {backoff.jitter:g}"
    )


def _describe_attempts(attempts: int) -> str:
    if attempts == 0:
        return "unlimited"
    return f"{attempts} (no restart)" if attempts == 1 else str(attempts)


def _describe_worker(
    spec: WorkerSpec | None, execution: WorkerExecution, workers_settings: WorkersSettings
) -> list[tuple[str, str]]:
    """(label, value) pairs describing one worker as it will run."""
    backoff = workers_settings.restart_backoff
    if spec is not None and spec.restart_backoff is not None:
        backoff = spec.restart_backoff
    deferral = execution.deferred_start_threshold
    return [
        ("class", spec.path if spec is not None else "?"),
        ("attempts", _describe_attempts(execution.max_executions_attempts)),
        ("deferred start", _seconds(deferral) if deferral else "none"),
        ("restart backoff", _describe_backoff(backoff)),
        ("options", repr(dict(spec.options)) if spec is not None else "{}"),
    ]


def _exit_now(code: int) -> NoReturn:
    """Exit at once, without waiting for threads that may never end (stuck workers)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


class Command(BaseCommand):
    """Run the workers of ``settings.WORKERS`` in the foreground until SIGTERM or SIGINT."""

    help = (
        "Runs the workers configured in settings.WORKERS in the foreground until SIGTERM or SIGINT "
        "(Ctrl-C), then stops them gracefully within the stop timeout; a second signal forces the "
        "exit. Exit status: 0 graceful stop, 1 configuration error, 3 workers left running after the "
        "stop timeout, 130/143 forced by a second SIGINT/SIGTERM."
    )
    # Checks run in the process that runs the workers (with --reload, the reloaded one), as runserver does.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        """Declare the options of runworkers."""
        parser.add_argument(
            "--worker",
            action="append",
            dest="only",
            default=[],
            metavar="NAME",
            help="Run only this worker (repeat the option to run several). Default: every configured worker.",
        )
        parser.add_argument(
            "--exclude",
            action="append",
            default=[],
            metavar="NAME",
            help="Do not run this worker (repeatable).",
        )
        parser.add_argument(
            "--stop-timeout",
            metavar="SECONDS",
            help="How long a graceful stop waits for the workers (default: WORKERS['STOP_TIMEOUT']).",
        )
        parser.add_argument(
            "--list",
            action="store_true",
            help="Print the workers that would run, with their settings, and exit.",
        )
        parser.add_argument(
            "--reload",
            action="store_true",
            help="Development: restart the workers (gracefully) when a Python file changes.",
        )
        parser.add_argument(
            "--metrics-port",
            metavar="PORT",
            help="Serve the Prometheus metrics of this process on this TCP port (0: any free port, logged); "
            "default: WORKERS['METRICS']['PORT'], no endpoint when None.",
        )
        parser.add_argument(
            "--metrics-address",
            metavar="ADDRESS",
            help="The address the metrics endpoint binds (default: WORKERS['METRICS']['ADDRESS'], 127.0.0.1).",
        )
        parser.add_argument(
            "--health-port",
            metavar="PORT",
            help="Serve /livez and /readyz (JSON) on this TCP port (0: any free port, logged); "
            "default: WORKERS['HEALTH']['PORT'], no endpoint when None.",
        )
        parser.add_argument("--skip-checks", action="store_true", help="Skip system checks.")

    def handle(self, *args: Any, **options: Any) -> None:
        """Run the workers (or list them) and exit with the status described in the module doc."""
        undo_logging = configure_logging(options["verbosity"])
        try:
            stop_timeout = self._stop_timeout(options["stop_timeout"])
            if options["list"]:
                self._list(options, stop_timeout)
                return
            if options["reload"] and RELAY_ENV not in os.environ:
                code = self._run_reloader()
            else:
                code = self._run(options, stop_timeout, reloaded=options["reload"])
        finally:
            undo_logging()
        if code != EXIT_OK:
            raise SystemExit(code)

    # -- configuration -------------------------------------------------------------------------

    @staticmethod
    def _stop_timeout(value: str | None) -> float | None:
        if value is None:
            return None
        try:
            seconds = float(value)
        except ValueError:
            seconds = math.nan
        if math.isnan(seconds) or math.isinf(seconds) or seconds < 0:
            raise CommandError(f"--stop-timeout must be a number of seconds >= 0, got {value!r}")
        return seconds

    def _prepare(self, options: dict[str, Any], stop_timeout: float | None) -> tuple[WorkersSettings, WorkerPool]:
        """Run the checks, read the settings and build the (unstarted) pool; CommandError if impossible."""
        if not options["skip_checks"]:
            self.check()  # SystemCheckError (a CommandError) shows the check messages
        try:
            workers_settings = load_settings()
            pool = build_pool(
                workers_settings, only=options["only"], exclude=options["exclude"], stop_timeout=stop_timeout
            )
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc)) from exc
        except ValueError as exc:  # an unknown --worker / --exclude name
            raise CommandError(f"cannot select the workers to run: {exc}") from exc
        return workers_settings, pool

    @staticmethod
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

    def _list(self, options: dict[str, Any], stop_timeout: float | None) -> None:
        workers_settings, pool = self._prepare(options, stop_timeout)
        specs = {spec.name: spec for spec in workers_settings.workers}
        executions = pool.executions()
        timeout = pool.stop_timeout
        history = "on" if workers_settings.history.enabled else "off"
        selected = len(executions)
        configured = len(workers_settings.workers)
        count = f"{selected} worker(s)" if selected == configured else f"{selected} of {configured} worker(s)"
        self.stdout.write(f"{count}; stop timeout {_seconds(timeout)}; history {history}")
        for name, execution in executions.items():
            self.stdout.write("")
            self.stdout.write(name)
            for label, value in _describe_worker(specs.get(name), execution, workers_settings):
                self.stdout.write(f"    {label:<16} {value}")

    # -- running ---------------------------------------------------------------------------------

    def _run(self, options: dict[str, Any], stop_timeout: float | None, *, reloaded: bool) -> int:
        wake = _Wakeup()
        if not wake.install():
            logger.warning("runworkers is not running in the main thread: it cannot handle SIGTERM/SIGINT")
        try:
            reloader = None
            if reloaded:
                self._follow_reloader(wake)
                reloader = self._watch_files(wake)
            try:
                workers_settings, pool = self._prepare(options, stop_timeout)
                self._require_workers(workers_settings, pool)
            except CommandError as exc:
                if reloader is None:
                    raise
                return self._wait_for_a_fix(exc, wake, reloader)
            # Whatever the checks or constructors opened in this thread is not needed any more:
            # the connection budget of the process is one per sync worker using the ORM.
            connections.close_all()
            if wake.stop_requests:
                logger.info("%s before the workers started: exiting", wake.first_request())
                return EXIT_OK
            try:
                services = build_services(workers_settings, pool, options)
            except (ImproperlyConfigured, ValueError) as exc:
                raise CommandError(str(exc)) from exc
            return self._supervise(pool, workers_settings, wake, services, reloaded=reloaded)
        finally:
            wake.close()

    def _log_startup(self, pool: WorkerPool, workers_settings: WorkersSettings) -> None:
        specs = {spec.name: spec for spec in workers_settings.workers}
        executions = pool.executions()
        history = "on" if workers_settings.history.enabled else "off"
        logger.info(
            "runworkers starting (pid %d): %d worker(s), stop timeout %s, history %s",
            os.getpid(),
            len(executions),
            _seconds(pool.stop_timeout),
            history,
        )
        for name, execution in executions.items():
            description = _describe_worker(specs.get(name), execution, workers_settings)
            logger.info("worker %s: %s", name, "; ".join(f"{label} {value}" for label, value in description))

    def _supervise(
        self,
        pool: WorkerPool,
        workers_settings: WorkersSettings,
        wake: _Wakeup,
        services: Sequence[ProcessService],
        *,
        reloaded: bool,
    ) -> int:
        names = pool.names()
        finished: dict[str, WorkerStatus] = {}

        def on_event(event: LifecycleEvent) -> None:
            if isinstance(event, WorkerFinished):
                finished[event.worker] = event.status
                wake.notify()

        pool.add_listener(on_event)
        self._log_startup(pool, workers_settings)
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
                self._log_idle(finished)

        if wake.stop_requests:
            wake.acknowledge()
            logger.info(
                "%s: stopping %d worker(s) gracefully within %s",
                wake.first_request(),
                len(names),
                _seconds(pool.stop_timeout),
            )
        stop_began = time.monotonic()
        not_stopped = self._stop(pool, wake)
        self._log_shutdown(pool, not_stopped)
        # The services (history flush, endpoints) get what is left of the stop timeout.
        stop_services(services, max(0.0, pool.stop_timeout - (time.monotonic() - stop_began)))

        reloading = wake.reload and not wake.stop_requests
        if not_stopped:
            code = EXIT_RELOAD if reloading else EXIT_STOP_TIMEOUT
            message = (
                f"{len(not_stopped)} worker(s) did not stop within {_seconds(pool.stop_timeout)}: "
                f"{', '.join(not_stopped)}; exiting with status {code} without waiting for them"
            )
            logger.error("%s", message)
            if getattr(self, "_called_from_command_line", False) or reloaded:
                # A stuck thread (or a non-daemon thread it started) must not keep the process alive.
                connections.close_all()
                _exit_now(code)
            raise CommandError(message, returncode=code)
        if reloading:
            logger.info("runworkers stopped its workers to reload")
            return EXIT_RELOAD
        logger.info("runworkers stopped gracefully")
        return EXIT_OK

    @staticmethod
    def _log_idle(finished: dict[str, WorkerStatus]) -> None:
        statuses = ", ".join(f"{name}: {status}" for name, status in finished.items())
        level = logging.WARNING if any(status != WorkerStatus.SUCCESS for status in finished.values()) else logging.INFO
        logger.log(
            level,
            "no worker is running any more (%s); runworkers keeps running until it receives SIGTERM or SIGINT",
            statuses,
        )

    def _stop(self, pool: WorkerPool, wake: _Wakeup) -> list[str]:
        """``pool.stop()`` in a helper thread, so that the main thread can honour a second signal."""
        result: list[list[str]] = []
        done = threading.Event()

        def stop() -> None:
            try:
                result.append(pool.stop(pool.stop_timeout))
            finally:
                done.set()  # before the wake-up: the main thread re-checks it after every wake-up
                wake.notify()

        stopper = threading.Thread(target=stop, name="runworkers:stop")
        stopper.start()
        announced = not (wake.signals or wake.relayed)  # a stop for a reload: no signal to repeat
        while not done.is_set():
            forcing = wake.forcing_signal()
            if forcing is not None:
                self._force_exit(pool, forcing)
            left = wake.copy_window_left()
            if not announced and not left:
                announced = True
                logger.info("a second SIGTERM or SIGINT now forces the exit")
            wake.wait(left or None)
        stopper.join()
        if result:
            return result[0]
        # stop() itself failed (its traceback was printed): report what is still running.
        return [name for name, execution in pool.executions().items() if execution.status in _STILL_RUNNING]

    @staticmethod
    def _force_exit(pool: WorkerPool, signum: int) -> NoReturn:
        code = 128 + signum
        running = [name for name, execution in pool.executions().items() if execution.status in _STILL_RUNNING]
        logger.error(
            "received %s again: forced exit with status %d, not waiting for %s",
            signal.Signals(signum).name,
            code,
            ", ".join(running) or "the pool to finish stopping",
        )
        _exit_now(code)

    @staticmethod
    def _log_shutdown(pool: WorkerPool, not_stopped: Sequence[str]) -> None:
        for name, execution in pool.executions().items():
            attempts = execution.max_executions_attempts or "unlimited"
            detail = f"{execution.status} after attempt {execution.current_execution_attempt}/{attempts}"
            if execution.status == WorkerStatus.ERROR and execution.last_error is not None:
                detail += f" ({execution.last_error})"
            if name in not_stopped:
                logger.error("worker %s final status: %s; it did not stop", name, detail)
            else:
                logger.info("worker %s final status: %s", name, detail)

    # -- --reload --------------------------------------------------------------------------------
    #
    # Django's run_with_reloader is not used as is: on SIGTERM its parent process raises SystemExit
    # inside subprocess.run(), which SIGKILLs the child (and SIGINT kills it after 0.25 s); and in the
    # child the command would run in a daemon thread while SIGTERM exits the main thread. Both ends
    # are rebuilt here from Django's pieces (get_child_arguments, DJANGO_AUTORELOAD_ENV, get_reloader,
    # file_changed), so that the child stops its pool gracefully on a signal and on a file change.

    def _run_reloader(self) -> int:
        """The ``--reload`` parent: (re)start the worker process, relaying signals to it."""
        wake = _Wakeup()
        wake.install()
        arguments = autoreload.get_child_arguments()
        environment = {**os.environ, autoreload.DJANGO_AUTORELOAD_ENV: "true"}
        try:
            while True:
                code = self._run_child(arguments, environment, wake)
                if code == EXIT_RELOAD and not wake.signals:
                    logger.info("restarting the worker process")
                    continue
                return EXIT_OK if code == EXIT_RELOAD else code
        finally:
            wake.close()

    @staticmethod
    def _run_child(arguments: Sequence[str], environment: dict[str, str], wake: _Wakeup) -> int:
        read_end, write_end = os.pipe()
        try:
            child = subprocess.Popen(
                list(arguments), env={**environment, RELAY_ENV: str(read_end)}, pass_fds=(read_end,)
            )
        except BaseException:
            os.close(write_end)
            raise
        finally:
            os.close(read_end)

        def reap() -> None:
            child.wait()
            wake.notify()

        reaper = threading.Thread(target=reap, name="runworkers:reaper", daemon=True)
        reaper.start()
        relayed = 0
        try:
            while child.returncode is None:  # set by wait() in the reaper, before its wake-up
                while relayed < len(wake.signals):
                    with contextlib.suppress(OSError):  # the child is gone already
                        os.write(write_end, bytes([wake.signals[relayed][0]]))
                    relayed += 1
                wake.wait()
            reaper.join()
        finally:
            os.close(write_end)
        code = child.returncode
        return 128 - code if code < 0 else code  # killed by signal N: 128 + N, as a shell reports it

    @staticmethod
    def _follow_reloader(wake: _Wakeup) -> None:
        """In the reloaded process: count the signals the parent relays; its exit is a stop request."""
        fd = int(os.environ.pop(RELAY_ENV))
        os.set_inheritable(fd, False)  # not passed on to the workers' own subprocesses

        def follow() -> None:
            while True:
                try:
                    data = os.read(fd, 64)
                except OSError:
                    data = b""
                if not data:
                    wake.parent_gone = True
                    wake.notify()
                    return
                wake.relay(data)

        threading.Thread(target=follow, name="runworkers:reloader-parent", daemon=True).start()

    @staticmethod
    def _watch_files(wake: _Wakeup) -> autoreload.BaseReloader:
        """Watch the project's files with Django's reloader; a change asks for a graceful stop."""
        reloader = autoreload.get_reloader()

        def changed(sender: object, file_path: Path, **kwargs: Any) -> bool:
            if not wake.reload:
                logger.info("%s changed: reloading", file_path)
            wake.reload = True
            wake.notify()
            return True  # handled: Django's reloader must not sys.exit() its thread

        autoreload.file_changed.connect(changed, weak=False, dispatch_uid="django_workers.runworkers")
        thread = threading.Thread(
            target=reloader.run, args=(threading.main_thread(),), name="runworkers:autoreload", daemon=True
        )
        thread.start()
        logger.info("watching for file changes with %s", type(reloader).__name__)
        return reloader

    def _wait_for_a_fix(self, exc: CommandError, wake: _Wakeup, reloader: autoreload.BaseReloader) -> int:
        """``--reload`` with a broken configuration: report it and wait for a file change, like runserver."""
        if isinstance(exc, SystemCheckError):
            self.stderr.write(str(exc), lambda text: text)
        else:
            self.stderr.write(f"CommandError: {exc}")
        # A module that failed to import is not watched: watch the project's apps as well.
        for app_config in apps.get_app_configs():
            path = Path(app_config.path)
            if not (path.is_relative_to(sys.prefix) or path.is_relative_to(sys.base_prefix)):
                reloader.watch_dir(path, "**/*.py")
        logger.error("runworkers is waiting for a file change to reload")
        while not (wake.reload or wake.stop_requests):
            wake.wait()
        return EXIT_RELOAD if wake.reload and not wake.stop_requests else EXIT_CONFIGURATION
