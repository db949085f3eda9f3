"""Health probe of a worker pool: is every worker working, waiting, or done with success.

The public path of :mod:`django_workers.health.rule`, where the one health rule lives
(framework-free: it reads the pool's execution snapshots only)::

    from django_workers.probe import WorkerProbe

    result = WorkerProbe(pool).check()  # result.success, result.message ("name: status, ...")
"""

from .health.rule import ProbeResult, WorkerProbe

__all__ = ["ProbeResult", "WorkerProbe"]
