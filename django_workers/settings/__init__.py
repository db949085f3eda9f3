"""Settings: ``settings.WORKERS`` validated and parsed into frozen dataclasses.

- :mod:`.types`: the parsed settings, with the one set of defaults.
- :mod:`.values`, :mod:`.validation`, :mod:`.workers`, :mod:`.imports`: the parsers, each
  returning its value and its check messages; :mod:`.ids`: the check ids.
- Here: :func:`validate_settings` (what the system checks report), :func:`load_settings` (what
  the rest of the project uses; it raises the same messages), :func:`history_settings`.

``settings.WORKERS`` is read on every call, never at import time (``override_settings`` and
``setting_changed`` just work). Turning the settings into a pool is the composition root's job
(:mod:`django_workers.runtime`). Every key, its type, default and meaning, and every check id,
are documented in ``docs/settings.md``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from .ids import *  # noqa: F403 - the check ids are part of this package's API
from .ids import E_CHECK_CRASHED
from .types import (
    ORPHAN_GRACE_HEARTBEATS,
    SETTING,
    FleetSettings,
    HealthSettings,
    HistorySettings,
    MetricsSettings,
    TracingSettings,
    WorkerSpec,
    WorkersSettings,
)
from .validation import lease_timing, parse_history, parse_settings
from .workers import MISSING, select_workers

__all__ = [
    "E_CHECK_CRASHED",
    "ORPHAN_GRACE_HEARTBEATS",
    "SETTING",
    "FleetSettings",
    "HealthSettings",
    "HistorySettings",
    "MetricsSettings",
    "SettingsValidation",
    "TracingSettings",
    "WorkerSpec",
    "WorkersSettings",
    "history_settings",
    "lease_timing",
    "load_settings",
    "select_workers",
    "validate_settings",
]


@dataclass(frozen=True)
class SettingsValidation:
    """The outcome of :func:`validate_settings`.

    ``settings`` is ``None`` when ``messages`` holds an error; warnings alone leave it set.
    """

    settings: WorkersSettings | None
    messages: tuple[checks.CheckMessage, ...]

    @property
    def errors(self) -> tuple[checks.CheckMessage, ...]:
        """The messages of level ERROR or above."""
        return tuple(message for message in self.messages if message.is_serious())


def validate_settings(value: object = MISSING, *, databases: object = MISSING) -> SettingsValidation:
    """Validate ``settings.WORKERS`` (or ``value``) in one pass: check messages and parsed settings.

    The single source of truth of both the system checks and :func:`load_settings`. It imports
    every configured worker module and instantiates each worker class once (to learn its name),
    but never raises for a bad configuration: every problem is one check message.
    """
    if value is MISSING:
        value = getattr(settings, SETTING, MISSING)
    if databases is MISSING:
        databases = getattr(settings, "DATABASES", {})
    parsed, messages = parse_settings(value, databases)
    return SettingsValidation(settings=parsed, messages=tuple(messages))


def load_settings() -> WorkersSettings:
    """``settings.WORKERS`` parsed into :class:`WorkersSettings` (read now, not cached).

    Raises ``ImproperlyConfigured`` carrying the system-check messages when it is invalid.
    """
    validation = validate_settings()
    if validation.settings is None:
        raise ImproperlyConfigured(
            "Invalid settings.WORKERS:\n" + "\n".join(str(message) for message in validation.errors)
        )
    return validation.settings


def history_settings() -> HistorySettings:
    """``settings.WORKERS["HISTORY"]`` alone, parsed now; the defaults where it is invalid.

    Cheap (no worker is imported): for readers of the history (the admin, the health checks)
    that must answer whatever else is wrong with the setting. The system checks report errors.
    """
    raw: Any = getattr(settings, SETTING, None)
    section = raw.get("HISTORY", MISSING) if isinstance(raw, Mapping) else MISSING
    if section is MISSING:
        return HistorySettings()
    parsed, _ = parse_history(section, getattr(settings, "DATABASES", {}))
    return parsed if parsed is not None else HistorySettings()
