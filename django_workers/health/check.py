"""The django-health-check (4.x) check of the workers, for the web process.

Public as ``django_workers.health.Workers``. Configured in the URLconf, the 4.x way
(``pip install 'django-worker-pool[health]'``)::

    from health_check.views import HealthCheckView

    urlpatterns = [
        path("health/live/", HealthCheckView.as_view(checks=[])),
        path("health/ready/", HealthCheckView.as_view(checks=[
            "health_check.Database",
            "django_workers.health.Workers",
            # ("django_workers.health.Workers", {"hostname": "worker-0"}),
        ])),
    ]

The check answers from the pool of this process when one was started here
(``apps.get_app_config("django_workers").pool.start()``), otherwise from the history tables
that every ``runworkers`` process writes (``WORKERS["HISTORY"]["ENABLED"]``). It fails
(django-health-check answers HTTP 500) when a worker has exhausted its attempts, when no
``runworkers`` heartbeat is fresh, and when it cannot tell (history disabled and no pool here,
database unreachable). See docs/health.md and :mod:`django_workers.health.reports`.
"""

from __future__ import annotations

import dataclasses
import datetime

from django.db import connections
from health_check.base import HealthCheck
from health_check.exceptions import ServiceUnavailable

from .reports import HealthState, in_process_pool, workers_report

__all__ = ["Workers"]


@dataclasses.dataclass
class Workers(HealthCheck):  # type: ignore[misc]  # django-health-check is untyped
    """Healthy while the workers are: none exhausted its attempts, none is silent, a runworkers is alive.

    Args:
        database: The database alias of the history tables (default: ``WORKERS["HISTORY"]["DATABASE"]``).
        hostname: Only the ``runworkers`` processes of this host count (history mode).
        stale_after: Seconds after which a heartbeat is stale (default: the recorder's orphan grace,
            ``HISTORY["ORPHAN_GRACE"]``, by default three heartbeat intervals).
        use_pool: Answer from this process's pool when one was started here (default); ``False``
            always reads the history.
        timeout: The time budget of the check.

    """

    database: str | None = None
    hostname: str | None = None
    stale_after: float | None = dataclasses.field(default=None, repr=False)
    use_pool: bool = dataclasses.field(default=True, repr=False)
    timeout: datetime.timedelta = dataclasses.field(default=datetime.timedelta(seconds=5), repr=False)

    def run(self) -> None:
        """Raise ``ServiceUnavailable`` with the report's message unless the workers are healthy.

        django-health-check runs this synchronous method in a thread of its executor: the
        database connection it opened there is closed before returning (the history mode).
        """
        pool = in_process_pool() if self.use_pool else None
        try:
            report = workers_report(
                pool=pool,
                database=self.database,
                stale_after=self.stale_after,
                hostname=self.hostname,
                use_pool=self.use_pool,
            )
        finally:
            if pool is None:
                _close_connections()
        if report.state is not HealthState.HEALTHY:
            raise ServiceUnavailable(report.message)


def _close_connections() -> None:
    """Close this thread's connections (an executor thread's), unless a transaction holds one."""
    for connection in connections.all(initialized_only=True):
        if not connection.in_atomic_block:
            connection.close()
