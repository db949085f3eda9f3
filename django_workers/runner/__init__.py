"""The ``runworkers`` process: run the configured workers in the foreground until signalled.

- :mod:`.signals`: the self-pipe the main thread sleeps on, and the bookkeeping of stop requests.
- :mod:`.logs`: stderr at the level of ``-v``, unless ``LOGGING`` configures the logger.
- :mod:`.describe`: what it says about the workers (``--list``, start-up and shutdown summaries).
- :mod:`.lifecycle`: checks → services → pool → wait → graceful stop → exit status.
- :mod:`.reloader`: ``--reload``, its reloader process and the worker process's side.

:func:`run` is the entry point (``manage.py runworkers`` parses its options into
:class:`RunOptions` and calls it); :func:`list_workers` is ``--list``.
"""

from __future__ import annotations

import logging
import sys

from django.core.management.base import OutputWrapper

from ..core.context import LOGGER_NAME
from . import describe, lifecycle, reloader
from .lifecycle import EXIT_CONFIGURATION, EXIT_OK, EXIT_RELOAD, EXIT_STOP_TIMEOUT, Check, RunOptions
from .logs import configure_logging
from .signals import Wakeup

__all__ = [
    "EXIT_CONFIGURATION",
    "EXIT_OK",
    "EXIT_RELOAD",
    "EXIT_STOP_TIMEOUT",
    "RunOptions",
    "list_workers",
    "run",
]

logger = logging.getLogger(LOGGER_NAME)


def run(
    options: RunOptions,
    *,
    check: Check | None = None,
    stderr: OutputWrapper | None = None,
    exit_at_once: bool = False,
) -> int:
    """Run the workers until SIGTERM/SIGINT (with ``--reload``: the reloader process); the exit status.

    ``check`` runs the system checks (None: skipped). A configuration error raises ``CommandError``
    (``SystemCheckError`` for failed checks); ``stderr`` shows it when ``--reload`` waits for a fix.
    ``exit_at_once``: leave with ``os._exit`` when workers are left running at the stop timeout
    (the command does when called from the command line); otherwise a ``CommandError`` with status 3.
    """
    undo_logging = configure_logging(options.verbosity)
    try:
        if options.reload and not reloader.is_reloaded_process():
            return reloader.run_reloader()
        wake = Wakeup()
        if not wake.install():
            logger.warning("runworkers is not running in the main thread: it cannot handle SIGTERM/SIGINT")
        try:
            on_broken = None
            if options.reload:
                on_broken = reloader.reload_on_change(wake, stderr or OutputWrapper(sys.stderr))
            return lifecycle.run_workers(
                options, wake, check=check, on_broken=on_broken, exit_at_once=exit_at_once or options.reload
            )
        finally:
            wake.close()
    finally:
        undo_logging()


def list_workers(options: RunOptions, *, check: Check | None = None) -> list[str]:
    """The lines of ``--list``: the workers that would run, with their settings."""
    undo_logging = configure_logging(options.verbosity)
    try:
        workers_settings, pool = lifecycle.prepare(options, check)
        return describe.listing(workers_settings, pool)
    finally:
        undo_logging()
