"""Settings of the runworkers subprocess tests: the test project's, with WORKERS from the environment.

The other ``settings_<name>`` scenarios of runworkers subprocesses build on it. tests/support.py
(``runworkers_environment``) and the tests set the variables: ``RUNWORKERS_TEST_WORKERS`` (the WORKERS setting as
JSON), ``RUNWORKERS_TEST_APPLICATION_NAME`` (PostgreSQL ``application_name`` of the process's
connections, to count them in ``pg_stat_activity``) and ``RUNWORKERS_TEST_LOGGING`` (a LOGGING that
configures the ``django_workers`` logger itself).
"""

import json
import os

from testproject.settings import *  # noqa: F403
from testproject.settings import DATABASES

WORKERS = json.loads(os.environ.get("RUNWORKERS_TEST_WORKERS", '{"WORKERS": []}'))

# What docs/runworkers.md recommends for a worker process: persistent connections, checked before reuse.
DATABASES["default"]["CONN_MAX_AGE"] = None
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    DATABASES["default"]["OPTIONS"] = {
        **DATABASES["default"].get("OPTIONS", {}),
        "application_name": os.environ.get("RUNWORKERS_TEST_APPLICATION_NAME", "runworkers-tests"),
    }

if os.environ.get("RUNWORKERS_TEST_LOGGING"):
    LOGGING = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"custom": {"format": "CUSTOM %(levelname)s %(message)s"}},
        "handlers": {"custom": {"class": "logging.StreamHandler", "formatter": "custom"}},
        "loggers": {"django_workers": {"handlers": ["custom"], "level": "WARNING"}},
    }
