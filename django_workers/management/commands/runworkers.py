"""``manage.py runworkers``: run the configured workers in the foreground until signalled.

The command parses its options into plain values (:class:`~django_workers.runner.RunOptions`);
:mod:`django_workers.runner` runs the process: signals, lifecycle, exit status, ``--reload``.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ... import runner
from ...settings.values import parse_number, parse_port


def _stop_timeout(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return parse_number(value, "--stop-timeout")
    except ValueError as exc:
        raise CommandError(str(exc)) from exc


def _port(value: str | None, option: str) -> int | None:
    if value is None:
        return None
    try:
        return parse_port(value, option)
    except ValueError as exc:
        raise CommandError(str(exc)) from exc


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
            "--exclude", action="append", default=[], metavar="NAME", help="Do not run this worker (repeatable)."
        )
        parser.add_argument(
            "--stop-timeout",
            metavar="SECONDS",
            help="How long a graceful stop waits for the workers (default: WORKERS['STOP_TIMEOUT']).",
        )
        parser.add_argument(
            "--list", action="store_true", help="Print the workers that would run, with their settings, and exit."
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
        """Run the workers (or list them); exit with the status of docs/runworkers.md."""
        run_options = runner.RunOptions(
            only=tuple(options["only"]),
            exclude=tuple(options["exclude"]),
            stop_timeout=_stop_timeout(options["stop_timeout"]),
            metrics_port=_port(options["metrics_port"], "--metrics-port"),
            metrics_address=options["metrics_address"],
            health_port=_port(options["health_port"], "--health-port"),
            verbosity=options["verbosity"],
            reload=options["reload"],
        )
        check = None if options["skip_checks"] else self.check
        if options["list"]:
            for line in runner.list_workers(run_options, check=check):
                self.stdout.write(line)
            return
        from_command_line = getattr(self, "_called_from_command_line", False)  # set by run_from_argv()
        code = runner.run(run_options, check=check, stderr=self.stderr, exit_at_once=from_command_line)
        if code != runner.EXIT_OK:
            raise SystemExit(code)
