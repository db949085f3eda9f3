"""Fixtures and helpers of the observability tests: ``runworkers`` subprocesses with metrics, scrapes.

``runworkers(*args, workers={...}, env={...}, pythonpath=(...))`` is tests/conftest.py's ``start`` with
the settings module tests/scenarios/settings_observability.py (the runworkers scenario settings, plus
django-prometheus on demand); every process is killed at teardown.
"""

from __future__ import annotations

import functools
import time
import urllib.error
import urllib.request
from collections.abc import Callable

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import StartRunworkers

SETTINGS = "tests.scenarios.settings_observability"

#: (sample name, sorted label items) -> value
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
def runworkers(start: StartRunworkers) -> StartRunworkers:
    return functools.partial(start, settings=SETTINGS)


def scrape(url: str) -> Samples:
    """Every sample of a Prometheus text exposition."""
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def worker_series(samples: Samples, worker: str, prefix: str = "") -> dict[str, float]:
    """The series of one worker label, keyed ``executions:<status>``, ``running``, ``duration:<status>``."""
    found: dict[str, float] = {}
    for (name, labels), value in samples.items():
        label = dict(labels)
        if label.get("worker") != worker:
            continue
        if name == f"{prefix}worker_executions_total":
            found[f"executions:{label['status']}"] = value
        elif name == f"{prefix}workers_running":
            found["running"] = value
        elif name == f"{prefix}worker_execution_duration_seconds_count":
            found[f"duration:{label['status']}"] = value
    return found


def series(
    started: float = 0, restarted: float = 0, success: float = 0, error: float = 0, running: float = 0
) -> dict[str, float]:
    """The expected :func:`worker_series` of a worker (duration counts follow success and error)."""
    return {
        "executions:started": started,
        "executions:restarted": restarted,
        "executions:success": success,
        "executions:error": error,
        "running": running,
        "duration:success": success,
        "duration:error": error,
    }


def scrape_until(url: str, predicate: Callable[[Samples], bool], timeout: float = 10.0) -> Samples:
    """Scrape until ``predicate`` holds (the counters are updated just after the logged event)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            samples = scrape(url)
        except urllib.error.URLError:
            samples = {}
        if predicate(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.05)
