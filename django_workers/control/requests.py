"""Recording a control request: validate it, insert its row, wake the ``runworkers`` processes.

:func:`submit` is the one way in, shared by the admin, ``manage.py controlworkers`` and project
code. A request that could never be applied (an unknown action, worker or node, a stopped or
stale node, history disabled) raises :class:`ControlError` with a message naming the problem and
the fix; a request that is recorded will be picked up by every ``runworkers`` it is addressed to
within its heartbeat interval (well under a second on PostgreSQL, where the insert sends a
``NOTIFY`` on :data:`CHANNEL` in its transaction).
"""

from __future__ import annotations

import getpass
import logging
import re
import socket
import uuid
from collections.abc import Mapping
from typing import Any

from django.apps import apps
from django.conf import settings
from django.db import connections, router, transaction
from django.db.models import F
from django.db.models.functions import Now

from ..core.context import LOGGER_NAME
from ..core.text import safe_str
from ..models import ControlAction, ControlRequest, Execution, Node, WorkerState
from ..settings import SETTING, HistorySettings, history_settings, validate_settings
from ..settings.validation import parse_history
from ..settings.values import did_you_mean, where

__all__ = [
    "CHANNEL",
    "PERMISSION",
    "ControlError",
    "configured_worker_names",
    "database_problem",
    "describe_request",
    "process_identity",
    "submit",
]

logger = logging.getLogger(LOGGER_NAME)

#: The PostgreSQL channel a recorded request is announced on (payload: the request's id).
CHANNEL = "django_workers_control"

#: The permission every control path requires (``user.has_perm(PERMISSION)``).
PERMISSION = "django_workers.control_workers"

_REQUESTED_BY_LENGTH = ControlRequest._meta.get_field("requested_by").max_length or 255
_HOST_PID = re.compile(r"^(?P<host>.+):(?P<pid>\d+)$")
#: At most this many names or nodes are listed in an error message.
_LISTED = 20
#: The most characters of a database error quoted in a message.
_DETAIL_LIMIT = 500


class ControlError(ValueError):
    """A control request that cannot be recorded; the message names the problem and the fix."""


def process_identity() -> str:
    """``<os user>@<host>``: who asks when no Django user does (the command adds what it is)."""
    try:
        user = getpass.getuser()
    except Exception:  # no login name (a container without a passwd entry for its uid)
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def describe_request(request: ControlRequest) -> str:
    """``pause of worker 'sync' on every node`` / ``… on node host:42 (<uuid>)``."""
    return f"{request.action} of worker {request.worker!r} on {_target(request.node)}"


def database_problem(exc: BaseException) -> str:
    """What a database error means here, for a message: ``the database is unreachable or not migrated (…)``."""
    detail = " ".join(safe_str(exc, _DETAIL_LIMIT).split()) or type(exc).__name__
    return f"the database is unreachable or not migrated ({detail})"


def _target(node: Node | None) -> str:
    return "every node" if node is None else f"node {node} ({node.pk})"


def submit(
    action: str,
    worker: str,
    node: Node | uuid.UUID | str | None = None,
    *,
    user: Any = None,
    requested_by: str | None = None,
    using: str | None = None,
) -> ControlRequest:
    """Record a request to ``action`` (restart, pause, resume) ``worker`` on ``node`` (None: every node).

    ``node`` is a :class:`~django_workers.models.Node`, its id (a UUID or its text), or ``host:pid``
    of a live node. ``user`` (a Django user) attributes the request: it must hold
    :data:`PERMISSION`, and a ``LogEntry`` (an addition of the request) is written for it when
    ``django.contrib.admin`` is installed. ``requested_by`` is what the request shows as its
    author (default: the user's name, else :func:`process_identity`). ``using`` is the database
    alias (default: ``WORKERS["HISTORY"]["DATABASE"]``).

    ``requested_at`` is the database's clock. On PostgreSQL a ``NOTIFY`` on :data:`CHANNEL`, sent in
    the insert's transaction, wakes the ``runworkers`` processes when it commits.

    Raises :class:`ControlError` for a request that could never be applied: history disabled, an
    unknown action, worker or node, a stopped or stale node (no heartbeat within the history's
    grace), a node that does not run the worker, a user without the permission. Database errors
    (unreachable, not migrated) propagate; the ``LogEntry`` is written in the request's transaction
    when it goes to the same database (both or neither are recorded), else after it, a failure
    then being logged as a warning (the request stands).
    """
    history = _history()
    database = using if using is not None else history.database
    _require_history(history, database)
    action = _action(action)
    worker = _worker_name(worker)
    if user is not None:
        _require_permission(user)
    target = _node(database, node, history.grace)
    if target is not None:
        _require_runs(target, worker)
    else:
        _require_known(database, worker, history.grace)
    author = requested_by if requested_by is not None else _author(user)
    if not author.strip():
        raise ControlError("requested_by is empty: say who asks (a user name, or leave it out for the default)")

    # The LogEntry goes in the request's transaction when it shares its database: both are written, or
    # neither is (and the caller says "not recorded" truthfully). Elsewhere it is written after the commit.
    log_with_request = user is not None and _log_entry_database() in (database, None)
    with transaction.atomic(using=database):
        request = ControlRequest.objects.using(database).create(
            action=action,
            worker=worker,
            node=target,
            requested_by=author[:_REQUESTED_BY_LENGTH],
            requested_at=Now(),
        )
        connection = connections[database]
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_notify(%s, %s)", [CHANNEL, str(request.pk)])
        if log_with_request:
            _log_entry(user, request)
    request.refresh_from_db(using=database, fields=["requested_at"])
    if user is not None and not log_with_request:
        try:
            _log_entry(user, request)
        except Exception as exc:  # the request is recorded and will be applied: say so, and warn
            logger.warning(
                "control request #%d is recorded, but its admin LogEntry could not be written (%s)",
                request.pk,
                safe_str(exc, _DETAIL_LIMIT).strip() or type(exc).__name__,
                exc_info=True,
            )
    return request


# -- validation -----------------------------------------------------------------------------------


def _history() -> HistorySettings:
    """``WORKERS["HISTORY"]``; ControlError with the check messages when it is invalid."""
    raw: Any = getattr(settings, SETTING, None)
    section = raw.get("HISTORY") if isinstance(raw, Mapping) else None
    if section is None:
        return history_settings()
    parsed, messages = parse_history(section, settings.DATABASES)
    if parsed is None:
        problems = " ".join(
            f"{message.msg} {message.hint or ''}".strip() for message in messages if message.is_serious()
        )
        raise ControlError(f"settings.{SETTING}['HISTORY'] is invalid (manage.py check says why): {problems}")
    return parsed


def _require_history(history: HistorySettings, database: str) -> None:
    if not history.enabled:
        raise ControlError(
            f"history is disabled ({where('HISTORY', 'ENABLED')} is False): no runworkers process reads "
            f"control requests. Enable it in settings.{SETTING} (see docs/history.md), run migrate, "
            f"and restart runworkers."
        )
    if database not in settings.DATABASES:
        raise ControlError(
            f"database {database!r} is not in settings.DATABASES: set {where('HISTORY', 'DATABASE')} "
            f"(or the using argument) to one of {', '.join(map(repr, settings.DATABASES))}"
        )


def _action(action: object) -> str:
    if isinstance(action, str) and action in ControlAction.values:
        return action
    choices = ", ".join(ControlAction.values)
    raise ControlError(f"unknown action {action!r}: use one of {choices}")


def _worker_name(worker: object) -> str:
    if not isinstance(worker, str) or not worker.strip():
        raise ControlError(f"the worker name must be a non-empty str, got {worker!r}")
    return worker


def _require_permission(user: Any) -> None:
    if not getattr(user, "is_authenticated", False):
        raise ControlError("an anonymous user cannot control workers: log in, or leave the user out")
    if not user.has_perm(PERMISSION):
        raise ControlError(
            f"user {user.get_username()!r} may not control workers: give them the permission "
            f'{PERMISSION} ("Can restart, pause and resume workers"), directly or through a group'
        )


def _author(user: Any) -> str:
    if user is not None:
        return str(user.get_username())
    return process_identity()


def _live_nodes(database: str, grace: float) -> list[Node]:
    return list(Node.objects.using(database).live(grace).order_by("-started_at")[:_LISTED])


def _live_nodes_text(database: str, grace: float) -> str:
    nodes = _live_nodes(database, grace)
    if not nodes:
        return "none is running (is runworkers started, with history enabled?)"
    return ", ".join(f"{node} ({node.pk})" for node in nodes)


def _node(database: str, node: Node | uuid.UUID | str | None, grace: float) -> Node | None:
    """The live node ``node`` designates, or None for every node; ControlError when there is none.

    Live: not stopped, and a heartbeat within ``grace`` seconds by the database's clock (a process
    killed with SIGKILL never records its stop: its heartbeats end).
    """
    if node is None or (isinstance(node, str) and not node.strip()):
        return None
    # The silence by the database's clock (the one that wrote the heartbeat), read with the row.
    nodes = Node.objects.using(database).annotate(silence=Now() - F("last_heartbeat"))
    if isinstance(node, Node):
        found: Node | None = nodes.filter(pk=node.pk).first()
        shown = f"{node} ({node.pk})"
    elif isinstance(node, uuid.UUID):
        found, shown = nodes.filter(pk=node).first(), str(node)
    elif isinstance(node, str):
        text = node.strip()
        shown = text
        try:
            found = nodes.filter(pk=uuid.UUID(text)).first()
        except ValueError:
            match = _HOST_PID.match(text)
            if match is None:
                raise ControlError(
                    f"node {text!r} is neither a node id (a UUID) nor host:pid; the live nodes are: "
                    f"{_live_nodes_text(database, grace)}"
                ) from None
            # Pids are reused: the running node of that host:pid with the newest heartbeat.
            found = (
                nodes.filter(hostname=match["host"], pid=int(match["pid"]), stopped_at__isnull=True)
                .order_by("-last_heartbeat", "-started_at")
                .first()
            )
    else:
        raise ControlError(f"node must be a Node, a node id or host:pid, got {type(node).__qualname__}")
    if found is None:
        raise ControlError(
            f"unknown node {shown}: no running runworkers process recorded itself with it. Leave the node out "
            f"to address every node, or use one of the live nodes: {_live_nodes_text(database, grace)}"
        )
    if found.stopped_at is not None:
        raise ControlError(
            f"node {found} ({found.pk}) stopped at {found.stopped_at:%Y-%m-%d %H:%M:%S %Z}: nothing would pick "
            f"the request up. Leave the node out to address every node, or use one of the live nodes: "
            f"{_live_nodes_text(database, grace)}"
        )
    silent = found.silence.total_seconds()  # type: ignore[attr-defined]
    if silent > grace:
        raise ControlError(
            f"node {found} ({found.pk}) has not sent a heartbeat for {silent:.0f} s (more than {grace:g} s): it is "
            f"stale (killed, or its host is down?) and nothing would pick the request up. Send the request to "
            f"every node instead (leave the node out), or use one of the live nodes: "
            f"{_live_nodes_text(database, grace)}"
        )
    return found


def _require_runs(node: Node, worker: str) -> None:
    runs = node.worker_names
    if worker not in runs:
        suggestion = did_you_mean(worker, runs)
        hint = f" (did you mean {suggestion!r}?)" if suggestion else ""
        raise ControlError(
            f"node {node} ({node.pk}) does not run worker {worker!r}{hint}; it runs: {', '.join(runs) or 'none'}"
        )


def configured_worker_names() -> list[str]:
    """The worker names ``settings.WORKERS`` configures (none when the setting is invalid: the checks say why).

    Not cheap: validating the setting imports every configured worker module.
    """
    parsed = validate_settings().settings
    return parsed.worker_names() if parsed is not None else []


def _require_known(database: str, worker: str, grace: float) -> None:
    """``worker`` is configured, or seen in the history (an attempt, a state, a live node's workers)."""
    if (
        WorkerState.objects.using(database).filter(worker=worker).exists()
        or Execution.objects.using(database).filter(worker=worker).exists()
    ):
        return
    live = _live_nodes(database, grace)
    if any(worker in node.worker_names for node in live):
        return
    # The cheap lookups first: validating the settings imports the worker modules (once, here).
    configured = configured_worker_names()
    if worker in configured:
        return
    known = dict.fromkeys(configured)
    known.update(dict.fromkeys(WorkerState.objects.using(database).order_by("worker").values_list("worker", flat=True)))
    for node in live:
        known.update(dict.fromkeys(node.worker_names))
    names = list(known)
    suggestion = did_you_mean(worker, names)
    hint = f" (did you mean {suggestion!r}?)" if suggestion else ""
    listed = ", ".join(names[:_LISTED]) + (", …" if len(names) > _LISTED else "") if names else "none"
    raise ControlError(
        f"unknown worker {worker!r}{hint}: it is not in settings.{SETTING}['WORKERS'] and no runworkers "
        f"process has run it. Known workers: {listed}"
    )


# -- the admin's log ------------------------------------------------------------------------------


def _log_entry_database() -> str | None:
    """The database ``LogEntry`` rows are written to (the routers'), or None without the admin."""
    if not apps.is_installed("django.contrib.admin"):
        return None
    from django.contrib.admin.models import LogEntry  # noqa: PLC0415 - only when the admin is installed

    return router.db_for_write(LogEntry)


def _log_entry(user: Any, request: ControlRequest) -> None:
    """An addition of ``request`` by ``user`` in ``django.contrib.admin``'s LogEntry, when installed."""
    if not apps.is_installed("django.contrib.admin"):
        return
    from django.contrib.admin.models import ADDITION, LogEntry  # noqa: PLC0415 - only when the admin is installed

    LogEntry.objects.log_actions(
        user_id=user.pk,
        queryset=[request],
        action_flag=ADDITION,
        change_message=f"Requested {describe_request(request)}.",
        single_object=True,
    )
