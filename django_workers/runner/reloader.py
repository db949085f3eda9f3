"""``runworkers --reload``: a reloader process, and a worker process that follows it and watches files.

Django's ``run_with_reloader`` is not used as is: on SIGTERM its parent process raises SystemExit
inside ``subprocess.run()``, which SIGKILLs the child (and SIGINT kills it after 0.25 s); and in the
child the command would run in a daemon thread while SIGTERM exits the main thread. Both ends are
rebuilt here from Django's pieces (``get_child_arguments``, ``DJANGO_AUTORELOAD_ENV``,
``get_reloader``, ``file_changed``), so that the child stops its pool gracefully on a signal and on
a file change.

- The reloader process (:func:`run_reloader`) starts the worker process, relays SIGINT/SIGTERM to
  it through a pipe, and starts a new one when it exits with :data:`EXIT_RELOAD`.
- The worker process (:func:`reload_on_change`) counts the relayed signals as stop requests, takes
  the pipe's closing as one (the reloader died), and asks for a graceful stop when a file changes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from django.apps import apps
from django.core.management.base import CommandError, OutputWrapper, SystemCheckError
from django.utils import autoreload

from ..core.context import LOGGER_NAME
from .lifecycle import EXIT_CONFIGURATION, EXIT_OK, EXIT_RELOAD
from .signals import Wakeup

__all__ = ["RELAY_ENV", "is_reloaded_process", "reload_on_change", "run_reloader"]

logger = logging.getLogger(LOGGER_NAME)

#: Names the read end of the pipe on which the reloader process relays its signals (internal).
RELAY_ENV = "DJANGO_WORKERS_RELOADER_FD"


def is_reloaded_process() -> bool:
    """True in the worker process that a ``--reload`` reloader process started."""
    return RELAY_ENV in os.environ


# -- the reloader process -------------------------------------------------------------------------


def run_reloader() -> int:
    """(Re)start the worker process, relaying signals to it; its exit status (128 + N if killed by N)."""
    wake = Wakeup()
    wake.install()
    arguments = autoreload.get_child_arguments()
    environment = {**os.environ, autoreload.DJANGO_AUTORELOAD_ENV: "true"}
    try:
        while True:
            code = _run_child(arguments, environment, wake)
            if code == EXIT_RELOAD and not wake.signals:
                logger.info("restarting the worker process")
                continue
            return EXIT_OK if code == EXIT_RELOAD else code
    finally:
        wake.close()


def _run_child(arguments: Sequence[str], environment: dict[str, str], wake: Wakeup) -> int:
    read_end, write_end = os.pipe()
    try:
        child = subprocess.Popen(list(arguments), env={**environment, RELAY_ENV: str(read_end)}, pass_fds=(read_end,))
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


# -- the worker process ---------------------------------------------------------------------------


def reload_on_change(wake: Wakeup, stderr: OutputWrapper) -> Callable[[CommandError], int]:
    """Follow the reloader process and watch the project's files; what to do with a broken configuration.

    The returned function reports the error on ``stderr`` and waits for a file change (like
    runserver), then returns the exit status: :data:`EXIT_RELOAD` after a change, 1 after a signal.
    """
    _follow_reloader(wake)
    reloader = _watch_files(wake)

    def wait_for_a_fix(exc: CommandError) -> int:
        return _wait_for_a_fix(exc, wake, reloader, stderr)

    return wait_for_a_fix


def _follow_reloader(wake: Wakeup) -> None:
    """Count the signals the reloader process relays; its exit is a stop request."""
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


def _watch_files(wake: Wakeup) -> autoreload.BaseReloader:
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


def _wait_for_a_fix(exc: CommandError, wake: Wakeup, reloader: autoreload.BaseReloader, stderr: OutputWrapper) -> int:
    """A broken configuration: report it and wait for a file change, like runserver."""
    if isinstance(exc, SystemCheckError):
        stderr.write(str(exc), lambda text: text)
    else:
        stderr.write(f"CommandError: {exc}")
    # A module that failed to import is not watched: watch the project's apps as well.
    for app_config in apps.get_app_configs():
        path = Path(app_config.path)
        if not (path.is_relative_to(sys.prefix) or path.is_relative_to(sys.base_prefix)):
            reloader.watch_dir(path, "**/*.py")
    logger.error("runworkers is waiting for a file change to reload")
    while not (wake.reload or wake.stop_requests):
        wake.wait()
    return EXIT_RELOAD if wake.reload and not wake.stop_requests else EXIT_CONFIGURATION
