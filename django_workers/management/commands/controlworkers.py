"""``manage.py controlworkers restart|pause|resume WORKER [--node NODE_ID] [--user USERNAME]``.

Records a control request (:func:`django_workers.control.submit`): every ``runworkers`` process
with history enabled that it is addressed to applies it within its heartbeat interval. Exit status
0 when recorded (one line says what), 1 with a message when it cannot be: an unknown worker or
node, a stopped or stale node, history disabled, an unknown user or one without the permission, the
database unreachable or not migrated. See ``docs/control.md``.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError

from ...control import ControlError, database_problem, describe_request, process_identity, submit
from ...models import ControlAction
from ...settings import history_settings


class Command(BaseCommand):
    """Restart, pause or resume a worker on every node (default) or on one node."""

    help = (
        "Asks the runworkers processes to restart, pause or resume a worker: on every node, or on the node "
        "given by --node. The request is recorded in the database (WORKERS['HISTORY'] must be enabled) and "
        "applied within the heartbeat interval. A pause on every node also holds for runworkers processes "
        "started later, until a resume. Exit status: 0 recorded, 1 not recorded (the message says why)."
    )
    # An operator's command must work whatever unrelated system check fails.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        """Declare the arguments of controlworkers."""
        parser.add_argument("action", choices=ControlAction.values, help="What to do.")
        parser.add_argument("worker", help="The worker's name (as in runworkers --list).")
        parser.add_argument(
            "--node",
            metavar="NODE_ID",
            help="Only this runworkers process: its node id (a UUID, shown in the admin's nodes page) or "
            "host:pid. Default: every node, including those started later for a pause or resume.",
        )
        parser.add_argument(
            "--user",
            metavar="USERNAME",
            help="Attribute the request to this Django user (who must have the permission "
            "django_workers.control_workers); an admin LogEntry is written for it. Default: "
            f"{process_identity()} (controlworkers), and no LogEntry.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        """Record the request and say what was recorded."""
        user = self._user(options["user"]) if options["user"] else None
        requested_by = None if user is not None else f"{process_identity()} (controlworkers)"
        try:
            request = submit(
                options["action"], options["worker"], options["node"], user=user, requested_by=requested_by
            )
        except ControlError as exc:
            raise CommandError(str(exc)) from exc
        except (DatabaseError, ImproperlyConfigured) as exc:
            raise CommandError(self._database_problem(exc)) from exc
        interval = history_settings().heartbeat_interval
        self.stdout.write(
            f"Recorded control request #{request.pk}: {describe_request(request)}, requested by "
            f"{request.requested_by} at {request.requested_at:%Y-%m-%d %H:%M:%S %Z}. The runworkers processes "
            f"apply it within {interval:g} s (the heartbeat interval)."
        )

    def _user(self, username: str) -> Any:
        model = get_user_model()
        try:
            return model._default_manager.get_by_natural_key(username)
        except model.DoesNotExist:
            raise CommandError(
                f"unknown user {username!r}: give the username of an existing Django user, or leave --user out"
            ) from None
        except (DatabaseError, ImproperlyConfigured) as exc:
            raise CommandError(self._database_problem(exc)) from exc

    @staticmethod
    def _database_problem(exc: Exception) -> str:
        return (
            f"cannot record the request: {database_problem(exc)}. Check settings.DATABASES and run manage.py migrate."
        )
