"""Singleton workers across real ``runworkers`` replicas, when the database server itself fails or sits behind a pooler.

The replicas and the oracle of tests/fleet/test_fleet_processes.py (tests/fleet/harness.py), on a
PostgreSQL server of the test module's own (:class:`~tests.history.pgserver.PrivateServer`: never the
machine's shared server, which other tests and processes use). A database is migrated once by a real
``manage.py migrate`` (the scenario settings pointed at it) and every test runs on a copy of it.
Faults:

- PostgreSQL restarts (``pg_ctl restart``, fast and immediate): the replicas reconnect, at most one
  runs at a time, and afterwards exactly one leads (the same one with its fence, or a new holder with
  a larger fence, taken within the bound of the restart);
- the database down longer than the TTL: the holder cancels its worker on its own clock before the
  lease could expire, nothing runs once its trust could have ended, and when the server is back one
  replica takes the lease with a larger fence within the bound;
- PgBouncer in transaction mode in front of the server (the replicas reach it only through it): the
  lease statements work there (a holder keeps its lease for several TTLs), a SIGKILLed holder is
  taken over within the bound, a graceful stop hands over at once.

After each: no overlap, fences strictly increasing, the resource's fence never going back. The bound is
``LEASE_TTL + RENEW_INTERVAL + 1`` seconds from the fault, or from the moment the server is back. The
tests print their measurements (``pytest -s``).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import psycopg
import pytest

from tests.fleet.harness import (
    FLEET_WORKERS,
    LEASE_TTL,
    LOST,
    MARGIN,
    RENEW_INTERVAL,
    RESOURCE,
    RESOURCE_TABLE,
    SETTINGS,
    SINGLETON,
    STOP_TIMEOUT,
    TAKEOVER_BOUND,
    TAKEOVER_DEADLINE,
    TOOK,
    Fleet,
    Replica,
    Run,
    report,
)
from tests.history import pgserver
from tests.history.pgserver import PrivateServer
from tests.support import (
    ROOT,
    StartRunworkers,
    free_port,
    listening,
    migrate,
    python_ok,
    runworkers_environment,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not os.environ.get("DATABASE_URL"),
        reason="needs PostgreSQL: set DATABASE_URL (the PostgreSQL pass of `make test` does)",
    ),
]

#: The migrated database every test's database is a copy of.
TEMPLATE = "fleet_template"
ANSWERS_AGAIN = r"the lease database answers again"
#: Any failed lease statement (take, renew, release).
FAILED = r"could not \w+ the lease of"


def test_the_settings_give_a_holder_time_to_stop_before_its_lease_expires() -> None:
    assert LEASE_TTL > RENEW_INTERVAL + MARGIN + STOP_TIMEOUT


# -- the servers ------------------------------------------------------------------------------------


class FleetServer(PrivateServer):
    """A :class:`PrivateServer` that keeps every commit it acknowledged, and can be restarted in one ``pg_ctl restart``.

    PrivateServer runs with ``synchronous_commit=off``: an immediate shutdown loses the commits of the
    last few hundred milliseconds. The lease statements commit synchronously whatever the server's
    setting (see test_an_acknowledged_lease_survives_a_crash_of_a_server_that_commits_asynchronously),
    but the scenario worker's own writes, which the oracle compares with the stored row, do not: this
    server keeps them as a production server would. ``fsync`` stays off (a process crash is not an OS
    crash: the kernel keeps what was written).
    """

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.root} "
            "-c fsync=off -c full_page_writes=off -c synchronous_commit=on"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "60", "start")

    def restart(self, mode: str) -> None:
        """``pg_ctl restart -m <mode>`` (the options of the last start), waiting until it accepts connections."""
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-m", mode, "-w", "-t", "60", "restart")

    def connect(self, database: str) -> psycopg.Connection:
        return psycopg.connect(self.url(database), autocommit=True, connect_timeout=5)


def pgbouncer_binary() -> str | None:
    """PgBouncer's executable (Debian installs it in /usr/sbin, which may not be on the PATH), or None."""
    return shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin")


needs_pgbouncer = pytest.mark.skipif(
    pgbouncer_binary() is None, reason="needs PgBouncer (Debian package: apt-get install pgbouncer)"
)


class PgBouncer:
    """PgBouncer in transaction mode in front of the server on ``127.0.0.1:<target>``, on a free port.

    PgBouncer refuses to run as root: as root (CI) it runs as the ``postgres`` user. Its
    configuration is in a directory of its own that user can read; it logs to ``log``.
    """

    def __init__(self, binary: str, target: int) -> None:
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="django-workers-pgbouncer-"))
        self.root.chmod(0o755)
        self.log = self.root / "pgbouncer.log"
        (self.root / "userlist.txt").write_text('"postgres" ""\n')
        ini = self.root / "pgbouncer.ini"
        ini.write_text(
            "[databases]\n"
            f"* = host=127.0.0.1 port={target}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            "auth_type = trust\n"
            f"auth_file = {self.root / 'userlist.txt'}\n"
            "pool_mode = transaction\n"
            "default_pool_size = 10\n"
            "max_client_conn = 100\n"
            "ignore_startup_parameters = extra_float_digits\n"
        )
        as_postgres = {"user": "postgres", "group": "postgres", "extra_groups": []} if os.geteuid() == 0 else {}
        try:
            with self.log.open("ab") as log:
                self.process = subprocess.Popen(
                    [binary, str(ini)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    **as_postgres,
                )
        except BaseException:
            shutil.rmtree(self.root, ignore_errors=True)
            raise

    def wait_ready(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not listening(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"PgBouncer did not start (exit status {self.process.poll()}):\n{self.log_text()}")
            time.sleep(0.05)

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        shutil.rmtree(self.root, ignore_errors=True)


def replica_environment(server: FleetServer, database: str) -> dict[str, str]:
    """What points a replica (or ``migrate``) at ``database`` on ``server`` with the scenario settings."""
    return {"DATABASE_URL": server.url(database), "FLEET_DB_NAME": database}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FleetServer]:
    """The module's PostgreSQL server, with ``TEMPLATE`` migrated by ``manage.py migrate`` and the shared resource."""
    reason = pgserver.unavailable()
    if reason is not None:
        pytest.skip(reason)
    instance = FleetServer()
    try:
        instance.start()
        instance.create_database(TEMPLATE)
        env = runworkers_environment(
            tmp_path_factory.mktemp("migrate"),
            settings=SETTINGS,
            workers=FLEET_WORKERS,
            env=replica_environment(instance, TEMPLATE),
        )
        migrate(env)
        with instance.connect(TEMPLATE) as connection:
            for statement in RESOURCE_TABLE:
                connection.execute(statement)
        yield instance
    finally:
        instance.destroy()


@pytest.fixture
def database(server: FleetServer) -> Iterator[str]:
    """A database of one test: a copy of the migrated ``TEMPLATE`` (no lease yet, the resource at fence 0)."""
    if not server.ready():  # an earlier test failed while the server was down
        server.start()
    name = f"fleet_{uuid.uuid4().hex[:12]}"
    with server.connect("postgres") as connection:
        connection.execute(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE}"')
    try:
        yield name
    finally:
        with contextlib.suppress(psycopg.Error), server.connect("postgres") as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def replicas_of(start: StartRunworkers, tmp_path: Path, target: int, env: dict[str, str]) -> Iterator[Fleet]:
    """A fleet whose replicas reach ``127.0.0.1:<target>`` (each through a proxy of its own); all killed at the end."""
    directory = tmp_path / "oracle"
    directory.mkdir()
    fleet = Fleet(start, directory, FLEET_WORKERS, ("127.0.0.1", target), env=env)
    try:
        yield fleet
    finally:
        fleet.close()


@pytest.fixture
def fleet(start: StartRunworkers, tmp_path: Path, server: FleetServer, database: str) -> Iterator[Fleet]:
    """Replicas reaching the server directly."""
    with replicas_of(start, tmp_path, server.port, replica_environment(server, database)) as replicas:
        yield replicas


@pytest.fixture
def bouncer(server: FleetServer, database: str) -> Iterator[PgBouncer]:
    """PgBouncer in transaction mode in front of the server (for tests marked ``needs_pgbouncer``)."""
    binary = pgbouncer_binary()
    assert binary is not None, "mark the test needs_pgbouncer"
    pooler = PgBouncer(binary, server.port)
    try:
        pooler.wait_ready()
        yield pooler
    finally:
        pooler.close()


@pytest.fixture
def bounced_fleet(
    start: StartRunworkers, tmp_path: Path, server: FleetServer, database: str, bouncer: PgBouncer
) -> Iterator[Fleet]:
    """Replicas reaching the server only through PgBouncer."""
    with replicas_of(start, tmp_path, bouncer.port, replica_environment(server, database)) as replicas:
        yield replicas


# -- reading the database ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LeaseRow:
    """The singleton's lease row, read on the server directly."""

    holder: uuid.UUID | None
    fence: int
    expires_at: datetime
    #: The database's clock when it was read.
    now: datetime
    #: The monotonic clock just before it was read.
    read_at: float

    def expires(self) -> float:
        """When it expires on the monotonic clock (at the earliest: the read came after ``read_at``)."""
        return self.read_at + (self.expires_at - self.now).total_seconds()


def lease(server: FleetServer, database: str) -> LeaseRow:
    read_at = time.monotonic()
    with server.connect(database) as connection:
        row = connection.execute(
            "SELECT holder, fence, expires_at, statement_timestamp() FROM django_workers_lease WHERE name = %s",
            [SINGLETON],
        ).fetchone()
    assert row is not None, "nobody ever took the lease"
    return LeaseRow(*row, read_at=read_at)


def resource(server: FleetServer, database: str) -> tuple[int, int]:
    """The shared row's counter and fence, as stored."""
    with server.connect(database) as connection:
        row = connection.execute(RESOURCE).fetchone()
    assert row is not None
    return row[0], row[1]


def mark_all(fleet: Fleet) -> None:
    for replica in fleet.replicas:
        replica.process.mark()


def logged(replica: Replica, pattern: str) -> re.Match[str] | None:
    """The first line of everything ``replica`` logged so far (marks aside) that matches ``pattern``.

    Read before the replica is killed: a kill drops what was not read yet.
    """
    replica.process.mark()  # reads what is there
    return re.search(pattern, replica.process.stderr, re.MULTILINE)


def assert_never_failed(replica: Replica) -> None:
    """``replica`` never lost a lease, never failed a lease statement, and logged no traceback."""
    for pattern in (LOST, FAILED, "Traceback"):
        assert logged(replica, pattern) is None, f"replica {replica.pid} logged /{pattern}/:\n{replica.process.stderr}"


# -- the tests ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_a_restart_of_postgresql(fleet: Fleet, server: FleetServer, database: str, mode: str) -> None:
    """``pg_ctl restart``: every replica reconnects; the holder keeps its lease or loses it cleanly; one leads after."""
    holder, run = fleet.lead()

    mark_all(fleet)
    fault = time.monotonic()
    server.restart(mode)
    back = time.monotonic()
    for replica in fleet.replicas:  # every keeper's connection died with the server: each one reconnects
        replica.process.expect(ANSWERS_AGAIN, TAKEOVER_DEADLINE)
    # Watched until a lease that was not renewed in time would have expired and been taken over.
    fleet.wait(
        lambda o: any(w.outcome == "applied" and w.began > back + TAKEOVER_BOUND for w in o.writes),
        "the singleton writes again once any takeover is due",
        TAKEOVER_DEADLINE,
    )

    # Exactly one leads: one run alive, the lease row's, renewed, and its replica took that fence.
    row = lease(server, database)
    alive = [r for r in fleet.oracle().runs if r.end is None]
    assert len(alive) == 1, f"{len(alive)} runs alive after the restart:\n{fleet.oracle().describe()}"
    (leader,) = alive
    assert row.holder is not None and row.fence == leader.fence and row.expires_at > row.now
    assert logged(fleet.replica(leader.pid), rf"took the lease of {SINGLETON} with fence {leader.fence}:")
    lost = logged(holder, LOST)

    oracle = fleet.kill_all()
    oracle.assert_safe(resource(server, database))
    later = oracle.first_run_after(fault)
    if later is None:
        assert leader == run, "no new run: the holder kept its lease and its run"
        outcome = f"kept the lease (fence {run.fence})"
    else:
        assert later.fence > run.fence
        assert leader.fence >= later.fence
        outcome = f"pid {later.pid} took it with fence {later.fence} {later.start - back:.3f}s after the restart"
        assert later.start - back <= TAKEOVER_BOUND
    report(
        f"restart -m {mode}",
        restart=f"{back - fault:.3f}s",
        holder=outcome,
        holder_lost=lost.group(1) if lost else "no",
        failed_writes=sum(w.outcome == "error" for w in oracle.writes),
    )


def test_the_database_down_longer_than_the_lease(fleet: Fleet, server: FleetServer, database: str) -> None:
    """``pg_ctl stop`` for longer than the TTL, then start: the holder stands by on its own clock before its
    lease could expire, nothing runs past its trust while the server is down, and one replica takes the
    lease (a larger fence) within the bound of the server's return."""
    holder, run = fleet.lead()

    before = lease(server, database)  # renewals only push the expiry later: it expires after this
    mark_all(fleet)
    fault = time.monotonic()
    server.stop("fast")
    down = time.monotonic()  # the holder's last successful renewal began before this
    reason = holder.process.expect(LOST, TAKEOVER_DEADLINE).group(1)  # type: ignore[union-attr]
    fleet.wait(lambda o: any(r.pid == holder.pid and r.end is not None for r in o.runs), "the holder's run returns")
    time.sleep(max(0.0, down + LEASE_TTL + 1.0 - time.monotonic()))  # down longer than the TTL
    restarting = time.monotonic()
    server.start()
    back = time.monotonic()
    successor = fleet.wait_takeover(fault, None, TAKEOVER_DEADLINE)
    fleet.replica(successor.pid).process.expect(rf"took the lease of {SINGLETON} with fence {successor.fence}:")
    for replica in fleet.replicas:
        replica.process.expect(ANSWERS_AGAIN, TAKEOVER_DEADLINE)

    oracle = fleet.kill_all()
    oracle.assert_safe(resource(server, database))
    assert reason.startswith("not renewed within"), reason
    (stopped,) = [r for r in oracle.runs if r.pid == holder.pid and r.fence == run.fence]
    assert stopped.end is not None and not stopped.killed
    assert stopped.end < before.expires(), "the holder's worker returned before its lease could expire"
    # The holder trusted its lease at most until (its last renewal, before `down`) + TTL - MARGIN.
    trust_ended = down + LEASE_TTL - MARGIN
    active = [r for r in oracle.runs if r.start < restarting and (r.end is None or r.end > trust_ended)]
    assert not active, f"runs alive while the server was down, past the trust deadline:\n{oracle.describe()}"
    first = oracle.first_run_after(fault)
    assert first is not None and (first.pid, first.start) == (successor.pid, successor.start)
    assert successor.fence > run.fence
    # From the start command (the server accepts connections a little before pg_ctl sees it): an upper measure.
    takeover = successor.start - restarting
    report(
        "database down",
        down=f"{restarting - fault:.3f}s",
        holder_stopped_after=f"{stopped.end - fault:.3f}s",
        before_expiry_by=f"{before.expires() - stopped.end:.3f}s",
        reason=reason,
        takeover_after_start=f"{takeover:.3f}s",
        takeover_after_ready=f"{successor.start - back:.3f}s",
        server_start=f"{back - restarting:.3f}s",
        bound=f"{TAKEOVER_BOUND:g}s",
        fences=(run.fence, successor.fence),
        same_replica=successor.pid == holder.pid,
    )
    assert takeover <= TAKEOVER_BOUND


@needs_pgbouncer
def test_through_pgbouncer_in_transaction_mode(
    bounced_fleet: Fleet, bouncer: PgBouncer, server: FleetServer, database: str
) -> None:
    """The replicas reach PostgreSQL only through PgBouncer (transaction pooling): the lease statements work,
    a SIGKILLed holder is taken over within the bound, and a graceful stop hands the lease over at once."""
    fleet = bounced_fleet
    holder, run = fleet.lead()

    # The holder keeps its lease for several TTLs: its renewals (and the followers' campaigns) work.
    first = lease(server, database)
    held = 3 * LEASE_TTL
    fleet.wait(
        lambda o: any(w.pid == holder.pid and w.outcome == "applied" and w.began > run.start + held for w in o.writes),
        f"the holder writes {held:g} seconds after it took the lease",
        held + 10,
    )
    renewed = lease(server, database)
    assert (renewed.holder, renewed.fence) == (first.holder, run.fence)
    assert renewed.expires_at > first.expires_at, "renewed"
    assert fleet.oracle().runs == (Run(run.pid, run.fence, run.start, None),), fleet.oracle().describe()
    assert f"login attempt: db={database} user=postgres" in bouncer.log_text(), "the replicas came through PgBouncer"
    for replica in fleet.replicas:
        assert_never_failed(replica)

    # SIGKILL of the holder: a follower takes over once the lease expired.
    killed = fleet.kill(holder)
    successor = fleet.wait_takeover(killed, holder.pid, TAKEOVER_DEADLINE)
    second = fleet.replica(successor.pid)
    second.process.expect(TOOK)

    # Graceful stop of the new holder: it releases the lease, the last replica takes it at once.
    stopping = time.monotonic()
    second.process.send(signal.SIGTERM)
    third = fleet.wait_takeover(stopping, second.pid, TAKEOVER_DEADLINE)
    assert second.process.wait() == 0
    second.process.expect(rf"released the lease of {SINGLETON} \(fence {successor.fence}\)")

    survivors = [r for r in fleet.replicas if r.pid != holder.pid]  # the killed one was read above
    for replica in survivors:
        assert_never_failed(replica)

    oracle = fleet.kill_all()
    oracle.assert_safe(resource(server, database))
    assert (successor.fence, third.fence) == (run.fence + 1, run.fence + 2)
    takeover, handover = successor.start - killed, third.start - stopping
    report(
        "PgBouncer",
        held=f"{held:g}s",
        sigkill_takeover=f"{takeover:.3f}s",
        sigterm_takeover=f"{handover:.3f}s",
        bound=f"{TAKEOVER_BOUND:g}s",
        fences=(run.fence, successor.fence, third.fence),
    )
    assert takeover <= TAKEOVER_BOUND
    assert handover < LEASE_TTL, "released, not left to expire"


class LazyServer(PrivateServer):
    """A server that commits asynchronously and flushes its WAL only every 10 s: a crash loses what it acknowledged."""

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.root} "
            "-c fsync=off -c full_page_writes=off -c synchronous_commit=off -c wal_writer_delay=10000"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "60", "start")


def test_an_acknowledged_lease_survives_a_crash_of_a_server_that_commits_asynchronously(tmp_path: Path) -> None:
    """An immediate shutdown of a server with ``synchronous_commit=off`` loses its last commits, but not a lease.

    Without ``set_config('synchronous_commit', 'on', true)`` in the lease statements, the acquisition
    just made was lost in every round, and the next holder got the same fence 1 again.
    """
    reason = pgserver.unavailable()
    if reason is not None:
        pytest.skip(reason)
    server = LazyServer()
    try:
        server.start()
        server.create_database("durable")
        env = runworkers_environment(
            tmp_path,
            settings=SETTINGS,
            workers=FLEET_WORKERS,
            env={"DATABASE_URL": server.url("durable"), "FLEET_DB_NAME": "durable"},
        )

        def run(*args: str) -> str:
            return python_ok(*args, env=env).strip()

        migrate(env)
        probe = str(ROOT / "tests" / "scenarios" / "lease_probe.py")
        first, second = str(uuid.uuid4()), str(uuid.uuid4())
        for name in ("relay-1", "relay-2", "relay-3"):
            assert run(probe, name, first, "60") == "1"
            server.stop("immediate")
            server.start()
            assert run(probe, name, second, "60") == "none", "the first holder's acquisition survived the crash"
    finally:
        server.destroy()
