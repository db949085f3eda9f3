"""The test project's settings with a broken WORKERS, for `manage.py check` in a subprocess."""

from testproject.settings import *  # noqa: F403

WORKERS = {
    "STOP_TIMEOUT": -1,
    "WORKERS": ["tests.scenarios.workers_name_error.BrokenWorker"],
}
