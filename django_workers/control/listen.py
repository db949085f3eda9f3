"""The PostgreSQL ``LISTEN`` of a ``runworkers`` process: wakes the pickup as soon as a request commits.

One thread, one dedicated connection (never one of Django's: a connection that waits for
notifications cannot serve queries). It reconnects with backoff when the database goes away, and
wakes the pickup after every (re)connection, since notifications sent meanwhile were lost. The
pickup's poll every heartbeat interval stays the fallback: the listener only makes it early.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from django.db import connections

from ..core.backoff import Backoff
from ..core.context import LOGGER_NAME
from ..core.text import safe_str
from .requests import CHANNEL

__all__ = ["KEEPALIVES", "RECONNECT_BACKOFF", "Listener", "listen_unavailable"]

logger = logging.getLogger(LOGGER_NAME)

#: How long a wait for notifications lasts before the thread looks at its stop signal.
WAIT_SLICE = 0.25
#: Seconds a (re)connection may take.
CONNECT_TIMEOUT = 5
#: TCP keepalives of the LISTEN connection (libpq's options): a connection that died silently (a server
#: or a network gone without a reset) is noticed in about a minute, and the listener reconnects.
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3}
#: Delays between reconnections while the database is away.
RECONNECT_BACKOFF = Backoff(initial=0.5, maximum=30.0, multiplier=2.0, jitter=0.1)


def listen_unavailable(database: str) -> str | None:
    """Why ``database`` cannot be listened to (not PostgreSQL, not psycopg >= 3.2), or None."""
    connection = connections[database]
    if connection.vendor != "postgresql":
        return f"database {database!r} is {connection.vendor}, not PostgreSQL"
    try:
        import psycopg  # noqa: PLC0415 - optional dependency: the PostgreSQL driver
    except ImportError:
        return "psycopg (3) is not installed"
    if not hasattr(psycopg.Connection, "notifies") or _version(psycopg.__version__) < (3, 2):
        return f"psycopg {psycopg.__version__} has no notifies(timeout=...) (psycopg >= 3.2 has)"
    return None


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for part in text.split(".")[:2]:
        digits = "".join(ch for ch in part if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


class Listener:
    """``LISTEN`` on :data:`~django_workers.control.requests.CHANNEL` in a thread; ``wake()`` per notification."""

    def __init__(
        self, database: str, wake: Callable[[], None], *, reconnect_backoff: Backoff = RECONNECT_BACKOFF
    ) -> None:
        self.database = database
        self.wake = wake
        self.reconnect_backoff = reconnect_backoff
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: Set while the connection is listening (tests and logs read it).
        self.listening = threading.Event()

    def start(self) -> None:
        """Start the thread (it connects; a failure is retried, never raised)."""
        self._thread = threading.Thread(target=self._run, name="runworkers:control-listen", daemon=True)
        self._thread.start()

    def stop(self, timeout: float) -> bool:
        """Signal the stop and join within ``timeout`` seconds; whether the thread ended."""
        self._stop.set()
        thread = self._thread
        if thread is None:
            return True
        thread.join(max(0.0, timeout))
        return not thread.is_alive()

    def _connect(self) -> Any:
        import psycopg  # noqa: PLC0415 - optional dependency: the PostgreSQL driver

        params = dict(connections[self.database].get_connection_params())
        params.setdefault("connect_timeout", CONNECT_TIMEOUT)
        for option, value in KEEPALIVES.items():
            params.setdefault(option, value)  # the project's OPTIONS win
        params["autocommit"] = True
        return psycopg.connect(**params)

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            connection = None
            try:
                connection = self._connect()
                connection.execute(f"LISTEN {CHANNEL}")
                self.listening.set()
                if failures:
                    logger.info("control requests: listening again on PostgreSQL channel %r", CHANNEL)
                else:
                    logger.info("control requests: listening on PostgreSQL channel %r", CHANNEL)
                failures = 0
                self.wake()  # what was sent while this thread was not listening was lost: poll now
                while not self._stop.is_set():
                    for _ in connection.notifies(timeout=WAIT_SLICE):
                        self.wake()
            except Exception as exc:
                self.listening.clear()
                failures += 1
                delay = self.reconnect_backoff.delay(failures)
                level = logging.WARNING if failures == 1 else logging.DEBUG
                logger.log(
                    level,
                    "control requests: LISTEN on database %r failed (%s); polling only, reconnecting in %.1f s",
                    self.database,
                    safe_str(exc, 500).strip() or type(exc).__name__,
                    delay,
                )
                self._stop.wait(delay)
            finally:
                if connection is not None:
                    try:
                        connection.close()
                    except Exception:
                        logger.debug("control requests: closing the LISTEN connection failed", exc_info=True)
        self.listening.clear()
