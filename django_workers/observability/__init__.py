"""Observability that needs optional packages: Prometheus metrics (``pip install django-worker-pool[metrics]``).

- :mod:`.names`: the naming rules of metrics (no dependency).
- :mod:`.metrics`: :class:`~django_workers.observability.metrics.WorkerMetrics`, the listener
  that counts a pool's lifecycle into prometheus_client (public as ``django_workers.metrics``).
- :mod:`.exposition`: what a process exposes: its one ``WorkerMetrics``, the registry to serve
  (multiprocess mode included).

The pool's log lines and its spans are part of the engine (``django_workers.core.logs``,
``django_workers.core.tracing``): the pool writes them itself.
"""
