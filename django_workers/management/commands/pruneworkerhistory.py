"""``manage.py pruneworkerhistory``: delete stored execution history older than a number of days.

The history recorder of ``runworkers`` prunes by itself (``WORKERS["HISTORY"]["RETENTION_DAYS"]``);
this command does the same on demand, from cron or by hand, in transactions of at most
``--batch-size`` rows so that it never holds long locks on a busy table.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections
from django.utils import timezone

from ...history import DEFAULT_PRUNE_BATCH_SIZE, PruneCounts, count_prunable, prune_step
from ...settings import load_settings
from ...settings.values import PRUNE_BATCH_SIZE, PRUNE_OLDER_THAN, parse_int, parse_number


def _days(value: str) -> float:
    try:
        return parse_number(value, "--older-than", PRUNE_OLDER_THAN)
    except ValueError as exc:
        raise CommandError(str(exc)) from exc


def _batch_size(value: str) -> int:
    try:
        return parse_int(value, "--batch-size", PRUNE_BATCH_SIZE)
    except ValueError as exc:
        raise CommandError(str(exc)) from exc


def _describe(counts: PruneCounts) -> str:
    return (
        f"{counts.executions} execution(s), {counts.events} event(s), {counts.tallies} tally row(s) "
        f"and {counts.nodes} node(s)"
    )


class Command(BaseCommand):
    """Delete executions, their events, the overview's tallies and stopped nodes older than ``--older-than`` days."""

    help = (
        "Deletes stored worker executions (with their events) created more than --older-than days ago, "
        "node-level events older than that, and nodes whose last heartbeat is older and that have no "
        "execution left. Default: WORKERS['HISTORY']['RETENTION_DAYS']."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        """Declare the options of pruneworkerhistory."""
        parser.add_argument(
            "--older-than",
            metavar="DAYS",
            help=(
                f"Delete history older than this many days ({PRUNE_OLDER_THAN.describe()}; default: "
                "HISTORY['RETENTION_DAYS'])."
            ),
        )
        parser.add_argument("--dry-run", action="store_true", help="Count what would be deleted; delete nothing.")
        parser.add_argument(
            "--batch-size",
            metavar="ROWS",
            default=str(DEFAULT_PRUNE_BATCH_SIZE),
            help=f"Rows deleted per transaction ({PRUNE_BATCH_SIZE.describe()}; default {DEFAULT_PRUNE_BATCH_SIZE}).",
        )
        parser.add_argument(
            "--database",
            metavar="ALIAS",
            help="The database holding the history (default: HISTORY['DATABASE']).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        """Prune (or count, with ``--dry-run``) and print what was deleted."""
        days, database = self._settings(options)
        batch_size = _batch_size(options["batch_size"])
        if database not in connections:
            known = ", ".join(repr(alias) for alias in connections) or "none"
            raise CommandError(f"unknown database {database!r}; configured databases: {known}")

        cutoff = timezone.now() - timedelta(days=days)
        when = f"older than {days:g} day(s) (before {cutoff:%Y-%m-%d %H:%M:%S} UTC) in database {database!r}"
        try:
            if options["dry_run"]:
                counts = count_prunable(database, cutoff)
                self.stdout.write(f"Would delete {_describe(counts)} {when} (dry run: nothing deleted).")
                return
            total = PruneCounts()
            batches = 0
            while True:
                counts = prune_step(database, cutoff, batch_size)
                total += counts
                if counts.total:
                    batches += 1
                    if options["verbosity"] >= 2:
                        self.stdout.write(f"  batch {batches}: {_describe(counts)}")
                if counts.total < batch_size:
                    break
        except DatabaseError as exc:
            raise CommandError(f"pruning the worker history in database {database!r} failed: {exc}") from exc
        self.stdout.write(f"Deleted {_describe(total)} {when}, in {batches} transaction(s).")

    @staticmethod
    def _settings(options: dict[str, Any]) -> tuple[float, str]:
        """``--older-than`` and ``--database``, defaulting to the HISTORY settings (read only if needed)."""
        given_days, database = options["older_than"], options["database"]
        days = None if given_days is None else _days(given_days)
        if days is None or database is None:
            try:
                history = load_settings().history
            except ImproperlyConfigured as exc:
                raise CommandError(str(exc)) from exc
            days = history.retention_days if days is None else days
            database = database or history.database or DEFAULT_DB_ALIAS
        return days, database
