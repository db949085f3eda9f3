"""Settings of the runworkers and controlworkers subprocesses of the control tests.

The health scenario's (settings_health): WORKERS from ``RUNWORKERS_TEST_WORKERS``, the ``default``
database the one pytest-django created (``HEALTH_TEST_DB_NAME``), so that a request the test records
is what the subprocess reads; and an ``unreachable`` alias that no connection can open.
"""

from tests.scenarios.settings_health import *  # noqa: F403
