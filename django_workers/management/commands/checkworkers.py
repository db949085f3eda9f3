"""``manage.py checkworkers``: are the workers healthy? For exec probes, cron jobs and humans.

Exit status: 0 healthy, 1 unhealthy, 2 cannot tell (database unreachable, history disabled and
no ``--url``, invalid settings, no answer from ``--url``). It prints one line per worker (and
host), then a one-line verdict.

- By default it reads the history tables, as the web check does (``WORKERS["HISTORY"]`` must be
  enabled): healthy when a ``runworkers`` heartbeat is fresh and no worker on a live node has
  exhausted its attempts. ``--node`` restricts that to the processes of this host (or of the
  host given), which is what a probe of a worker pod wants.
- With ``--url http://127.0.0.1:8081/readyz`` it asks a ``runworkers --health-port`` process
  instead (no database needed).

The reports and the rule they apply live in :mod:`django_workers.health`.
"""

from __future__ import annotations

import socket
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ...health.reports import HealthReport, HealthState, describe, url_report, workers_report
from ...settings.values import parse_number

EXIT_HEALTHY = 0
EXIT_UNHEALTHY = 1
EXIT_UNKNOWN = 2

_EXIT_CODES = {
    HealthState.HEALTHY: EXIT_HEALTHY,
    HealthState.UNHEALTHY: EXIT_UNHEALTHY,
    HealthState.UNKNOWN: EXIT_UNKNOWN,
}


def _seconds(option: str, value: str) -> float:
    try:
        return parse_number(value, option, positive=True)
    except ValueError as exc:
        raise CommandError(str(exc), returncode=EXIT_UNKNOWN) from exc


class Command(BaseCommand):
    """Check the health of the workers; exit 0 healthy, 1 unhealthy, 2 cannot tell."""

    help = (
        "Checks the health of the workers: from the history tables (every runworkers process with "
        "WORKERS['HISTORY'] enabled records itself there), or from a runworkers health endpoint with "
        "--url. Prints one line per worker, then the verdict. Exit status: 0 healthy, 1 unhealthy, "
        "2 cannot tell (database unreachable, history disabled and no --url, ...)."
    )
    # A probe must answer even when an unrelated system check fails; settings errors are exit status 2.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        """Declare the options of checkworkers."""
        parser.add_argument(
            "--url",
            help="Ask a runworkers health endpoint instead of the database, e.g. http://127.0.0.1:8081/readyz.",
        )
        parser.add_argument(
            "--node",
            nargs="?",
            const=socket.gethostname(),
            metavar="HOSTNAME",
            help="Only the runworkers processes of this host (default when given without a value: "
            f"this host, {socket.gethostname()!r}).",
        )
        parser.add_argument(
            "--database",
            metavar="ALIAS",
            help="The database alias of the history tables (default: WORKERS['HISTORY']['DATABASE']).",
        )
        parser.add_argument(
            "--stale-after",
            metavar="SECONDS",
            help="A heartbeat older than this is stale (default: WORKERS['HISTORY']['ORPHAN_GRACE'], "
            "by default 3 x HEARTBEAT_INTERVAL).",
        )
        parser.add_argument(
            "--timeout",
            metavar="SECONDS",
            default="5",
            help="How long --url waits for an answer (default: 5).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        """Print the report and exit with its status."""
        report = self.report(options)
        verbosity = options["verbosity"]
        if verbosity >= 1:
            for line in describe(report.workers):
                self.stdout.write(line)
        verdict = report.message if report.state is HealthState.UNKNOWN else f"{report.state.value}: {report.message}"
        if report.state is HealthState.UNKNOWN:
            self.stderr.write(verdict)
        elif verbosity >= 1:
            self.stdout.write(verdict)
        code = _EXIT_CODES[report.state]
        if code:
            raise SystemExit(code)

    def report(self, options: dict[str, Any]) -> HealthReport:
        """The report asked for by the options."""
        if options["url"]:
            if options["node"] or options["database"] or options["stale_after"]:
                raise CommandError(
                    "--url asks a runworkers process directly: --node, --database and --stale-after do not apply",
                    returncode=EXIT_UNKNOWN,
                )
            return url_report(options["url"], _seconds("--timeout", options["timeout"]))
        stale_after = _seconds("--stale-after", options["stale_after"]) if options["stale_after"] else None
        return workers_report(
            database=options["database"], stale_after=stale_after, hostname=options["node"], use_pool=False
        )

    def execute(self, *args: Any, **options: Any) -> Any:
        """Usage errors (a ``CommandError``) exit with 2, "cannot tell", not with Django's 1."""
        try:
            return super().execute(*args, **options)
        except CommandError as exc:
            if exc.returncode == 1:
                exc.returncode = EXIT_UNKNOWN
            raise
