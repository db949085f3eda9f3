"""The two history settings the admin reads: where the history is stored, and when a node is stale.

Read per call from ``settings.WORKERS["HISTORY"]`` (validated by the system checks), so
``override_settings`` and a changed setting take effect on the next request.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, Final

from django.conf import settings

#: ``WORKERS["HISTORY"]["HEARTBEAT_INTERVAL"]`` when it is not set (seconds).
DEFAULT_HEARTBEAT_INTERVAL: Final = 10.0
#: A running node is stale after this many heartbeat intervals without a heartbeat.
STALE_AFTER_HEARTBEATS: Final = 3


def _history_settings() -> Mapping[str, Any]:
    """``settings.WORKERS["HISTORY"]`` as given (validated by the system checks, read per call)."""
    workers = getattr(settings, "WORKERS", None)
    history = workers.get("HISTORY") if isinstance(workers, Mapping) else None
    return history if isinstance(history, Mapping) else {}


def history_database() -> str:
    """The database alias the history is stored in (``WORKERS["HISTORY"]["DATABASE"]``)."""
    alias = _history_settings().get("DATABASE", "default")
    return alias if isinstance(alias, str) and alias in settings.DATABASES else "default"


def _seconds(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        return None
    return float(value)


def stale_after() -> timedelta:
    """How long a running node may go without a heartbeat before it is shown as stale.

    The recorder's orphan grace: ``WORKERS["HISTORY"]["ORPHAN_GRACE"]`` when set, else three
    ``HEARTBEAT_INTERVAL`` (10 s by default). Past it, the recorder closes the node's executions.
    """
    history = _history_settings()
    grace = _seconds(history.get("ORPHAN_GRACE"))
    if grace is not None:
        return timedelta(seconds=grace)
    interval = _seconds(history.get("HEARTBEAT_INTERVAL")) or DEFAULT_HEARTBEAT_INTERVAL
    return timedelta(seconds=STALE_AFTER_HEARTBEATS * interval)
