"""Prometheus metrics of a worker pool (``pip install django-worker-pool[metrics]``).

The public path of :mod:`django_workers.observability.metrics`, where the code and its
documentation live::

    from django_workers.metrics import WorkerMetrics
"""

from .observability.metrics import DURATION_BUCKETS, EXECUTIONS_HELP, WorkerMetrics, worker_label

__all__ = ["DURATION_BUCKETS", "EXECUTIONS_HELP", "WorkerMetrics", "worker_label"]
