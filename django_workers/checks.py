"""System checks of ``settings.WORKERS`` (ids ``django_workers.E###`` / ``W###``).

The validation itself is :func:`django_workers.settings.validate_settings`, shared with
:func:`~django_workers.settings.load_settings`; this module only reports it to ``manage.py check``.
Every id is documented in ``docs/settings.md``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from django.apps import AppConfig
from django.core import checks

from .settings import E_CHECK_CRASHED, validate_settings

__all__ = ["TAG", "check_settings", "register"]

#: The tag of these checks: ``manage.py check --tag django_workers``.
TAG = "django_workers"


def check_settings(app_configs: Sequence[AppConfig] | None = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Check ``settings.WORKERS``: one message per problem, never an exception."""
    if app_configs is not None and not any(config.name == "django_workers" for config in app_configs):
        return []
    try:
        return list(validate_settings().messages)
    except Exception as exc:  # a bug in the validation must not hide the project's other checks
        return [
            checks.Error(
                f"Validating settings.WORKERS failed unexpectedly: {type(exc).__name__}: {exc}",
                hint="This is a bug in django-worker-pool; please report it with your WORKERS setting.",
                id=E_CHECK_CRASHED,
            )
        ]


def register(tags: Iterable[str] = (TAG,)) -> None:
    """Register the checks with Django's registry (idempotent; called by ``AppConfig.ready()``)."""
    checks.register(check_settings, *tags)
