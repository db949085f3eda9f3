"""A ``manage.py runworkers`` subprocess whose stderr the tests read line by line, with deadlines.

No thread reads the pipes: :meth:`RunworkersProcess.expect` pumps them with a selector until a
line matches or its deadline passes, so a test synchronises on what the process logged, never
on a sleep.
"""

from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MANAGE = ROOT / "testproject" / "manage.py"
SETTINGS = "tests.runner.scenario_settings"
#: Dotted path prefix of the scenario workers.
W = "tests.runner.scenario_workers"


class RunworkersProcess:
    """One ``runworkers`` subprocess, its output read without threads (a selector, with deadlines)."""

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
        """Kill the process group (a --reload child included) and release the pipes."""
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # nothing left in the group
        self.proc.wait(10)
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


def wait_until(predicate: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll ``predicate`` until it is truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not met within {timeout} seconds")
        time.sleep(0.05)


StartRunworkers = Callable[..., RunworkersProcess]
