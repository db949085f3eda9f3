"""Without opentelemetry or prometheus-client: a warning check, and the workers run without them.

The packages are hidden in a subprocess by a ``sitecustomize`` module that puts ``None`` in
``sys.modules`` for them (``import opentelemetry`` then raises ``ImportError``, as when it is not
installed).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.observability.conftest import SETTINGS
from tests.support import MANAGE, ROOT, StartRunworkers, W, runworkers_environment

pytestmark = pytest.mark.slow


def hiding(tmp_path: Path, *modules: str) -> Path:
    """A directory whose ``sitecustomize`` makes ``modules`` unimportable."""
    directory = tmp_path / "hide"
    directory.mkdir(exist_ok=True)
    (directory / "sitecustomize.py").write_text(
        "import sys\n" + "".join(f"sys.modules[{module!r}] = None\n" for module in modules)
    )
    return directory


def manage_check(tmp_path: Path, workers: dict[str, Any], *hidden: str) -> subprocess.CompletedProcess[str]:
    env = runworkers_environment(tmp_path, settings=SETTINGS, workers=workers, pythonpath=(hiding(tmp_path, *hidden),))
    return subprocess.run(
        [sys.executable, "-W", "error", str(MANAGE), "check", "--tag", "django_workers"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )


def test_the_hiding_works(tmp_path: Path) -> None:
    code = "import opentelemetry.trace"
    env = {**os.environ, "PYTHONPATH": str(hiding(tmp_path, "opentelemetry"))}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 1 and "Error: No module named 'opentelemetry.trace'" in result.stderr


def test_tracing_enabled_without_opentelemetry_is_a_warning_not_an_error(tmp_path: Path) -> None:
    workers = {
        "TRACING": {"ENABLED": True, "PROVIDER": "testproject.telemetry.tracer_provider"},
        "WORKERS": [f"{W}.OneShot"],
    }
    result = manage_check(tmp_path, workers, "opentelemetry")
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert (
        "(django_workers.W003) WORKERS['TRACING']['ENABLED'] is True, but opentelemetry-api is not installed" in output
    )
    assert "pip install 'django-worker-pool[tracing]'" in output
    assert "WORKERS['TRACING']['ENABLED'] = False" in output
    assert "E016" not in output  # the provider factory, which needs opentelemetry, is not imported
    assert "W004" not in output


def test_disabled_tracing_without_opentelemetry_is_silent(tmp_path: Path) -> None:
    result = manage_check(tmp_path, {"TRACING": {"ENABLED": False}, "WORKERS": [f"{W}.OneShot"]}, "opentelemetry")
    assert result.returncode == 0, result.stderr
    assert "W003" not in result.stdout + result.stderr


def test_metrics_enabled_without_prometheus_client_is_a_warning(tmp_path: Path) -> None:
    # Asked for explicitly: by default they are silently off (tests/settings/test_optional_packages.py).
    result = manage_check(tmp_path, {"METRICS": {"ENABLED": True}, "WORKERS": [f"{W}.OneShot"]}, "prometheus_client")
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert (
        "(django_workers.W004) WORKERS['METRICS']['ENABLED'] is True, but prometheus-client is not installed" in output
    )
    assert "W003" not in output


def test_runworkers_runs_without_either_package(runworkers: StartRunworkers, tmp_path: Path) -> None:
    workers = {
        "TRACING": {"PROVIDER": "testproject.telemetry.tracer_provider"},
        "WORKERS": [f"{W}.OneShot", f"{W}.Sleeper"],
    }
    process = runworkers(workers=workers, pythonpath=(hiding(tmp_path, "opentelemetry", "prometheus_client"),))
    process.expect(r"\[one-shot .*\] stopping execution attempt 1/1 with success")
    process.expect(r"sleeper is running")
    process.send(signal.SIGTERM)
    assert process.wait() == 0
    assert "ImportError" not in process.stderr


def test_a_metrics_port_without_prometheus_client_exits_1(runworkers: StartRunworkers, tmp_path: Path) -> None:
    process = runworkers(
        "--metrics-port",
        "0",
        workers={"WORKERS": [f"{W}.Sleeper"]},
        pythonpath=(hiding(tmp_path, "prometheus_client"),),
    )
    assert process.wait() == 1
    assert "--metrics-port/--metrics-address cannot be used: prometheus-client is not installed" in process.stderr
    assert "sleeper is running" not in process.stderr
