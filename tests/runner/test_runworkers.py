"""``manage.py runworkers`` in real subprocesses: signals, exit statuses, options, logging."""

from __future__ import annotations

import signal
import time

import pytest

from django_workers.runner.signals import COPY_WINDOW, Wakeup
from tests.support import StartRunworkers, W

pytestmark = pytest.mark.slow

SLEEPERS = {
    "STOP_TIMEOUT": 10,
    "WORKERS": [
        {"CLASS": f"{W}.Sleeper", "OPTIONS": {"name": "alpha"}},
        {"CLASS": f"{W}.Sleeper", "OPTIONS": {"name": "beta"}},
        {"CLASS": f"{W}.Sleeper", "OPTIONS": {"name": "gamma"}},
    ],
}


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_the_workers_gracefully_and_exits_0(start: StartRunworkers, signum: int) -> None:
    workers = {
        "STOP_TIMEOUT": 10,
        "WORKERS": [
            {"CLASS": f"{W}.Sleeper", "OPTIONS": {"name": "alpha"}},
            f"{W}.AsyncSleeper",
            f"{W}.OneShot",
        ],
    }
    process = start(workers=workers)
    process.expect(r"runworkers starting \(pid \d+\): 3 worker\(s\), stop timeout 10 seconds, history off")
    process.expect(r"runworkers is running")
    process.expect(r"alpha is running")
    process.expect(r"async-sleeper is running")

    began = time.monotonic()
    process.send(signum)
    assert process.wait() == 0
    assert time.monotonic() - began < 10  # within the stop timeout

    name = signal.Signals(signum).name
    log = process.stderr
    assert f"received {name}: stopping 3 worker(s) gracefully within 10 seconds" in log
    assert "alpha noticed the cancellation" in log
    assert "worker alpha: class" not in log  # -v 1: the workers' settings are DEBUG lines
    assert "final statuses of 3 worker(s): 3 success" in log
    assert "final status:" not in log  # -v 1: a line of its own only for a worker that did not end well
    assert "runworkers stopped gracefully" in log
    assert "Traceback" not in log


def test_workers_left_running_at_the_stop_timeout_exit_3_with_their_stack(start: StartRunworkers) -> None:
    process = start(workers={"STOP_TIMEOUT": 0.5, "WORKERS": [f"{W}.Stuck", f"{W}.Sleeper"]})
    process.expect(r"stuck is running and will ignore cancellation")
    process.expect(r"sleeper is running")

    began = time.monotonic()
    process.send(signal.SIGTERM)
    assert process.wait() == 3
    assert time.monotonic() - began < 0.5 + 5  # the timeout, plus generous start-up noise

    log = process.stderr
    assert "did not stop within 0.5 seconds; its stack:" in log
    assert "in ignore_cancellation" in log  # the stuck frame, in the logged stack
    assert "workers_runworkers.py" in log
    assert "final statuses of 2 worker(s): 1 running, 1 success" in log
    assert "worker stuck final status: running after attempt 1/1; it did not stop" in log
    assert "worker sleeper final status" not in log  # -v 1: it ended well
    assert "1 worker(s) did not stop within 0.5 seconds: stuck; exiting with status 3" in log


def test_one_request_delivered_twice_counts_once_and_a_later_signal_forces() -> None:
    """``timeout`` and process managers signal the process and then its process group: the copy may
    land before the main thread acts, or just after the graceful stop began (both observed with
    ``timeout -s INT``). It is not a second, forcing, signal; the same signal later is, and so is
    another signal at once. Driven through the handler, on a fake clock."""
    now = [100.0]
    wake = Wakeup(clock=lambda: now[0])
    try:
        wake.on_signal(signal.SIGINT, None)
        now[0] += 0.001
        wake.on_signal(signal.SIGINT, None)  # the copy sent to the process group, before the main thread acts
        assert wake.stop_requests == 2
        wake.acknowledge()  # the main thread begins the graceful stop
        assert wake.forcing_signal() is None
        now[0] += COPY_WINDOW / 2
        assert wake.copy_window_left() == pytest.approx(COPY_WINDOW / 2 - 0.001)
        wake.on_signal(signal.SIGINT, None)  # a copy that lands after the stop began
        assert wake.forcing_signal() is None
        now[0] += COPY_WINDOW
        assert wake.copy_window_left() == 0.0
        wake.on_signal(signal.SIGINT, None)  # the same signal, later: a second request
        assert wake.forcing_signal() == signal.SIGINT
    finally:
        wake.close()

    wake = Wakeup(clock=lambda: now[0])
    try:
        wake.on_signal(signal.SIGTERM, None)
        wake.acknowledge()
        now[0] += 0.001
        wake.on_signal(signal.SIGINT, None)  # another signal: a second request, however soon
        assert wake.forcing_signal() == signal.SIGINT
    finally:
        wake.close()

    wake = Wakeup(clock=lambda: now[0])
    try:
        wake.relay(bytes([signal.SIGTERM, signal.SIGTERM]))  # relayed by the --reload parent, twice at once
        wake.acknowledge()
        assert wake.forcing_signal() is None
        now[0] += 2 * COPY_WINDOW
        wake.relay(bytes([signal.SIGTERM]))
        assert wake.forcing_signal() == signal.SIGTERM
    finally:
        wake.close()


@pytest.mark.parametrize(
    ("first", "second", "status", "message"),
    [
        (signal.SIGINT, signal.SIGINT, 130, "received SIGINT again"),
        (signal.SIGTERM, signal.SIGTERM, 143, "received SIGTERM again"),
        (signal.SIGTERM, signal.SIGINT, 130, "received SIGINT after SIGTERM"),
        (signal.SIGINT, signal.SIGTERM, 143, "received SIGTERM after SIGINT"),
    ],
    ids=["SIGINT-SIGINT", "SIGTERM-SIGTERM", "SIGTERM-SIGINT", "SIGINT-SIGTERM"],
)
def test_a_second_signal_during_a_slow_stop_forces_the_exit(
    start: StartRunworkers, first: int, second: int, status: int, message: str
) -> None:
    process = start("--stop-timeout", "30", workers={"WORKERS": [f"{W}.Stuck"]})
    process.expect(r"stuck is running")
    process.mark()
    process.send(first)
    process.expect(r"worker pool stopping \(timeout 30 seconds\)")
    process.expect(r"a second SIGTERM or SIGINT now forces the exit")  # past the copies' window

    began = time.monotonic()
    process.send(second)
    assert process.wait() == status
    assert time.monotonic() - began < 5  # at once, not after the 30 s stop timeout
    assert f"{message}: forced exit with status {status}, not waiting for stuck" in process.stderr


@pytest.mark.parametrize("skip_checks", [False, True], ids=["checks", "skip-checks"])
def test_a_broken_configuration_exits_1_with_the_check_message(start: StartRunworkers, skip_checks: bool) -> None:
    args = ["--skip-checks"] if skip_checks else []
    process = start(*args, workers={"WORKERS": [f"{W}.DoesNotExist"]})
    assert process.wait() == 1
    log = process.stderr
    assert "django_workers.E0" in log
    assert "DoesNotExist" in log
    assert ("Invalid settings.WORKERS" if skip_checks else "SystemCheckError") in log
    assert "Traceback" not in log
    assert "worker pool started" not in log


def test_an_unknown_worker_name_exits_1_with_a_clear_message(start: StartRunworkers) -> None:
    process = start("--worker", "alpah", workers=SLEEPERS)
    assert process.wait() == 1
    log = process.stderr
    assert "CommandError: cannot select the workers to run: unknown worker 'alpah' (did you mean 'alpha'?)" in log
    assert "configured workers: alpha, beta, gamma" in log
    assert "Traceback" not in log


@pytest.mark.parametrize(
    ("args", "workers", "message"),
    [
        ((), {"WORKERS": []}, "no worker to run: settings.WORKERS['WORKERS'] is empty"),
        (
            ("--worker", "alpha", "--exclude", "alpha"),
            SLEEPERS,
            "no worker to run: --worker/--exclude left none of the configured workers (alpha, beta, gamma)",
        ),
    ],
    ids=["empty", "all-excluded"],
)
def test_no_worker_to_run_exits_1(start: StartRunworkers, args: tuple[str, ...], workers: dict, message: str) -> None:
    process = start(*args, workers=workers)
    assert process.wait() == 1
    assert message in process.stderr
    assert "Traceback" not in process.stderr


def test_a_bad_stop_timeout_exits_1(start: StartRunworkers) -> None:
    process = start("--stop-timeout", "-1", workers=SLEEPERS)
    assert process.wait() == 1
    assert "CommandError: --stop-timeout must be a number of seconds >= 0, got '-1'" in process.stderr


@pytest.mark.parametrize(
    "args",
    [("--worker", "alpha", "--worker", "gamma"), ("--exclude", "beta")],
    ids=["worker", "exclude"],
)
def test_worker_and_exclude_choose_the_workers_that_start(start: StartRunworkers, args: tuple[str, ...]) -> None:
    process = start(*args, workers=SLEEPERS)
    process.expect(r"runworkers starting \(pid \d+\): 2 worker\(s\)")
    process.expect(r"worker pool started with 2 worker\(s\): alpha, gamma$")
    process.send(signal.SIGTERM)
    assert process.wait() == 0
    assert "beta" not in process.stderr


def test_list_prints_the_workers_with_their_settings_and_exits_0(start: StartRunworkers) -> None:
    workers = {
        "MAX_EXECUTIONS_ATTEMPTS": 3,
        "RESTART_BACKOFF": {"INITIAL": 0.5, "MAXIMUM": 8, "MULTIPLIER": 3, "JITTER": 0.2},
        "STOP_TIMEOUT": 12.5,
        "WORKERS": [
            f"{W}.OneShot",
            {
                "CLASS": f"{W}.Sleeper",
                "OPTIONS": {"name": "alpha"},
                "MAX_EXECUTIONS_ATTEMPTS": 0,
                "DEFERRED_START_THRESHOLD": 1.5,
                "RESTART_BACKOFF": {"INITIAL": 0},
            },
        ],
    }
    process = start("--list", workers=workers)
    assert process.wait() == 0
    assert process.lines["stdout"] == [
        "2 worker(s); stop timeout 12.5 seconds; history off",
        "",
        "one-shot",
        f"    class            {W}.OneShot",
        "    attempts         3",
        "    deferred start   none",
        "    restart backoff  initial 0.5 s, maximum 8 s, multiplier 3, jitter 0.2",
        "    options          {}",
        "",
        "alpha",
        f"    class            {W}.Sleeper",
        "    attempts         unlimited",
        "    deferred start   1.5 seconds",
        "    restart backoff  none (restart at once)",
        "    options          {'name': 'alpha'}",
    ]
    assert "worker pool started" not in process.stderr


def test_list_shows_the_selection(start: StartRunworkers) -> None:
    process = start("--list", "--exclude", "beta", workers=SLEEPERS)
    assert process.wait() == 0
    assert process.lines["stdout"][0] == "2 of 3 worker(s); stop timeout 10 seconds; history off"
    names = [line for line in process.lines["stdout"] if line and not line.startswith(" ")][1:]
    assert names == ["alpha", "gamma"]


def test_verbosity_2_describes_each_worker_and_its_final_status(start: StartRunworkers) -> None:
    process = start("-v", "2", workers=SLEEPERS)
    process.expect(r"gamma is running")
    process.send(signal.SIGTERM)
    assert process.wait() == 0
    log = process.stderr
    assert "runworkers starting" in log
    for name in ("alpha", "beta", "gamma"):
        assert (
            f"DEBUG   [- -] worker {name}: class {W}.Sleeper; attempts 1 (no restart); deferred start none; "
            f"restart backoff initial 1 s, maximum 30 s, multiplier 2, jitter 0.1; options {{'name': '{name}'}}"
        ) in log
        assert f"DEBUG   [- -] worker {name} final status: success after attempt 1/1" in log
    assert "final statuses of 3 worker(s): 3 success" in log


def test_many_workers_log_one_start_up_line_each_at_most(start: StartRunworkers) -> None:
    """1,000 workers must not print 4,000 lines: at -v 1 the start-up and the shutdown summaries are one
    line each; what is left per worker is the pool's own lines, one as its attempt starts, one as it ends."""
    count = 200
    names = [f"quiet-{index:03d}" for index in range(count)]
    workers = {"STOP_TIMEOUT": 10, "WORKERS": [{"CLASS": f"{W}.Quiet", "OPTIONS": {"name": name}} for name in names]}
    process = start(workers=workers)
    process.expect(rf"runworkers starting \(pid \d+\): {count} worker\(s\), stop timeout 10 seconds, history off$")
    process.expect(rf"worker pool started with {count} worker\(s\): quiet-000, quiet-001, ")
    process.expect(r"runworkers is running")
    process.send(signal.SIGTERM)
    assert process.wait(30) == 0

    lines = process.lines["stderr"]
    log = process.stderr
    assert f"final statuses of {count} worker(s): {count} success" in log
    assert "runworkers stopped gracefully" in log
    assert len(lines) <= 2 * count + 20, f"{len(lines)} lines for {count} workers:\n{log}"
    for name in names:
        own = [line for line in lines if f" [{name} " in line]
        assert len(own) <= 2, own  # its attempt starting, and ending
        assert sum(1 for line in own if "starting" in line) <= 1
    assert not [line for line in lines if "[- -] worker quiet-" in line]  # no description, no final status
    assert "Traceback" not in log


@pytest.mark.parametrize("verbosity", [0, 1, 2, 3])
def test_verbosity_sets_the_log_level(start: StartRunworkers, verbosity: int) -> None:
    process = start("-v", str(verbosity), workers={"WORKERS": [f"{W}.Chatty"]})
    # Chatty logs debug, info, then error: once the error line is seen, the others were decided.
    error = process.expect(r"chatty error line")
    assert error is not None
    assert "ERROR   [chatty " in error.string  # the worker and its execution id are in the format
    process.send(signal.SIGTERM)
    assert process.wait() == 0
    log = process.stderr
    assert ("chatty info line" in log) == (verbosity >= 1)
    assert ("runworkers starting" in log) == (verbosity >= 1)
    assert ("chatty debug line" in log) == (verbosity >= 2)


def test_a_logging_setting_for_the_logger_is_left_alone(start: StartRunworkers) -> None:
    process = start("-v", "2", workers={"WORKERS": [f"{W}.Chatty"]}, env={"RUNWORKERS_TEST_LOGGING": "1"})
    process.expect(r"^CUSTOM ERROR chatty error line$")
    process.send(signal.SIGTERM)
    assert process.wait() == 0
    log = process.stderr
    assert "chatty info line" not in log  # LOGGING's WARNING level wins over -v 2
    assert "[chatty " not in log  # and its format over runworkers' own


def test_runworkers_keeps_running_when_every_worker_has_finished(start: StartRunworkers) -> None:
    process = start(workers={"WORKERS": [f"{W}.OneShot", f"{W}.Failing"]})
    process.expect(
        r"WARNING .* no worker is running any more \(.*\); runworkers keeps running until it receives SIGTERM or SIGINT"
    )
    assert process.alive()
    process.send(signal.SIGTERM)
    assert process.wait() == 0
    log = process.stderr
    assert "final statuses of 2 worker(s): 1 success, 1 error" in log
    assert "worker one-shot final status" not in log  # -v 1: it ended well
    assert "worker failing final status: error after attempt 1/1 (failing on purpose)" in log
