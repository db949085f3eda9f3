"""The health of the workers: one rule, the reports built on it, and the web check.

- :mod:`.rule`: what makes a worker unhealthy (framework-free), :class:`~.rule.WorkerProbe`
  (public as ``django_workers.probe.WorkerProbe``).
- :mod:`.reports`: the health from a pool of this process, the history tables or a
  ``runworkers`` endpoint (``/readyz``); what ``checkworkers`` and the web check answer.
- :mod:`.check`: ``Workers``, the django-health-check 4.x check (``pip install
  'django-worker-pool[health]'``), public as ``django_workers.health.Workers``.

Importing this package imports none of them: the probe needs neither Django nor
django-health-check.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .check import Workers

__all__ = ["Workers"]


def __getattr__(name: str) -> object:
    if name == "Workers":
        from .check import Workers  # noqa: PLC0415 - optional dependency: django-health-check

        return Workers
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
