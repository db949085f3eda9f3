"""The start-up of ``manage.py runworkers`` in real subprocesses: each worker constructed once, signals
honoured while the constructors run, and an exit status 1 that always comes with its message."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.scenarios.workers_startup import PATH, constructions
from tests.support import StartRunworkers

pytestmark = pytest.mark.slow


def counted(record: Path, *names: str) -> dict:
    return {"WORKERS": [{"CLASS": f"{PATH}.Counted", "OPTIONS": {"record": str(record), "name": n}} for n in names]}


def slow(record: Path, release: Path, *names: str) -> dict:
    options = {"record": str(record), "release": str(release)}
    return {"WORKERS": [{"CLASS": f"{PATH}.SlowToConstruct", "OPTIONS": {**options, "name": n}} for n in names]}


@pytest.mark.parametrize(
    "args", [(), ("--skip-checks",), ("--worker", "alpha")], ids=["checks", "skip-checks", "worker"]
)
def test_runworkers_constructs_each_worker_once(start: StartRunworkers, tmp_path: Path, args: tuple[str, ...]) -> None:
    """The system checks, the settings and the pool share one instance per worker (three before)."""
    record = tmp_path / "constructions"
    process = start(*args, workers=counted(record, "alpha", "beta"))
    process.expect(r"alpha is running")
    process.expect(r"runworkers is running")
    process.send(signal.SIGTERM)
    assert process.wait() == 0
    assert constructions(record, process.pid) == ["alpha", "beta"]


def test_list_constructs_each_worker_once(start: StartRunworkers, tmp_path: Path) -> None:
    record = tmp_path / "constructions"
    process = start("--list", workers=counted(record, "alpha", "beta"))
    assert process.wait() == 0
    assert process.lines["stdout"][0] == "2 worker(s); stop timeout 25 seconds; history off"
    assert constructions(record, process.pid) == ["alpha", "beta"]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_during_start_up_exits_0_once_the_constructor_returns(
    start: StartRunworkers, tmp_path: Path, signum: int
) -> None:
    """No worker starts, and the constructors that did not begin never run."""
    record, release = tmp_path / "constructions", tmp_path / "release"
    process = start(workers=slow(record, release, "alpha", "beta"))
    process.expect(r"^constructing alpha$")
    process.send(signum)
    name = signal.Signals(signum).name
    process.expect(rf"received {name} during start-up: exiting without starting the workers once the current step")
    release.touch()  # the constructor returns

    began = time.monotonic()
    assert process.wait() == 0
    assert time.monotonic() - began < 5
    assert constructions(record, process.pid) == ["alpha"]
    log = process.stderr
    assert f"received {name} before the workers started: exiting" in log
    assert "constructing beta" not in log
    assert "runworkers starting" not in log
    assert "worker pool started" not in log
    assert "Traceback" not in log


@pytest.mark.parametrize(
    ("first", "second", "status", "message"),
    [
        (signal.SIGTERM, signal.SIGTERM, 143, "received SIGTERM again"),
        (signal.SIGINT, signal.SIGINT, 130, "received SIGINT again"),
        (signal.SIGINT, signal.SIGTERM, 143, "received SIGTERM after SIGINT"),
    ],
    ids=["SIGTERM-SIGTERM", "SIGINT-SIGINT", "SIGINT-SIGTERM"],
)
def test_a_second_signal_during_start_up_forces_the_exit(
    start: StartRunworkers, tmp_path: Path, first: int, second: int, status: int, message: str
) -> None:
    """The constructor never returns (it waits for a release that does not come): the exit does not wait."""
    record, release = tmp_path / "constructions", tmp_path / "release"
    process = start(workers=slow(record, release, "alpha"))
    process.expect(r"^constructing alpha$")
    process.send(first)
    process.expect(r"during start-up: exiting without starting the workers")
    process.expect(r"a second SIGTERM or SIGINT now forces the exit")  # past the copies' window

    began = time.monotonic()
    process.send(second)
    assert process.wait() == status
    assert time.monotonic() - began < 5  # at once, not when the constructor gives up
    assert f"{message}: forced exit with status {status}, not waiting for the start-up to finish" in process.stderr
    assert constructions(record, process.pid) == []  # the constructor never returned


# -- exit status 1 -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "workers", "expected"),
    [
        ((), {"WORKERS": [f"{PATH}.ExitingConstructor"]}, "ExitingConstructor() raised SystemExit: 1"),
        (("--skip-checks",), {"WORKERS": [f"{PATH}.ExitingConstructor"]}, "ExitingConstructor() raised SystemExit: 1"),
        (
            (),
            {
                "TRACING": {"ENABLED": True, "PROVIDER": f"{PATH}.exiting_tracer_provider"},
                "WORKERS": [{"CLASS": f"{PATH}.Counted", "OPTIONS": {"record": "/dev/null"}}],
            },
            "CommandError: cannot start: SystemExit: 1",
        ),
    ],
    ids=["constructor", "constructor-skip-checks", "tracer-provider-factory"],
)
def test_sys_exit_during_start_up_is_a_configuration_error_with_its_message(
    start: StartRunworkers, args: tuple[str, ...], workers: dict, expected: str
) -> None:
    """``sys.exit(1)`` in a constructor or a factory used to end the process with status 1 and no word."""
    process = start(*args, workers=workers)
    assert process.wait() == 1
    log = process.stderr
    assert expected in log
    assert "CommandError" in log or "SystemCheckError" in log
    assert "Traceback" not in log
    assert "runworkers is running" not in log


def test_a_worker_that_kills_the_process_is_told_from_a_configuration_error(
    start: StartRunworkers, tmp_path: Path
) -> None:
    """``os._exit(1)`` in a worker: status 1 too, but after ``runworkers is running`` and without the message
    that precedes a configuration error (docs/runworkers.md, "When the process dies")."""
    trigger = tmp_path / "trigger"
    process = start(workers={"WORKERS": [{"CLASS": f"{PATH}.ProcessKiller", "OPTIONS": {"trigger": str(trigger)}}]})
    process.expect(r"runworkers is running")
    trigger.touch()
    assert process.wait() == 1
    log = process.stderr
    assert "process-killer calls os._exit(1)" in log
    assert "CommandError" not in log
    assert "SystemCheckError" not in log
    assert "stopped gracefully" not in log
