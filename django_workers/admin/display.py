"""How the admin shows a value: coloured badges, times, durations, attempts, errors and the state of a node.

Everything a worker produced is escaped: HTML is built with ``format_html``, never ``mark_safe``.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Final

from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _

from ..models import Execution, ExecutionStatus, LeaseRole, Node
from .history_settings import stale_after

#: CSS modifiers of the status badges (``static/django_workers/admin.css``); anything else is "unknown".
_STATUS_CLASSES: Final = frozenset(ExecutionStatus.values)
_LEVEL_CLASSES: Final = frozenset({"debug", "info", "warning", "error", "critical"})

#: The states of a node (:func:`node_state`) and how they are labelled.
NODE_STATE_LABELS: Final = {"alive": _("alive"), "stale": _("stale"), "stopped": _("stopped")}
#: The longest error summary shown in a list (characters, the ellipsis included).
ERROR_SUMMARY_LENGTH: Final = 120
_ELLIPSIS: Final = "\u2026"


def exact_time(value: datetime | None) -> SafeString | str:
    """A time to the second in the active time zone, with the zone: ``2026-12-03 14:05:09 UTC``.

    The zone is its abbreviation (``CET``) or, for zones without one, its offset (``+03``, as the
    time zone database names it). Marked up as ``<time datetime="<ISO 8601>">``; a narrow column
    may break it between the date and the time, never inside either. ``None`` is ``"-"``.
    """
    if value is None:
        return "-"
    if timezone.is_naive(value):  # USE_TZ = False: the values are in the server's local time
        local, zone = value, ""
    else:
        local = timezone.localtime(value)
        zone = local.tzname() or local.strftime("%z")
    clock = f"{local:%H:%M:%S} {zone}".rstrip()
    return format_html(
        '<time class="dw-time" datetime="{}">{} <span>{}</span></time>',
        local.isoformat(timespec="seconds"),
        f"{local:%Y-%m-%d}",
        clock,
    )


def error_summary(error: str, length: int = ERROR_SUMMARY_LENGTH) -> SafeString | str:
    """The first line of ``error``, cut to ``length`` characters with an ellipsis; the whole text as its title.

    An ellipsis also says that lines follow. ``""`` (no error) is ``"-"``.
    """
    text = error.strip()
    if not text:
        return "-"
    first, _newline, rest = text.partition("\n")
    first = first.rstrip()
    if len(first) > length or rest:
        first = clip(first, length)
    return format_html('<span class="dw-error" title="{}">{}</span>', text, first)


def clip(text: str, length: int = ERROR_SUMMARY_LENGTH) -> str:
    """``text`` cut to ``length`` characters, the ending ellipsis included (it says more followed)."""
    return text[: length - 1].rstrip() + _ELLIPSIS


def human_duration(seconds: float | None) -> str:
    """``0.35`` → ``"350 ms"``, ``75`` → ``"1 min 15 s"``, ``90061`` → ``"1 d 1 h"``; ``None`` → ``"-"``."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    minutes, secs = divmod(whole, 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {secs} s"


def _badge(kind: str, modifier: str, label: object) -> SafeString:
    return format_html('<span class="dw-badge dw-{}-{}">{}</span>', kind, modifier, label)


def status_badge(status: str) -> SafeString:
    """A coloured badge for an execution status (an unexpected value is shown as-is, escaped)."""
    if status in _STATUS_CLASSES:
        return _badge("status", status, ExecutionStatus(status).label)
    return _badge("status", ExecutionStatus.UNKNOWN.value, status)


def role_badge(role: str) -> SafeString:
    """A coloured badge for a singleton's role on a node (leader, releasing, follower, stuck)."""
    if role in LeaseRole.values:
        return _badge("role", role, LeaseRole(role).label)
    return _badge("role", "unknown", role)


def level_badge(level: str) -> SafeString:
    """A coloured badge for an event level."""
    modifier = level.lower() if level.lower() in _LEVEL_CLASSES else "other"
    return _badge("level", modifier, level)


def attempt_label(execution: Execution) -> str:
    """``"2/3"``, or ``"2/unlimited"`` when ``max_attempts`` is 0."""
    return f"{execution.attempt}/{execution.max_attempts or _('unlimited')}"


def node_state(node: Node, stale: timedelta | None = None) -> str:
    """``"stopped"``, ``"stale"`` (no heartbeat for ``stale``, by default :func:`stale_after`) or ``"alive"``.

    Compares the heartbeat, written with the database clock, with the database clock read by the
    same query (``db_now``, annotated by ``NodeAdmin``), so a skewed web host cannot misjudge.
    A caller judging many nodes passes ``stale``, read once: :func:`stale_after` parses the setting.
    """
    if node.stopped_at is not None:
        return "stopped"
    now: datetime = getattr(node, "db_now", None) or timezone.now()
    limit = stale_after() if stale is None else stale
    return "stale" if now - node.last_heartbeat > limit else "alive"


def node_state_badge(node: Node) -> SafeString:
    """Alive, stale or stopped (:func:`node_state`), as a coloured badge."""
    state = node_state(node)
    return _badge("node", state, NODE_STATE_LABELS[state])
