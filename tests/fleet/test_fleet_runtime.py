"""Singleton workers in ``runworkers``: the keeper is built from the settings and hands a worker over.

On SQLite and on PostgreSQL: two real ``runworkers`` processes on one database (SQLite is for
development on one host; it uses the same lease table). The fault tests against several processes
(SIGKILL, SIGSTOP, partitions, PgBouncer) are PostgreSQL-only, in test_fleet_processes.py.
"""

from __future__ import annotations

import signal
import time
from typing import Any

import pytest
from django.test import override_settings

from django_workers.fleet import LeaseKeeper
from django_workers.history import HistoryRecorder
from django_workers.runtime import build_pool, build_services
from django_workers.settings import load_settings
from tests.support import StartRunworkers, on_test_database

SLEEPER = "tests.scenarios.workers_runworkers.Sleeper"
FLEET = {"LEASE_TTL": 3.0, "RENEW_INTERVAL": 0.5, "MARGIN": 0.3}
HEALTH_SETTINGS = "tests.scenarios.settings_health"


def workers(**extra: Any) -> dict[str, Any]:
    return {
        "STOP_TIMEOUT": 1.0,
        "FLEET": FLEET,
        "WORKERS": [{"CLASS": SLEEPER, "SINGLETON": True}, {"CLASS": SLEEPER, "OPTIONS": {"name": "everywhere"}}],
        **extra,
    }


def test_build_services_holds_the_leases_of_singletons_for_the_history_node() -> None:
    with override_settings(WORKERS=workers(HISTORY={"ENABLED": True})):
        parsed = load_settings()
        pool = build_pool(parsed)
        assert [pool.execution(name).singleton for name in pool.names()] == [True, False]
        services = build_services(parsed, pool)
    keepers = [service for service in services if isinstance(service, LeaseKeeper)]
    assert len(keepers) == 1
    keeper = keepers[0]
    (recorder,) = [service for service in services if isinstance(service, HistoryRecorder)]
    assert keeper.holder == recorder.node_id, "the console names the holder by its node"
    assert services.index(keeper) > services.index(recorder), "started after the history, stopped before it"
    assert (keeper.ttl, keeper.renew, keeper.margin, keeper.stop_timeout) == (3.0, 0.5, 0.3, 1.0)
    assert keeper.window == pytest.approx(3.0 - 0.3 - 1.0)


def test_no_keeper_without_singletons_and_a_stop_timeout_the_lease_cannot_cover_is_refused() -> None:
    with override_settings(WORKERS={"WORKERS": [SLEEPER]}):
        parsed = load_settings()
        assert not any(isinstance(s, LeaseKeeper) for s in build_services(parsed, build_pool(parsed)))
    with override_settings(WORKERS=workers()):
        parsed = load_settings()
        pool = build_pool(parsed, stop_timeout=5.0)  # runworkers --stop-timeout 5
        with pytest.raises(ValueError, match=r"LEASE_TTL.*is 3 seconds.*more than 5\.8 seconds"):
            build_services(parsed, pool)


@pytest.mark.django_db(transaction=True)
def test_runworkers_exits_1_when_its_stop_timeout_outlives_the_lease(start: StartRunworkers) -> None:
    process = start("--stop-timeout", "30", workers=workers(), settings=HEALTH_SETTINGS, env=on_test_database())
    assert process.wait(60) == 1
    assert "LEASE_TTL" in process.stderr and "stop timeout of 30 seconds" in process.stderr
    assert "Traceback" not in process.stderr


@pytest.mark.django_db(transaction=True)
def test_two_runworkers_run_a_singleton_once_and_a_graceful_stop_hands_it_over(start: StartRunworkers) -> None:
    env = on_test_database()
    first = start("-v", "2", workers=workers(), settings=HEALTH_SETTINGS, env=env)
    first.expect(r"took the lease of sleeper with fence 1: it runs on this node", timeout=30)
    first.expect(r"sleeper is running")
    second = start("-v", "2", workers=workers(), settings=HEALTH_SETTINGS, env=env)
    second.expect(r"everywhere is running", timeout=30)
    second.expect(r"sleeper: execution standing by until this node holds the lease|standing by", timeout=10)
    assert second.expect(r"took the lease of sleeper", timeout=2 * FLEET["RENEW_INTERVAL"], required=False) is None

    stopped_at = time.monotonic()
    first.send(signal.SIGTERM)
    first.expect(r"released the lease of sleeper \(fence 1\)", timeout=10)
    assert first.wait(30) == 0
    second.expect(r"took the lease of sleeper with fence 2: it runs on this node", timeout=10)
    takeover = time.monotonic() - stopped_at
    assert takeover < FLEET["LEASE_TTL"], f"a released lease is taken at once, not waited out: {takeover:.2f} s"
    second.expect(r"sleeper is running")
    second.send(signal.SIGTERM)
    assert second.wait(30) == 0


def test_list_says_which_workers_are_singletons(start: StartRunworkers) -> None:
    process = start("--list", workers=workers())
    assert process.wait(60) == 0
    out = process.stdout
    assert "singleton        on one replica at a time (lease of 3 seconds, renewed every 0.5 seconds)" in out
    assert out.count("singleton ") == 1, "only the singleton says so"
