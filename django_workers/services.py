"""Process services: what ``runworkers`` runs beside the pool, for as long as the pool runs.

A service (the history recorder, the metrics endpoint, the health endpoint, …) is started before
the pool starts, so that it sees the pool's first events, and stopped after the pool stopped,
within what is left of the stop timeout. ``django_workers.conf.build_services`` decides which
services a process runs, from the settings and the command-line options.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from .core.context import LOGGER_NAME
from .core.pool import WorkerPool

__all__ = ["ProcessService", "start_services", "stop_services"]

logger = logging.getLogger(LOGGER_NAME)


@runtime_checkable
class ProcessService(Protocol):
    """Something that runs beside a pool in one process."""

    #: Shown in logs ("history recorder", "metrics endpoint on 127.0.0.1:9100").
    name: str

    def start(self, pool: WorkerPool) -> None:
        """Start (before ``pool.start()``); may add listeners to the pool. Raise to abort the start."""

    def stop(self, timeout: float) -> None:
        """Stop within ``timeout`` seconds (after ``pool.stop()``); must not raise."""


def start_services(services: Sequence[ProcessService], pool: WorkerPool) -> None:
    """Start the services in order; if one fails, stop those already started and re-raise."""
    started: list[ProcessService] = []
    try:
        for service in services:
            service.start(pool)
            started.append(service)
            logger.info("started %s", service.name)
    except BaseException:
        stop_services(started, 5.0)
        raise


def stop_services(services: Sequence[ProcessService], timeout: float) -> None:
    """Stop the services in reverse order, sharing ``timeout`` seconds; log (never raise) failures."""
    deadline = time.monotonic() + timeout
    for service in reversed(services):
        try:
            service.stop(max(0.0, deadline - time.monotonic()))
        except Exception:
            logger.exception("stopping %s failed", service.name)
