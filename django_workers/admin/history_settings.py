"""The two history settings the admin reads: where the history is stored, and when a node is stale.

Read per request from ``settings.WORKERS["HISTORY"]`` (:func:`django_workers.settings.history_settings`,
which falls back to the defaults where the section is invalid: the system checks report that), so
``override_settings`` and a changed setting take effect on the next request.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings

from ..settings import history_settings

__all__ = ["history_database", "stale_after"]


def history_database() -> str:
    """The database alias the history is stored in (``WORKERS["HISTORY"]["DATABASE"]``)."""
    alias = history_settings().database
    return alias if alias in settings.DATABASES else "default"


def stale_after() -> timedelta:
    """How long a running node may go without a heartbeat before it is shown as stale.

    The recorder's orphan grace (``HistorySettings.grace``): ``WORKERS["HISTORY"]["ORPHAN_GRACE"]``
    when set, else three ``HEARTBEAT_INTERVAL``. Past it, the recorder closes the node's executions.
    """
    return timedelta(seconds=history_settings().grace)
