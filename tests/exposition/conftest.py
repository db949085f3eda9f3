"""Fixtures of the exposition tests: ``runworkers`` subprocesses, free ports, scrapes.

``runworkers(*args, workers={...}, env={...}, pythonpath=(...))`` runs ``manage.py runworkers`` in a
real subprocess (tests/runner/runworkers_process.py) with the settings module
``tests.exposition.exposition_settings`` and ``WORKERS = workers``; every process is killed at
teardown.
"""

from __future__ import annotations

import json
import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.runner.runworkers_process import ROOT, RunworkersProcess

SETTINGS = "tests.exposition.exposition_settings"

#: (sample name, sorted label items) -> value
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
def runworkers(tmp_path: Path) -> Iterator[Callable[..., RunworkersProcess]]:
    started: list[RunworkersProcess] = []

    def start(
        *args: str,
        workers: dict[str, Any] | None = None,
        env: dict[str, str] | None = None,
        pythonpath: tuple[Path, ...] = (),
    ) -> RunworkersProcess:
        environment = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(str(path) for path in (*pythonpath, ROOT, ROOT / "testproject")),
            "DJANGO_SETTINGS_MODULE": SETTINGS,
            "RUNWORKERS_TEST_WORKERS": json.dumps(workers if workers is not None else {"WORKERS": []}),
            "SQLITE_PATH": str(tmp_path / "db.sqlite3"),
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        for inherited in ("RUN_MAIN", "DJANGO_WORKERS_RELOADER_FD", "PROMETHEUS_MULTIPROC_DIR"):
            if inherited not in (env or {}):
                environment.pop(inherited, None)
        process = RunworkersProcess(list(args), environment)
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()


def free_port() -> int:
    """A TCP port that nothing listens on right now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def listening(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


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
