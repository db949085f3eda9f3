"""The harness of the fleet tests: replicas of ``runworkers`` behind TCP proxies, and the oracle.

- :class:`DatabaseProxy`: a small threaded TCP proxy from a local port to the PostgreSQL server,
  one per replica; :meth:`~DatabaseProxy.cut` partitions its replica from the database (every
  connection closed, new ones closed as soon as they are accepted), :meth:`~DatabaseProxy.heal`
  ends the partition.
- :class:`Oracle`: what the replicas' singleton worker recorded (tests/scenarios/workers_fleet.py):
  every run as (pid, fence, start, end) and every write, on the system-wide monotonic clock; the
  run of a replica the test SIGKILLed ends when the test killed it. :meth:`~Oracle.overlaps` are
  the pairs of runs of different processes whose intervals intersect.
- :class:`Fleet`: starts the replicas (the ``start`` fixture), applies faults, waits on the oracle
  with deadlines, and kills every replica at the end, noting when.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import select
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support import RunworkersProcess, StartRunworkers, on_test_database

#: The settings of the replicas: the test database, reached through the replica's proxy.
SETTINGS = "tests.scenarios.settings_fleet"
#: The same, with the holder's trust window disabled (the negative control).
UNSAFE_SETTINGS = "tests.scenarios.settings_fleet_unsafe"
#: Dotted path prefix of the worker of the replicas.
W = "tests.scenarios.workers_fleet"
#: The name of the singleton worker.
SINGLETON = "fleet-relay"

#: The lease timing of the replicas: short, so that expiry happens within a test.
LEASE_TTL = 3.0
RENEW_INTERVAL = 0.5
MARGIN = 0.3
STOP_TIMEOUT = 1.0
#: The WORKERS setting of every replica: short leases, and the singleton.
FLEET_WORKERS = {
    "STOP_TIMEOUT": STOP_TIMEOUT,
    "MAX_EXECUTIONS_ATTEMPTS": 0,
    "RESTART_BACKOFF": {"INITIAL": 0.1, "MAXIMUM": 0.1},
    "FLEET": {"LEASE_TTL": LEASE_TTL, "RENEW_INTERVAL": RENEW_INTERVAL, "MARGIN": MARGIN, "DATABASE": "default"},
    "WORKERS": [{"CLASS": f"{W}.FencedWriter", "SINGLETON": True}],
}
#: A lease that was not released is taken over within this many seconds of the fault (or of the server's return).
TAKEOVER_BOUND = LEASE_TTL + RENEW_INTERVAL + 1.0
#: How long a test waits for a takeover before failing (the bound itself is asserted on the measure).
TAKEOVER_DEADLINE = TAKEOVER_BOUND + 10.0
#: How many replicas a test starts.
REPLICAS = 3
#: What a replica logs when it takes the lease, and when it loses it.
TOOK = rf"took the lease of {SINGLETON} with fence (\d+): it runs on this node"
LOST = rf"lost the lease of {SINGLETON} \((.+)\): its worker is cancelled"
#: The resource the singleton writes under its fence (row 1 of ``fleet_resource``, at fence 0),
#: and how a test reads it back (counter, fence).
RESOURCE_TABLE = (
    "CREATE TABLE fleet_resource (id integer PRIMARY KEY, value bigint NOT NULL, fence bigint NOT NULL, "
    "writer integer)",
    "INSERT INTO fleet_resource VALUES (1, 0, 0, NULL)",
)
RESOURCE = "SELECT value, fence FROM fleet_resource WHERE id = 1"


def report(test: str, **measures: object) -> None:
    """Print a test's measures (``-s`` shows them; the closing notes quote them)."""
    print(f"\n[fleet] {test}: " + ", ".join(f"{name}={value}" for name, value in measures.items()))


# -- the database proxy -----------------------------------------------------------------------------


class DatabaseProxy:
    """Forwards connections from ``127.0.0.1:<port>`` to ``target`` until :meth:`cut`; :meth:`close` at the end."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)  # the acceptor looks at _closed this often
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._cut = False
        self._closed = threading.Event()
        self._links: set[tuple[socket.socket, socket.socket]] = set()
        self._threads: list[threading.Thread] = []
        self._start(self._accept, f"db-proxy:{self.port}")

    def _start(self, target: Callable[..., None], name: str, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            with self._lock:
                refused = self._cut or self._closed.is_set()
            if refused:  # partitioned: the connection ends at once, as a reset would
                client.close()
                continue
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            link = (client, server)
            with self._lock:
                self._links.add(link)
            self._start(self._forward, f"db-proxy:{self.port}:link", link)

    def _forward(self, link: tuple[socket.socket, socket.socket]) -> None:
        client, server = link
        peer = {client: server, server: client}
        try:
            while not self._closed.is_set():
                readable, _, _ = select.select([client, server], [], [], 0.05)
                for source in readable:
                    data = source.recv(65536)
                    if not data:
                        return
                    peer[source].sendall(data)
        except (OSError, ValueError):  # cut: the sockets were shut down (or closed) under us
            return
        finally:
            with self._lock:
                self._links.discard(link)
            for sock in link:
                sock.close()

    def cut(self) -> None:
        """Partition: close every connection, and every new one as soon as it is accepted."""
        with self._lock:
            self._cut = True
            links = list(self._links)
        for link in links:
            for sock in link:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def heal(self) -> None:
        """End the partition: new connections reach the database again."""
        with self._lock:
            self._cut = False

    def close(self) -> None:
        self._closed.set()
        self.cut()
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(5)
        self._listener.close()


# -- the oracle -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """One attempt of the singleton on one replica: [start, end] on the monotonic clock."""

    pid: int
    fence: int
    start: float
    #: When it returned, or when the test killed its process; None while it runs.
    end: float | None
    #: True when the process was killed before the worker returned (the end is the kill).
    killed: bool = False

    def overlap(self, other: Run) -> float:
        """Seconds both ran (0 when they did not run at the same time, or are of one process)."""
        if self.pid == other.pid:
            return 0.0
        end = min(math.inf if self.end is None else self.end, math.inf if other.end is None else other.end)
        return max(0.0, end - max(self.start, other.start))


@dataclass(frozen=True)
class Write:
    """One fenced write: begun at ``began``, answered at ``answered``."""

    pid: int
    fence: int
    began: float
    answered: float
    #: ``applied``, ``rejected`` (the fence guard) or ``error`` (the database was not reached).
    outcome: str
    #: The resource's counter after an applied write (a total order of the applied writes), else -1.
    value: int


@dataclass(frozen=True)
class Overlap:
    first: Run
    second: Run
    seconds: float


@dataclass(frozen=True)
class Oracle:
    """Every run and write the replicas recorded, runs in start order."""

    runs: tuple[Run, ...]
    writes: tuple[Write, ...]

    @classmethod
    def read(cls, directory: Path, killed: dict[int, float]) -> Oracle:
        """The oracle files of ``directory``; ``killed``: the pids the test SIGKILLed, and when."""
        runs: list[Run] = []
        writes: list[Write] = []
        for path in sorted(directory.glob("*.oracle")):
            text = path.read_text()
            lines = text.split("\n")[:-1]  # a last line without its newline is not whole yet
            opened: tuple[int, int, float] | None = None
            for line in lines:
                kind, *values = line.split()
                if kind == "start":
                    assert opened is None, f"{path.name}: a run started before the previous one ended"
                    opened = (int(values[0]), int(values[1]), float(values[2]))
                elif kind == "end":
                    assert opened is not None, f"{path.name}: a run ended that had not started"
                    runs.append(Run(opened[0], opened[1], opened[2], float(values[2])))
                    opened = None
                elif kind == "write":
                    writer, fence, began, answered, outcome, value = values
                    writes.append(Write(int(writer), int(fence), float(began), float(answered), outcome, int(value)))
            if opened is not None:
                pid = opened[0]
                runs.append(Run(*opened, end=killed.get(pid), killed=pid in killed))
        runs.sort(key=lambda run: run.start)
        writes.sort(key=lambda write: write.began)
        return cls(tuple(runs), tuple(writes))

    def overlaps(self) -> list[Overlap]:
        """Every pair of runs of different processes that ran at the same time."""
        found = []
        for first, second in itertools.combinations(self.runs, 2):
            seconds = first.overlap(second)
            if seconds > 0:
                found.append(Overlap(first, second, seconds))
        return found

    def applied(self) -> list[Write]:
        """The applied writes, in the order the database applied them."""
        return sorted((w for w in self.writes if w.outcome == "applied"), key=lambda write: write.value)

    def first_run_after(self, moment: float, *, other_than: int | None = None) -> Run | None:
        return next((r for r in self.runs if r.start > moment and r.pid != other_than), None)

    def describe(self) -> str:
        lines = [
            f"  run pid={run.pid} fence={run.fence} start={run.start:.3f} end="
            + ("running" if run.end is None else f"{run.end:.3f}" + (" (killed)" if run.killed else ""))
            for run in self.runs
        ]
        counts: dict[tuple[int, int, str], int] = {}
        for write in self.writes:
            key = (write.pid, write.fence, write.outcome)
            counts[key] = counts.get(key, 0) + 1
        lines += [f"  writes pid={pid} fence={fence} {outcome}: {n}" for (pid, fence, outcome), n in counts.items()]
        return "\n".join(lines)

    def assert_fenced(self) -> None:
        """Fences strictly increase in run start order, and the resource's fence never goes back."""
        fences = [run.fence for run in self.runs]
        assert all(a < b for a, b in itertools.pairwise(fences)), f"fences not strictly increasing:\n{self.describe()}"
        applied = self.applied()
        values = [write.value for write in applied]
        assert len(set(values)) == len(values), f"two applied writes with one counter value: {applied}"
        back = [(a, b) for a, b in itertools.pairwise(applied) if b.fence < a.fence]
        assert not back, f"the resource's fence went back: {back[:3]}\n{self.describe()}"
        for write in applied:
            run = self._run_of(write)
            assert run is not None and run.fence == write.fence, f"an applied write outside a run: {write}"

    def assert_stored(self, value: int, fence: int) -> None:
        """The stored row (counter ``value``, ``fence``) is what the applied writes recorded made it.

        A SIGKILL can land between a write's commit and its record: each killed run may have
        applied one write the oracle does not know.
        """
        recorded = {write.value: write for write in self.applied()}
        killed = [run for run in self.runs if run.killed]
        missing = set(range(1, value + 1)) - recorded.keys()
        assert max(recorded, default=0) <= value, f"the oracle recorded writes the row does not count ({value})"
        assert len(missing) <= len(killed), f"applied writes nobody recorded: {sorted(missing)}\n{self.describe()}"
        last = recorded.get(value)
        if last is not None:
            assert fence == last.fence, f"the row's fence is {fence}, the last applied write's {last.fence}"
        else:
            assert fence in {run.fence for run in killed}, f"the row's fence {fence} is no killed run's"

    def assert_no_overlap(self) -> None:
        overlaps = self.overlaps()
        assert not overlaps, f"{len(overlaps)} overlapping runs: {overlaps}\n{self.describe()}"

    def assert_safe(self, stored: tuple[int, int]) -> None:
        """Zero overlap, fences strictly increasing and never going back, the ``stored`` row what the writes made it.

        ``stored``: the row's counter and fence, as read back.
        """
        self.assert_no_overlap()
        self.assert_fenced()
        self.assert_stored(*stored)

    def _run_of(self, write: Write) -> Run | None:
        return next(
            (
                r
                for r in self.runs
                if r.pid == write.pid and r.start <= write.began and (r.end is None or write.answered <= r.end)
            ),
            None,
        )


# -- the fleet ------------------------------------------------------------------------------------


@dataclass
class Replica:
    process: RunworkersProcess
    proxy: DatabaseProxy

    @property
    def pid(self) -> int:
        return self.process.pid


@dataclass
class Fleet:
    """Replicas of one test, all running the singleton ``fleet-relay`` on the same lease."""

    start_process: StartRunworkers
    directory: Path
    workers: dict[str, Any]
    target: tuple[str, int]
    replicas: list[Replica] = field(default_factory=list)
    #: The pids the test SIGKILLed, and when (monotonic, just after the process was reaped).
    killed: dict[int, float] = field(default_factory=dict)
    #: More environment of every replica, applied last (a database of the test's own server, say).
    env: dict[str, str] = field(default_factory=dict)

    def launch(self, count: int, settings: str = SETTINGS) -> list[Replica]:
        """Start ``count`` replicas, each behind a proxy of its own."""
        for _ in range(count):
            proxy = DatabaseProxy(self.target)
            env = on_test_database(
                {
                    "FLEET_ORACLE_DIR": str(self.directory),
                    "FLEET_DB_HOST": "127.0.0.1",
                    "FLEET_DB_PORT": str(proxy.port),
                    **self.env,
                }
            )
            try:
                process = self.start_process(workers=self.workers, settings=settings, env=env)
            except BaseException:
                proxy.close()
                raise
            self.replicas.append(Replica(process, proxy))
        return list(self.replicas)

    def lead(self, settings: str = SETTINGS) -> tuple[Replica, Run]:
        """Start :data:`REPLICAS` replicas; the one that took the lease, and its run, once every replica runs."""
        self.launch(REPLICAS, settings)
        self.ready()
        run = self.wait_leader()
        holder = self.replica(run.pid)
        holder.process.expect(TOOK)
        return holder, run

    def replica(self, pid: int) -> Replica:
        return next(replica for replica in self.replicas if replica.pid == pid)

    def oracle(self) -> Oracle:
        return Oracle.read(self.directory, self.killed)

    def wait(self, found: Callable[[Oracle], Any], what: str, timeout: float = 20.0) -> Any:
        """Poll the oracle until ``found(oracle)`` is truthy, which is returned; fail after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            oracle = self.oracle()
            result = found(oracle)
            if result:
                return result
            if time.monotonic() > deadline:
                pytest.fail(f"{what}: not within {timeout} seconds\n{oracle.describe()}\n{self._logs()}")
            time.sleep(0.01)

    def wait_leader(self, timeout: float = 30.0) -> Run:
        """The first run that has made an applied write (the replicas start, one takes the lease)."""
        run: Run = self.wait(
            lambda o: next((r for r in o.runs if r.end is None and _applied_in(o, r)), None),
            "a replica runs the singleton and writes",
            timeout,
        )
        return run

    def wait_takeover(self, fault: float, holder: int | None, timeout: float) -> Run:
        """The first run of another replica begun after ``fault``, once it made an applied write.

        ``holder`` None: the first run of any replica (the holder itself may take a lease again).
        """
        run: Run = self.wait(
            lambda o: (run := o.first_run_after(fault, other_than=holder)) is not None and _applied_in(o, run) and run,
            "a replica takes the lease" if holder is None else f"another replica than {holder} takes over",
            timeout,
        )
        return run

    def ready(self, timeout: float = 30.0) -> None:
        """Every replica runs (its lease keeper started before its pool, and campaigns from then on)."""
        for replica in self.replicas:
            replica.process.expect(r"runworkers is running", timeout)

    def kill(self, replica: Replica) -> float:
        """SIGKILL ``replica`` and reap it: the monotonic time its run (if any) ended."""
        replica.process.kill()
        moment = time.monotonic()
        self.killed[replica.pid] = moment
        return moment

    def kill_all(self) -> Oracle:
        """SIGKILL every replica still running, then the oracle, every run ended."""
        for replica in self.replicas:
            if replica.pid not in self.killed and replica.process.alive():
                self.kill(replica)
            else:
                replica.process.kill()  # reaped already: releases its pipes
        return self.oracle()

    def close(self) -> None:
        for replica in self.replicas:
            replica.process.kill()
        for replica in self.replicas:
            replica.proxy.close()

    def _logs(self) -> str:
        return "\n".join(f"--- replica {r.pid} stderr ---\n{r.process.stderr}" for r in self.replicas)


def _applied_in(oracle: Oracle, run: Run) -> bool:
    return any(
        w.pid == run.pid and w.fence == run.fence and w.outcome == "applied" and w.began >= run.start
        for w in oracle.writes
    )


@dataclass
class Freeze:
    """When a process was stopped (SIGSTOP) and when it was let go on (just before its SIGCONT)."""

    stopped: float
    resumed: float | None = None


@contextlib.contextmanager
def frozen(process: RunworkersProcess) -> Iterator[Freeze]:
    """SIGSTOP ``process`` for the block, SIGCONT at its end.

    ``resumed`` is read before the SIGCONT: whatever the process did from that moment on, it did
    after it was let go on, even if this process is descheduled before it reads the clock again.
    """
    os.kill(process.pid, signal.SIGSTOP)
    freeze = Freeze(time.monotonic())
    try:
        yield freeze
    finally:
        freeze.resumed = time.monotonic()
        os.kill(process.pid, signal.SIGCONT)
