"""Helpers shared by the test packages (fixtures live in the conftest.py files, helpers used by one package there too).

- paths: ``ROOT`` (the project), ``MANAGE`` (the test project's manage.py);
- waiting: :func:`wait_for` (poll a predicate with a deadline, never a bare sleep);
- ports and HTTP: :func:`free_port`, :func:`listening`, :func:`get_raw`, :func:`get_json`;
- in-process pools: ``ZERO_BACKOFF``, :class:`FnWorker`, :class:`AsyncFnWorker` and :class:`Harness` (the
  ``harness`` fixture of tests/conftest.py);
- logs: :class:`RecordCollector`, :func:`collect_logs` (here, not in tests/core/conftest.py: pytest imports a
  conftest.py as ``conftest``, a test importing it gets a second module, and ``isinstance`` against the
  handler of tests/core's autouse fixture needs the one class);
- ``runworkers`` subprocesses (the ``start`` fixture of tests/conftest.py): the scenario modules ``SETTINGS`` and
  ``W`` (tests/scenarios: ``settings_<name>`` a subprocess runs with, ``workers_<name>`` the classes its WORKERS
  names), :func:`runworkers_environment`, :class:`RunworkersProcess`, :func:`pid_exists`.
"""

from __future__ import annotations

import datetime
import itertools
import json
import logging
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from django_workers.core import Backoff, Worker, WorkerContext, WorkerPool

ROOT = Path(__file__).resolve().parent.parent
MANAGE = ROOT / "testproject" / "manage.py"


# -- waiting -------------------------------------------------------------------------------------------


def wait_for(
    predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.005, *, what: str | None = None
) -> None:
    """Poll ``predicate`` every ``interval`` seconds until it is truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(
                f"{what} not met within {timeout} seconds"
                if what
                else f"condition not met within {timeout} seconds: {predicate}"
            )
        time.sleep(interval)


# -- ports and HTTP ---------------------------------------------------------------------------------------------


def free_port() -> int:
    """A local TCP port that nothing listens on right now (the kernel's pick, bound then released)."""
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


def get_raw(url: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    """GET ``url`` (header names with ``_`` for ``-``): the status, headers and body, error statuses included."""
    request = urllib.request.Request(url, headers={name.replace("_", "-"): value for name, value in headers.items()})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, dict(exc.headers), exc.read()


def get_json(url: str, **headers: str) -> tuple[int, Any]:
    """GET ``url``: the status and the JSON body, error statuses included."""
    status, _, body = get_raw(url, **headers)
    return status, json.loads(body)


# -- in-process pools ----------------------------------------------------------------------------------

#: Restart at once: for tests where time is not the subject.
ZERO_BACKOFF = Backoff(initial=0)


class FnWorker(Worker):
    """A sync worker whose ``run`` calls ``fn(ctx)``; ``calls`` counts the attempts that ran."""

    def __init__(self, name: str, fn: Callable[[WorkerContext], Any] | None = None) -> None:
        self.name = name
        self.fn = fn
        self.calls = 0

    def run(self, ctx: WorkerContext) -> Any:
        self.calls += 1
        return None if self.fn is None else self.fn(ctx)


class AsyncFnWorker(Worker):
    """An async worker whose ``run`` awaits ``fn(ctx)``; ``calls`` counts the attempts that ran."""

    def __init__(self, name: str, fn: Callable[[WorkerContext], Awaitable[Any]] | None = None) -> None:
        self.name = name
        self.fn = fn
        self.calls = 0

    async def run(self, ctx: WorkerContext) -> Any:
        self.calls += 1
        return None if self.fn is None else await self.fn(ctx)


class Harness:
    """Builds pools and gates for one test, and cleans up after it.

    At teardown every gate is opened (so a worker blocked on one returns), then every pool is
    stopped; a pool that still has a running worker then fails the test.
    """

    def __init__(self) -> None:
        self.pools: list[WorkerPool] = []
        self.gates: list[threading.Event] = []

    def pool(self, *workers: Worker, cls: type[WorkerPool] = WorkerPool, **kwargs: Any) -> WorkerPool:
        """A pool (zero restart backoff unless given) with ``workers`` registered."""
        kwargs.setdefault("restart_backoff", ZERO_BACKOFF)
        pool = cls(**kwargs)
        for worker in workers:
            pool.register(worker)
        self.pools.append(pool)
        return pool

    def gate(self) -> threading.Event:
        """An event that a blocking worker waits on; opened at teardown at the latest."""
        gate = threading.Event()
        self.gates.append(gate)
        return gate

    def close(self) -> None:
        for gate in self.gates:
            gate.set()
        left = {id(pool): pool.stop(timeout=5.0) for pool in self.pools}
        leftover = {key: names for key, names in left.items() if names}
        assert not leftover, f"workers still running at teardown: {leftover}"


# -- logs ----------------------------------------------------------------------------------------------


class RecordCollector(logging.Handler):
    """A handler keeping the records it receives (thread-safe: ``Handler.handle`` holds its lock)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def matching(self, text: str, level: int | None = None) -> list[logging.LogRecord]:
        with self.lock:  # type: ignore[union-attr]
            records = list(self.records)
        return [r for r in records if text in r.getMessage() and (level is None or r.levelno == level)]


@contextmanager
def collect_logs(
    name: str = "django_workers", level: int = logging.DEBUG, filters: tuple[logging.Filter, ...] = ()
) -> Iterator[RecordCollector]:
    """Attach a :class:`RecordCollector` to logger ``name`` for the duration of the block."""
    logger = logging.getLogger(name)
    handler = RecordCollector()
    for log_filter in filters:
        handler.addFilter(log_filter)
    previous = logger.level
    logger.setLevel(level)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


# -- runworkers subprocesses ---------------------------------------------------------------------------

#: The settings of the runworkers subprocesses: the test project's, WORKERS from the environment.
SETTINGS = "tests.scenarios.settings_runworkers"
#: Dotted path prefix of the workers of the runworkers scenarios.
W = "tests.scenarios.workers_runworkers"

#: Variables a subprocess must not inherit from the test process (unless a test gives them).
NOT_INHERITED = ("RUN_MAIN", "DJANGO_WORKERS_RELOADER_FD", "PROMETHEUS_MULTIPROC_DIR")


def node_factory(now: datetime.datetime) -> Callable[..., Any]:
    """A function creating ``Node`` rows, each with a new pid, as of ``now``.

    A live node of host-a running workers alpha and beta, unless the keyword arguments say otherwise.
    """
    from django_workers.models import Node

    pids = itertools.count(1000)

    def make(**fields: Any) -> Node:
        values: dict[str, Any] = {
            "hostname": "host-a",
            "pid": next(pids),
            "started_at": now - datetime.timedelta(hours=1),
            "last_heartbeat": now,
            "version": "0.1.0",
            "workers": ["alpha", "beta"],
        }
        values.update(fields)
        return Node.objects.create(**values)

    return make


@dataclass
class Completed:
    """How a management command run in a subprocess ended."""

    returncode: int
    stdout: str
    stderr: str


def on_test_database(env: dict[str, str] | None = None) -> dict[str, str]:
    """``env`` and the variable that points a subprocess's ``default`` database at this session's test database.

    The scenario settings modules (``settings_health``, ``settings_control``) read it.
    """
    from django.db import connection

    return {"HEALTH_TEST_DB_NAME": str(connection.settings_dict["NAME"]), **(env or {})}


def python_ok(*args: str, env: dict[str, str], timeout: float = 120) -> str:
    """``python -W error <args>`` from the project root with ``env``; its output. Fails the test unless it exits 0."""
    result = subprocess.run(
        [sys.executable, "-W", "error", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def migrate(env: dict[str, str]) -> None:
    """``manage.py migrate`` of the test project in a subprocess, on the database ``env`` names."""
    python_ok(str(MANAGE), "migrate", "--noinput", "-v", "0", env=env)


def run_command(
    command: str,
    *args: str,
    tmp_path: Path,
    settings: str,
    workers: dict[str, Any],
    env: dict[str, str] | None = None,
    timeout: float = 60,
) -> Completed:
    """``manage.py <command> <args>`` in a subprocess on the test database, as an operator runs it.

    Killed on time-out.
    """
    process = subprocess.Popen(
        [sys.executable, "-W", "error", str(MANAGE), command, *args],
        cwd=ROOT,
        env=runworkers_environment(tmp_path, settings=settings, workers=workers, env=on_test_database(env)),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return Completed(process.returncode, stdout, stderr)


def runworkers_environment(
    tmp_path: Path,
    *,
    settings: str = SETTINGS,
    workers: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
    pythonpath: tuple[Path, ...] = (),
) -> dict[str, str]:
    """The environment of a test-project command (runworkers, checkworkers, check, migrate) in a subprocess.

    ``settings`` is the settings module (a scenario of tests/scenarios), ``workers`` the WORKERS setting
    (``RUNWORKERS_TEST_WORKERS``, as JSON), the SQLite database a file in ``tmp_path``; ``env`` is
    applied last, ``pythonpath`` goes before the project's directories.
    """
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(str(path) for path in (*pythonpath, ROOT, ROOT / "testproject")),
        "DJANGO_SETTINGS_MODULE": settings,
        "RUNWORKERS_TEST_WORKERS": json.dumps(workers if workers is not None else {"WORKERS": []}),
        "SQLITE_PATH": str(tmp_path / "db.sqlite3"),
        "PYTHONUNBUFFERED": "1",
    }
    for inherited in NOT_INHERITED:
        environment.pop(inherited, None)
    return {**environment, **(env or {})}


class RunworkersProcess:
    """One ``manage.py runworkers`` subprocess whose stderr the test reads line by line, with deadlines.

    No thread reads the pipes: :meth:`expect` pumps them with a selector until a line matches or its
    deadline passes, so a test synchronises on what the process logged, never on a sleep.
    """

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.args = args
        self.proc = subprocess.Popen(
            [sys.executable, "-W", "error", str(MANAGE), "runworkers", *args],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group: teardown kills reloaded children too
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.pid = self.proc.pid
        self._streams = {self.proc.stdout.fileno(): "stdout", self.proc.stderr.fileno(): "stderr"}
        self._partial = {"stdout": b"", "stderr": b""}
        self.lines: dict[str, list[str]] = {"stdout": [], "stderr": []}
        self._cursor = 0
        self._selector = selectors.DefaultSelector()
        for fd in self._streams:
            self._selector.register(fd, selectors.EVENT_READ)

    # -- reading ---------------------------------------------------------------------------------

    @property
    def stderr(self) -> str:
        return "\n".join(self.lines["stderr"])

    @property
    def stdout(self) -> str:
        return "\n".join(self.lines["stdout"])

    @property
    def _reading(self) -> bool:
        return bool(self._selector.get_map())

    def _pump(self, timeout: float) -> None:
        for key, _ in self._selector.select(timeout):
            stream = self._streams[key.fd]
            data = os.read(key.fd, 65536)
            if not data:
                self._selector.unregister(key.fd)
                if self._partial[stream]:
                    self.lines[stream].append(self._partial[stream].decode(errors="replace"))
                    self._partial[stream] = b""
                continue
            *complete, self._partial[stream] = (self._partial[stream] + data).split(b"\n")
            self.lines[stream].extend(line.decode(errors="replace") for line in complete)

    def mark(self) -> None:
        """Make later :meth:`expect` calls look only at lines logged from now on."""
        self._pump(0)
        self._cursor = len(self.lines["stderr"])

    def expect(self, pattern: str, timeout: float = 15.0, *, required: bool = True) -> re.Match[str] | None:
        """The first stderr line since the last :meth:`mark` (or the start) that matches ``pattern``.

        Fails the test (or returns None when not ``required``) if none comes within ``timeout``.
        Lines logged by different threads come in any order: only a mark orders expectations.
        """
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        scanned = self._cursor
        while True:
            while scanned < len(self.lines["stderr"]):
                match = regex.search(self.lines["stderr"][scanned])
                scanned += 1
                if match:
                    return match
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._reading:
                if not required:
                    return None
                state = "still running" if self.proc.poll() is None else f"exited with {self.proc.returncode}"
                pytest.fail(
                    f"runworkers {self.args} ({state}) did not log /{pattern}/ within {timeout} s.\n"
                    f"--- stderr ---\n{self.stderr}\n--- stdout ---\n{self.stdout}"
                )
            self._pump(min(remaining, 0.5))

    def wait(self, timeout: float = 15.0) -> int:
        """Read everything until the process exits; its exit status."""
        deadline = time.monotonic() + timeout
        while self._reading or self.proc.poll() is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"runworkers {self.args} did not exit within {timeout} s.\n--- stderr ---\n{self.stderr}")
            if self._reading:
                self._pump(min(remaining, 0.5))
            else:
                try:
                    self.proc.wait(min(remaining, 0.5))
                except subprocess.TimeoutExpired:
                    pass
        return self.proc.returncode

    # -- acting ----------------------------------------------------------------------------------

    def send(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def send_group(self, signum: int) -> None:
        """Signal the whole process group, as a terminal does on Ctrl-C."""
        os.killpg(self.pid, signum)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """Kill the process group (a --reload child included), read what it wrote last, release the pipes."""
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # nothing left in the group
        self.proc.wait(10)
        deadline = time.monotonic() + 5  # what it logged before the kill, for assertions on stderr
        while self._reading and time.monotonic() < deadline:
            self._pump(0.1)
        self._selector.close()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


StartRunworkers = Callable[..., RunworkersProcess]
