"""Fixtures of the runworkers tests: ``start`` runs ``manage.py runworkers`` in a real subprocess.

``start(*args, workers={...})`` runs ``python testproject/manage.py runworkers *args`` with the
settings module ``tests.runner.scenario_settings`` and ``WORKERS = workers``. Every process is
started in a session of its own and killed (with its whole process group) at teardown.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.runner.runworkers_process import ROOT, SETTINGS, RunworkersProcess, StartRunworkers


@pytest.fixture
def start(tmp_path: Path) -> Iterator[StartRunworkers]:
    """A factory of ``runworkers`` subprocesses, all killed at teardown."""
    started: list[RunworkersProcess] = []

    def start(
        *args: str,
        workers: dict[str, Any] | None = None,
        env: dict[str, str] | None = None,
        settings: str = SETTINGS,
        pythonpath: tuple[Path, ...] = (),
    ) -> RunworkersProcess:
        environment = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(str(path) for path in (*pythonpath, ROOT, ROOT / "testproject")),
            "DJANGO_SETTINGS_MODULE": settings,
            "RUNWORKERS_TEST_WORKERS": json.dumps(workers if workers is not None else {"WORKERS": []}),
            "SQLITE_PATH": str(tmp_path / "db.sqlite3"),
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        for inherited in ("RUN_MAIN", "DJANGO_WORKERS_RELOADER_FD"):
            environment.pop(inherited, None)
        process = RunworkersProcess(list(args), environment)
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()
