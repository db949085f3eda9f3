"""Settings of the observability subprocess tests: the runworkers scenario settings, plus django-prometheus.

``EXPOSITION_TEST_DJANGO_PROMETHEUS_PORT`` installs ``django_prometheus`` and sets its export port
(its ``AppConfig.ready()`` then serves ``prometheus_client.REGISTRY`` on that port).
"""

import os

from tests.scenarios.settings_runworkers import *  # noqa: F403
from tests.scenarios.settings_runworkers import INSTALLED_APPS

if os.environ.get("EXPOSITION_TEST_DJANGO_PROMETHEUS_PORT"):
    INSTALLED_APPS = [*INSTALLED_APPS, "django_prometheus"]
    PROMETHEUS_METRICS_EXPORT_PORT = int(os.environ["EXPOSITION_TEST_DJANGO_PROMETHEUS_PORT"])
    PROMETHEUS_METRICS_EXPORT_ADDRESS = "127.0.0.1"
