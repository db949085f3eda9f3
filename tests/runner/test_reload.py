"""``runworkers --reload``: a reloader process and a worker process that stops gracefully."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.support import SETTINGS, RunworkersProcess, StartRunworkers, W, pid_exists, wait_for

pytestmark = pytest.mark.slow

ALPHA = {"STOP_TIMEOUT": 10, "WORKERS": [{"CLASS": f"{W}.Sleeper", "OPTIONS": {"name": "alpha"}}]}


def worker_process(process: RunworkersProcess) -> int:
    """The pid of the (current) reloaded worker process, from its startup summary."""
    match = process.expect(r"runworkers starting \(pid (\d+)\)")
    assert match is not None
    pid = int(match.group(1))
    assert pid != process.pid
    return pid


def test_sigterm_to_the_reloader_stops_both_processes_gracefully(start: StartRunworkers) -> None:
    process = start("--reload", workers=ALPHA)
    child = worker_process(process)
    process.expect(r"watching for file changes with \w+Reloader")
    process.expect(r"alpha is running")

    process.send(signal.SIGTERM)  # to the reloader only, as `docker stop` does to PID 1
    assert process.wait() == 0
    wait_for(lambda: not pid_exists(child), interval=0.05, what=f"worker process {child} gone")
    log = process.stderr
    assert "received SIGTERM: stopping 1 worker(s) gracefully" in log
    assert "alpha noticed the cancellation" in log
    assert "runworkers stopped gracefully" in log
    assert "Traceback" not in log


def test_ctrl_c_reaching_both_processes_is_one_stop_request(start: StartRunworkers) -> None:
    process = start("--reload", workers=ALPHA)
    child = worker_process(process)
    process.expect(r"alpha is running")

    process.send_group(signal.SIGINT)  # a terminal's Ctrl-C: the reloader and the worker process get it
    assert process.wait() == 0  # not 130: the signal relayed by the reloader is the same request
    wait_for(lambda: not pid_exists(child), interval=0.05, what=f"worker process {child} gone")
    assert "received SIGINT: stopping 1 worker(s) gracefully" in process.stderr
    assert "forced exit" not in process.stderr


def test_a_second_sigterm_to_the_reloader_forces_the_exit(start: StartRunworkers) -> None:
    process = start("--reload", "--stop-timeout", "30", workers={"WORKERS": [f"{W}.Stuck"]})
    child = worker_process(process)
    process.expect(r"stuck is running")
    process.mark()
    process.send(signal.SIGTERM)
    process.expect(r"worker pool stopping \(timeout 30 seconds\)")
    process.expect(r"a second SIGTERM or SIGINT now forces the exit")  # past the copies' window
    process.send(signal.SIGTERM)
    assert process.wait() == 143
    assert not pid_exists(child)
    assert "received SIGTERM again: forced exit with status 143" in process.stderr


def touch_until(process: RunworkersProcess, path: Path, pattern: str, timeout: float = 20.0) -> None:
    """Bump the mtime of ``path`` until the process logs ``pattern`` (the reloader polls once a second)."""
    deadline = time.monotonic() + timeout
    bump = 0
    while process.expect(pattern, timeout=0.7, required=False) is None:
        if time.monotonic() > deadline:
            pytest.fail(f"touching {path} never produced /{pattern}/:\n{process.stderr}")
        bump += 1
        stamp = time.time() + bump
        os.utime(path, (stamp, stamp))


def test_a_file_change_restarts_the_workers_and_a_fixed_configuration_is_picked_up(
    start: StartRunworkers, tmp_path: Path
) -> None:
    settings = tmp_path / "reload_settings.py"
    settings.write_text(f"from {SETTINGS} import *\n\nWORKERS = {{'WORKERS': ['{W}.DoesNotExist']}}\n")
    process = start("--reload", settings="reload_settings", pythonpath=(tmp_path,))

    # A broken configuration: the error is shown, and the worker process waits for a fix.
    process.expect(r"SystemCheckError")
    process.expect(r"DoesNotExist")
    process.expect(r"runworkers is waiting for a file change to reload")
    process.mark()
    settings.write_text(f"from {SETTINGS} import *\n\nWORKERS = {ALPHA!r}\n")
    touch_until(process, settings, r"reload_settings\.py changed")
    first = worker_process(process)
    process.expect(r"alpha is running")

    # A change while the workers run: they stop gracefully, and a new worker process starts them.
    process.mark()
    touch_until(process, settings, r"reload_settings\.py changed")
    process.expect(r"alpha noticed the cancellation")
    process.expect(r"runworkers stopped its workers to reload")
    process.expect(r"restarting the worker process")
    second = worker_process(process)
    assert second != first
    process.expect(r"alpha is running")

    process.send(signal.SIGTERM)
    assert process.wait() == 0
    assert not pid_exists(first)
    assert not pid_exists(second)
    assert "Traceback" not in process.stderr
