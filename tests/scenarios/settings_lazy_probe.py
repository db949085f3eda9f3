"""Settings whose worker module records being imported: django.setup() must not import it."""

from testproject.settings import *  # noqa: F403

WORKERS = {"WORKERS": ["tests.scenarios.workers_import_probe.ProbeWorker"]}
