"""A PostgreSQL server of the test's own, to stop, restart and kill connections of at will.

Tests that take a database server down never touch the machine's shared server (other tests and
other processes use it): :class:`PrivateServer` runs one from Debian's binaries
(``/usr/lib/postgresql/<version>/bin``) in a temporary directory, on a free port. PostgreSQL
refuses to run as root; as root (CI), every server command runs as the ``postgres`` user through
``runuser``, in a directory that user owns.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

from tests.support import free_port

#: Where Debian and Ubuntu install the server binaries (one directory per major version).
BINARIES = Path("/usr/lib/postgresql")


def server_binaries() -> Path | None:
    """The ``bin`` directory of the newest PostgreSQL server installed, or None."""
    found = []
    for candidate in BINARIES.glob("*/bin"):
        if (candidate / "initdb").is_file() and (candidate / "pg_ctl").is_file():
            with contextlib.suppress(ValueError):
                found.append((int(candidate.parent.name), candidate))
    return max(found)[1] if found else None


def unavailable() -> str | None:
    """Why a private server cannot run here (a reason to skip), or None."""
    if server_binaries() is None:
        return f"needs PostgreSQL's server binaries (initdb, pg_ctl) under {BINARIES}/<version>/bin"
    if os.geteuid() == 0 and (shutil.which("runuser") is None or not _has_user("postgres")):
        return "running as root: needs the postgres user and runuser to start a server (postgres refuses root)"
    return None


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


class PrivateServer:
    """A PostgreSQL server in a temporary directory, on a free port of 127.0.0.1 (trust authentication)."""

    def __init__(self) -> None:
        binaries = server_binaries()
        assert binaries is not None, unavailable()
        self.binaries = binaries
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="django-workers-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync")

    def _run(self, program: str, *args: str, timeout: float = 120) -> None:
        command = [str(self.binaries / program), *args]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        if result.returncode != 0:
            raise RuntimeError(
                f"{program} failed ({result.returncode}): {result.stdout}{result.stderr}\n"
                f"--- server log ---\n{self.server_log()}"
            )

    def server_log(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.root} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: sessions are terminated, as in a restart by an operator)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def ready(self) -> bool:
        """Whether the server accepts a connection now."""
        try:
            psycopg.connect(self.url("postgres"), connect_timeout=2).close()
        except psycopg.Error:
            return False
        return True

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready():
            if time.monotonic() > deadline:
                raise RuntimeError(f"the private PostgreSQL server is not ready\n{self.server_log()}")
            time.sleep(0.1)

    def url(self, database: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def settings(self, database: str) -> dict[str, object]:
        """A ``DATABASES`` entry for ``database`` on this server."""
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": database,
            "USER": "postgres",
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "OPTIONS": {"connect_timeout": 2},
            "CONN_MAX_AGE": 0,
            "CONN_HEALTH_CHECKS": False,
            "AUTOCOMMIT": True,
            "ATOMIC_REQUESTS": False,
            "TIME_ZONE": None,
            "PASSWORD": "",
            "TEST": {},
        }

    def create_database(self, name: str) -> None:
        with psycopg.connect(self.url("postgres"), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')

    def terminate_connections(self, database: str) -> int:
        """``pg_terminate_backend`` every other session on ``database``; how many were terminated."""
        with psycopg.connect(self.url("postgres"), autocommit=True) as connection:
            rows = connection.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                [database],
            ).fetchall()
        return sum(1 for (terminated,) in rows if terminated)

    def destroy(self) -> None:
        """Stop the server (at once) and remove its directory."""
        with contextlib.suppress(Exception):
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
