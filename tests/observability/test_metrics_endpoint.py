"""The metrics endpoint of real ``runworkers`` subprocesses, scraped over HTTP."""

from __future__ import annotations

import importlib.util
import signal
import socket
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from tests.observability.conftest import Samples, scrape, scrape_until, series, worker_series
from tests.support import StartRunworkers, W, free_port, listening

pytestmark = pytest.mark.slow

ENDPOINT = r"started HTTP server on (http://127\.0\.0\.1:(\d+)) \(/metrics\)"

#: One worker of each fate: succeeds once, fails all 3 attempts (2 restarts), keeps running,
#: waits (deferred) for longer than the test.
SCENARIO = {
    "MAX_EXECUTIONS_ATTEMPTS": 3,
    "RESTART_BACKOFF": {"INITIAL": 0},
    "STOP_TIMEOUT": 10,
    "METRICS": {"NAMESPACE": "shop", "SUBSYSTEM": "jobs"},
    "WORKERS": [
        f"{W}.OneShot",
        f"{W}.Failing",
        {"CLASS": f"{W}.Sleeper", "OPTIONS": {"name": "Night Owl"}},
        {"CLASS": f"{W}.Sleeper", "OPTIONS": {"name": "later"}, "DEFERRED_START_THRESHOLD": 600},
    ],
}
PREFIX = "shop_jobs_"
EXPECTED = {
    "one_shot": series(started=1, success=1),
    "failing": series(started=3, restarted=2, error=3),
    "night_owl": series(started=1, running=1),
    "later": series(),
}


def all_series(samples: Samples, prefix: str = PREFIX) -> dict[str, dict[str, float]]:
    return {worker: worker_series(samples, worker, prefix) for worker in EXPECTED}


def test_a_scrape_shows_exact_series_after_successes_failures_and_restarts(runworkers: StartRunworkers) -> None:
    process = runworkers("--metrics-port", "0", workers=SCENARIO)
    endpoint = process.expect(ENDPOINT)
    assert endpoint is not None
    url, port = f"{endpoint.group(1)}/metrics", int(endpoint.group(2))
    process.expect(r"runworkers is running")

    # From start() on, every configured worker has its series, at 0 until something happens.
    first = scrape(url)
    for worker in EXPECTED:
        assert set(worker_series(first, worker, PREFIX)) == set(series()), worker
    assert worker_series(first, "later", PREFIX) == series()

    process.expect(r"\[failing .*\] max execution attempts reached")
    process.expect(r"\[one-shot .*\] stopping execution attempt 1/3 with success")
    process.expect(r"Night Owl is running")
    samples = scrape_until(url, lambda s: all_series(s) == EXPECTED)
    assert all_series(samples) == EXPECTED

    # The histogram: 3 failed attempts of 'failing', each in the +Inf bucket and the sum is a duration.
    inf = (
        f"{PREFIX}worker_execution_duration_seconds_bucket",
        (("le", "+Inf"), ("status", "error"), ("worker", "failing")),
    )
    assert samples[inf] == 3
    total = samples[(f"{PREFIX}worker_execution_duration_seconds_sum", (("status", "error"), ("worker", "failing")))]
    assert 0 < total < 10
    # The default registry is served: process metrics of the worker process too.
    assert any(name == "process_cpu_seconds_total" for name, _ in samples)

    process.send(signal.SIGTERM)
    assert process.wait() == 0
    assert not listening(port)
    assert "stopping HTTP server" not in process.stderr  # stop_services logs failures so


def test_the_port_comes_from_the_settings_and_a_busy_port_exits_1_with_a_clear_message(
    runworkers: StartRunworkers,
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        workers = {"METRICS": {"PORT": port}, "WORKERS": [f"{W}.Sleeper"]}
        process = runworkers(workers=workers)
        assert process.wait() == 1
    log = process.stderr
    assert f"cannot serve /metrics on 127.0.0.1:{port}: Address already in use" in log
    assert "another process listens on that port" in log
    assert "sleeper is running" not in log  # the pool never started
    assert "Traceback" not in log


def test_the_command_line_overrides_the_settings_port_and_address(runworkers: StartRunworkers) -> None:
    port = free_port()
    workers = {"METRICS": {"PORT": 1, "ADDRESS": "192.0.2.1"}, "WORKERS": [f"{W}.Sleeper"]}
    process = runworkers("--metrics-port", str(port), "--metrics-address", "127.0.0.1", workers=workers)
    process.expect(rf"started HTTP server on http://127\.0\.0\.1:{port} \(/metrics\)")
    process.expect(r"sleeper is running")
    assert worker_series(scrape(f"http://127.0.0.1:{port}/metrics"), "sleeper")["running"] == 1
    process.send(signal.SIGTERM)
    assert process.wait() == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("--metrics-port", "http"),
            "--metrics-port must be a TCP port number from 0 to 65535 (0: any free port), got 'http'",
        ),
        (("--metrics-port", "70000"), "--metrics-port must be a TCP port number from 0 to 65535"),
    ],
)
def test_a_bad_metrics_port_option_exits_1(runworkers: StartRunworkers, args: tuple[str, ...], message: str) -> None:
    process = runworkers(*args, workers={"WORKERS": [f"{W}.Sleeper"]})
    assert process.wait() == 1
    assert message in process.stderr


def test_disabled_metrics_bind_nothing_even_with_a_port_in_the_settings(runworkers: StartRunworkers) -> None:
    port = free_port()
    workers = {"METRICS": {"ENABLED": False, "PORT": port}, "WORKERS": [f"{W}.Sleeper"]}
    process = runworkers(workers=workers)
    process.expect(r"runworkers is running")
    process.expect(r"sleeper is running")
    assert not listening(port)
    assert "HTTP server" not in process.stderr
    process.send(signal.SIGTERM)
    assert process.wait() == 0


def test_a_metrics_port_option_with_disabled_metrics_is_a_configuration_error(runworkers: StartRunworkers) -> None:
    workers = {"METRICS": {"ENABLED": False}, "WORKERS": [f"{W}.Sleeper"]}
    process = runworkers("--metrics-port", "0", workers=workers)
    assert process.wait() == 1
    assert (
        "--metrics-port/--metrics-address cannot be used: metrics are disabled (WORKERS['METRICS']['ENABLED'] is False)"
        in process.stderr
    )
    assert "sleeper is running" not in process.stderr


def test_multiprocess_mode_sums_the_processes_and_forgets_the_gauges_of_exited_ones(
    runworkers: StartRunworkers, tmp_path: Path
) -> None:
    directory = tmp_path / "prometheus"
    directory.mkdir()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(directory)}
    workers = {
        "MAX_EXECUTIONS_ATTEMPTS": 3,
        "RESTART_BACKOFF": {"INITIAL": 0},
        "WORKERS": [f"{W}.Failing", f"{W}.OneShot", f"{W}.Sleeper"],
    }
    serving = runworkers("--worker", "failing", "--metrics-port", "0", workers=workers, env=env)
    url = serving.expect(ENDPOINT).group(1) + "/metrics"  # type: ignore[union-attr]
    serving.expect(r"started Prometheus multiprocess mode in ")
    serving.expect(r"\[failing .*\] max execution attempts reached")
    other = runworkers("--exclude", "one-shot", workers=workers, env=env)  # no endpoint of its own
    other.expect(r"\[failing .*\] max execution attempts reached")
    other.expect(r"sleeper is running")
    assert "HTTP server" not in other.stderr

    expected = {"failing": series(started=6, restarted=4, error=6), "sleeper": series(started=1, running=1)}

    def both(samples: Samples) -> dict[str, dict[str, float]]:
        return {worker: worker_series(samples, worker) for worker in expected}

    samples = scrape_until(url, lambda s: both(s) == expected)
    assert both(samples) == expected
    assert list(directory.glob("counter_*.db"))  # the values live in the directory

    other.send(signal.SIGTERM)
    assert other.wait() == 0
    # Its counters stay in the totals; its running gauge is gone with it (livesum of live processes).
    after = scrape_until(url, lambda s: worker_series(s, "sleeper").get("running", 0) == 0)
    assert worker_series(after, "failing")["executions:started"] == 6
    assert worker_series(after, "sleeper")["executions:started"] == 1
    assert worker_series(after, "sleeper").get("running", 0) == 0
    assert not list(directory.glob(f"gauge_livesum_{other.pid}.db"))

    serving.send(signal.SIGTERM)
    assert serving.wait() == 0
    # Another process (a web server's /metrics, here the test) still reads the totals.
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))
    assert registry.get_sample_value("worker_executions_total", {"worker": "failing", "status": "error"}) == 6
    assert registry.get_sample_value("workers_running", {"worker": "failing"}) in (None, 0.0)


@pytest.mark.skipif(importlib.util.find_spec("django_prometheus") is None, reason="django-prometheus is not installed")
def test_with_django_prometheus_exporting_the_same_registry_nothing_is_bound_twice(runworkers: StartRunworkers) -> None:
    port = free_port()
    workers = {"METRICS": {"PORT": port}, "WORKERS": [f"{W}.Sleeper"]}
    env = {"EXPOSITION_TEST_DJANGO_PROMETHEUS_PORT": str(port)}
    process = runworkers(workers=workers, env=env)
    process.expect(
        rf"metrics are served by django-prometheus on 127\.0\.0\.1:{port} \(PROMETHEUS_METRICS_EXPORT_PORT\); "
        r"runworkers binds no other port"
    )
    process.expect(r"sleeper is running")
    samples = scrape_until(
        f"http://127.0.0.1:{port}/metrics", lambda s: worker_series(s, "sleeper").get("running") == 1
    )
    assert worker_series(samples, "sleeper") == series(started=1, running=1)
    assert "HTTP server on" not in process.stderr
    process.send(signal.SIGTERM)
    assert process.wait() == 0
