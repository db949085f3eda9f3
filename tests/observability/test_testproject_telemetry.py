"""The test project's wiring (testproject/telemetry.py, wsgi.py, settings): requests and attempts traced.

Runs in a subprocess with ``OTEL_TRACES_EXPORTER=console``: DjangoInstrumentor changes
``settings.MIDDLEWARE`` for the whole process, and the console exporter prints to its stdout.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.support import ROOT, runworkers_environment

pytestmark = pytest.mark.slow

SCRIPT = textwrap.dedent(
    """
    from wsgiref.util import setup_testing_defaults

    from testproject.wsgi import application  # instruments requests, then builds the handler

    environ = {}
    setup_testing_defaults(environ)
    environ["PATH_INFO"] = "/admin/login/"
    statuses = []
    b"".join(application(environ, lambda status, headers, exc_info=None: statuses.append(status)))
    print("STATUS", statuses[0], flush=True)

    from django_workers.runtime import build_pool
    from testproject.telemetry import tracer_provider

    pool = build_pool(only=["classic-worker"])
    assert pool.tracer_provider is tracer_provider()
    with pool:
        assert pool.wait(10)
    tracer_provider().force_flush()
    print("END", flush=True)
    """
)


def spans_of(output: str) -> list[dict[str, Any]]:
    """The JSON spans the console exporter printed."""
    decoder = json.JSONDecoder()
    spans, index = [], output.find("{")
    while index != -1:
        span, end = decoder.raw_decode(output, index)
        spans.append(span)
        index = output.find("{", end)
    return spans


def run(tmp_path: Path, exporter: str) -> subprocess.CompletedProcess[str]:
    env = runworkers_environment(
        tmp_path,
        settings="testproject.settings",
        env={"OTEL_TRACES_EXPORTER": exporter, "OTEL_SERVICE_NAME": "telemetry-test"},
    )
    return subprocess.run(
        [sys.executable, "-W", "error", "-c", SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )


@pytest.mark.skipif(
    importlib.util.find_spec("opentelemetry.instrumentation.django") is None,
    reason="opentelemetry-instrumentation-django is not installed",
)
def test_console_exporter_shows_request_and_attempt_spans(tmp_path: Path) -> None:
    result = run(tmp_path, "console")
    assert result.returncode == 0, result.stderr
    assert "STATUS 200 OK" in result.stdout
    spans = spans_of(result.stdout.split("STATUS", 1)[1])
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for span in spans:
        by_kind.setdefault(span["kind"], []).append(span)
    (request,) = by_kind["SpanKind.SERVER"]
    assert request["attributes"]["http.route"] == "admin/login/"
    assert "Worker" not in request["attributes"]  # not inside a worker
    (attempt,) = [span for span in spans if span["name"] == "worker classic-worker"]
    assert attempt["attributes"]["Worker"] == "classic-worker"
    assert attempt["attributes"]["WorkerExecutionID"]
    assert attempt["resource"]["attributes"]["service.name"] == "telemetry-test"


def test_the_default_exporter_is_quiet(tmp_path: Path) -> None:
    result = run(tmp_path, "none")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["STATUS", "200", "OK", "END"]
