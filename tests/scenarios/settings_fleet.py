"""Settings of the runworkers replicas of the fleet tests (tests/fleet/test_fleet_processes.py).

The health scenario's (settings_health): WORKERS from ``RUNWORKERS_TEST_WORKERS`` (the test gives the
FLEET timings and the singleton there, so that its bounds and the replicas' settings are one
dict), the ``default`` database the one pytest-django created (``HEALTH_TEST_DB_NAME``). On
PostgreSQL, each replica:

- reaches the server through the host and port of ``FLEET_DB_HOST``/``FLEET_DB_PORT`` when set
  (the test's TCP proxy of that replica, which it can cut to partition the replica from the
  database);
- names its connections ``fleet-<pid>`` (``application_name``), so that the test can find them in
  ``pg_stat_activity`` and ``pg_terminate_backend`` them;
- uses the database ``FLEET_DB_NAME`` when set (one on a server of the test's own,
  tests/fleet/test_fleet_servers.py) instead of pytest-django's.
"""

import os

from tests.scenarios.settings_health import *  # noqa: F403
from tests.scenarios.settings_health import DATABASES

if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    if os.environ.get("FLEET_DB_NAME"):
        DATABASES["default"]["NAME"] = os.environ["FLEET_DB_NAME"]
    if os.environ.get("FLEET_DB_PORT"):
        DATABASES["default"]["HOST"] = os.environ.get("FLEET_DB_HOST", "127.0.0.1")
        DATABASES["default"]["PORT"] = os.environ["FLEET_DB_PORT"]
    DATABASES["default"]["OPTIONS"] = {
        **DATABASES["default"].get("OPTIONS", {}),
        "application_name": f"fleet-{os.getpid()}",
        "connect_timeout": 2,  # a partitioned replica's connection attempts fail, they do not hang
    }
