"""A fresh install warns about nothing: metrics and tracing are on when their package is importable.

By default (no ``ENABLED`` key) metrics need prometheus-client and tracing opentelemetry-api; a
project without them gets neither, silently, instead of ``W003``/``W004`` on every ``migrate``,
``check`` and ``runserver``. The warnings remain for a project that asked for the feature:
``ENABLED: True``, a metrics ``PORT`` or a tracing ``PROVIDER`` set without the package.

The in-process tests make the packages unimportable for the validation and the composition root
(``importable()``); the subprocess test hides them for real, in a new process (``sitecustomize``).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from django_workers import runtime
from django_workers import settings as conf
from django_workers.settings import MetricsSettings, TracingSettings, validation
from tests.scenarios.workers_fixtures import PATH
from tests.support import MANAGE, ROOT, runworkers_environment

CLASSIC = f"{PATH}.ClassicWorker"
PROVIDER = "tests.scenarios.workers_observability.memory_provider"

#: The configuration of the README's "Use it in a Django project", with this suite's workers.
README_WORKERS: dict[str, Any] = {
    "MAX_EXECUTIONS_ATTEMPTS": 0,
    "RESTART_BACKOFF": {"INITIAL": 1.0, "MAXIMUM": 30.0, "MULTIPLIER": 2.0, "JITTER": 0.1},
    "STOP_TIMEOUT": 25.0,
    "WORKERS": [CLASSIC, {"CLASS": f"{PATH}.OptionsWorker", "OPTIONS": {"queue": "emails"}}],
}


@pytest.fixture
def without_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    """prometheus-client and opentelemetry-api are not importable (for the validation and the runtime)."""
    missing = {"prometheus_client", "opentelemetry.trace"}

    def importable(module: str) -> bool:
        assert module in missing, f"unexpected probe of {module!r}"
        return False

    monkeypatch.setattr(validation, "importable", importable)
    monkeypatch.setattr(runtime, "importable", importable)


def ids(workers: dict[str, Any]) -> list[str]:
    found = conf.validate_settings(workers, databases={"default": {}})
    return [message.id for message in found.messages]


@pytest.mark.usefixtures("without_packages")
@pytest.mark.parametrize(
    "workers",
    [
        README_WORKERS,
        {"WORKERS": [CLASSIC]},
        {"METRICS": {}, "TRACING": {}, "WORKERS": [CLASSIC]},
        {"METRICS": {"NAMESPACE": "shop"}, "TRACING": {"PROVIDER": None}, "WORKERS": [CLASSIC]},
        {"METRICS": {"ENABLED": False, "PORT": 9100}, "TRACING": {"ENABLED": False}, "WORKERS": [CLASSIC]},
    ],
    ids=["readme", "workers-only", "empty-sections", "no-request", "disabled"],
)
def test_a_default_configuration_without_the_packages_is_silent(workers: dict[str, Any]) -> None:
    assert ids(workers) == []


@pytest.mark.usefixtures("without_packages")
def test_a_default_configuration_without_the_packages_builds_a_pool_without_metrics_or_spans() -> None:
    validated = conf.validate_settings(README_WORKERS, databases={"default": {}}).settings
    assert validated is not None
    assert (validated.metrics, validated.tracing) == (MetricsSettings(), TracingSettings())
    assert runtime.pool_metrics(validated.metrics) is None
    assert runtime._pool_tracing(validated.tracing) == {"tracing": False, "tracer_provider": None}
    pool = runtime.build_pool(validated)
    assert (pool.metrics, pool.tracer_provider) == (None, None)


@pytest.mark.usefixtures("without_packages")
@pytest.mark.parametrize(
    ("workers", "check_id", "text"),
    [
        (
            {"METRICS": {"ENABLED": True}},
            "django_workers.W004",
            "WORKERS['METRICS']['ENABLED'] is True, but prometheus-client is not installed: workers run without "
            "metrics.",
        ),
        (
            {"METRICS": {"PORT": 9100}},
            "django_workers.W004",
            "WORKERS['METRICS']['PORT'] is set, but prometheus-client is not installed: workers run without metrics.",
        ),
        (
            {"TRACING": {"ENABLED": True}},
            "django_workers.W003",
            "WORKERS['TRACING']['ENABLED'] is True, but opentelemetry-api is not installed: workers run without spans.",
        ),
        (
            {"TRACING": {"PROVIDER": PROVIDER}},
            "django_workers.W003",
            "WORKERS['TRACING']['PROVIDER'] is set, but opentelemetry-api is not installed: workers run without spans.",
        ),
    ],
    ids=["metrics-enabled", "metrics-port", "tracing-enabled", "tracing-provider"],
)
def test_asking_for_a_feature_whose_package_is_missing_is_a_warning(
    workers: dict[str, Any], check_id: str, text: str
) -> None:
    found = conf.validate_settings({**workers, "WORKERS": [CLASSIC]}, databases={"default": {}})
    [message] = found.messages
    assert (message.id, message.msg) == (check_id, text)
    assert "pip install 'django-worker-pool[" in message.hint
    assert "= False" in message.hint
    assert found.settings is not None  # a warning: the workers run, without the feature


def test_with_the_packages_installed_nothing_is_said_either_way() -> None:
    explicit = {"METRICS": {"ENABLED": True}, "TRACING": {"ENABLED": True, "PROVIDER": PROVIDER}}
    assert ids({**explicit, "WORKERS": [CLASSIC]}) == []
    assert ids({"WORKERS": [CLASSIC]}) == []


@pytest.mark.slow
def test_manage_py_check_of_a_fresh_install_without_either_package_prints_no_warning(tmp_path: Path) -> None:
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text(
        "import sys\nsys.modules['prometheus_client'] = None\nsys.modules['opentelemetry'] = None\n"
    )
    env = runworkers_environment(tmp_path, workers=README_WORKERS, pythonpath=(hide,))
    result = subprocess.run(
        [sys.executable, "-W", "error", str(MANAGE), "check"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "System check identified no issues" in output
    assert "W003" not in output and "W004" not in output
