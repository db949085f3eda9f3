"""Settings of the runworkers and checkworkers subprocesses of the health tests.

The runworkers scenario settings (settings_runworkers: WORKERS from ``RUNWORKERS_TEST_WORKERS``), on
the test's own database: ``HEALTH_TEST_DB_NAME`` is the NAME of the database pytest-django created (a
SQLite file, or ``test_…`` on PostgreSQL), so that what the subprocess writes is what the test reads.
A database alias ``unreachable`` is one that no connection can open.
"""

import os

from tests.scenarios.settings_runworkers import *  # noqa: F403
from tests.scenarios.settings_runworkers import DATABASES

if os.environ.get("HEALTH_TEST_DB_NAME"):
    DATABASES["default"]["NAME"] = os.environ["HEALTH_TEST_DB_NAME"]

if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    DATABASES["unreachable"] = {
        **DATABASES["default"],
        "HOST": "127.0.0.1",
        "PORT": "1",  # nothing listens there
        "OPTIONS": {"connect_timeout": 2},
    }
else:
    DATABASES["unreachable"] = {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": "/nonexistent-directory/for-django-workers-tests/db.sqlite3",
    }


class KeepModelsOffTheUnreachableDatabase:
    """No model lives on ``unreachable``: system checks that query each database (Django 6.1's
    JSONField check, run by every command's checks) leave it alone, as they would a replica."""

    def allow_migrate(self, db: str, app_label: str, **hints: object) -> bool | None:
        return False if db == "unreachable" else None


DATABASE_ROUTERS = [f"{__name__}.KeepModelsOffTheUnreachableDatabase"]
