"""Settings of the health features: WORKERS["HEALTH"], per-worker MAX_SILENCE / RESTART_ON_SILENCE."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from django_workers.checks import check_settings
from django_workers.http import HttpServer
from django_workers.runtime import build_pool, build_services
from django_workers.settings import HealthSettings, WorkersSettings, load_settings
from django_workers.settings.values import parse_port
from tests.scenarios.workers_fixtures import PATH

CLASSIC = f"{PATH}.ClassicWorker"


def messages(workers: object) -> list[tuple[str, str, str]]:
    with override_settings(WORKERS=workers):
        return [(message.id or "", message.msg, message.hint or "") for message in check_settings()]


def parsed(workers: dict[str, Any]) -> WorkersSettings:
    with override_settings(WORKERS=workers):
        return load_settings()


def test_health_defaults_to_no_endpoint_on_localhost() -> None:
    assert parsed({"WORKERS": [CLASSIC]}).health == HealthSettings(port=None, address="127.0.0.1")
    assert parsed({"WORKERS": [CLASSIC], "HEALTH": {"PORT": 8081, "ADDRESS": "0.0.0.0"}}).health == HealthSettings(
        port=8081, address="0.0.0.0"
    )
    assert parsed({"WORKERS": [CLASSIC], "HEALTH": {"PORT": 0}}).health.port == 0


@pytest.mark.parametrize(
    ("health", "check_id", "text"),
    [
        ([8081], "django_workers.E002", "WORKERS['HEALTH'] must be a dict, got [8081] (list)."),
        ({"PORT": "8081"}, "django_workers.E002", "WORKERS['HEALTH']['PORT'] must be an int, got '8081' (str)."),
        ({"PORT": True}, "django_workers.E002", "WORKERS['HEALTH']['PORT'] must be an int, got True (bool)."),
        (
            {"PORT": -1},
            "django_workers.E003",
            "WORKERS['HEALTH']['PORT'] must be a TCP port number from 0 to 65535 (0: any free port), got -1.",
        ),
        (
            {"PORT": 70000},
            "django_workers.E003",
            "WORKERS['HEALTH']['PORT'] must be a TCP port number from 0 to 65535 (0: any free port), got 70000.",
        ),
        ({"ADDRESS": 127}, "django_workers.E002", "WORKERS['HEALTH']['ADDRESS'] must be a str, got 127 (int)."),
        ({"PROT": 8081}, "django_workers.W001", "WORKERS['HEALTH'] has an unknown key 'PROT'; did you mean 'PORT'?"),
    ],
)
def test_invalid_health_settings_are_check_messages(health: object, check_id: str, text: str) -> None:
    found = messages({"WORKERS": [CLASSIC], "HEALTH": health})
    assert [(found_id, msg) for found_id, msg, _ in found] == [(check_id, text)]


def test_the_health_and_metrics_endpoints_may_share_a_port_and_are_then_one_server() -> None:
    workers = {"WORKERS": [CLASSIC], "HEALTH": {"PORT": 9100}, "METRICS": {"PORT": 9100}}
    assert messages(workers) == []
    workers_settings = parsed(workers)
    services = build_services(workers_settings, build_pool(workers_settings))
    (server,) = [service for service in services if isinstance(service, HttpServer)]
    assert (server.port, server.address, server.paths) == (9100, "127.0.0.1", ("/metrics", "/livez", "/readyz"))
    # Port 0 means "any free port": two of them are two servers.
    workers_settings = parsed({"WORKERS": [CLASSIC], "HEALTH": {"PORT": 0}, "METRICS": {"PORT": 0}})
    services = build_services(workers_settings, build_pool(workers_settings))
    assert [service.paths for service in services if isinstance(service, HttpServer)] == [
        ("/metrics",),
        ("/livez", "/readyz"),
    ]


def test_max_silence_and_restart_on_silence_are_parsed_and_registered() -> None:
    workers = {"WORKERS": [{"CLASS": CLASSIC, "MAX_SILENCE": 2.5, "RESTART_ON_SILENCE": True}]}
    spec = parsed(workers).workers[0]
    assert (spec.max_silence, spec.restart_on_silence) == (2.5, True)
    with override_settings(WORKERS=workers):
        execution = build_pool().execution("classic")
    assert execution.max_silence == 2.5
    plain = parsed({"WORKERS": [CLASSIC]}).workers[0]
    assert (plain.max_silence, plain.restart_on_silence) == (None, False)


@pytest.mark.parametrize(
    ("keys", "check_id", "text"),
    [
        ({"MAX_SILENCE": 0}, "django_workers.E003", "WORKERS['WORKERS'][0]['MAX_SILENCE'] must be > 0 seconds, got 0."),
        (
            {"MAX_SILENCE": "5"},
            "django_workers.E002",
            "WORKERS['WORKERS'][0]['MAX_SILENCE'] must be a number of seconds (int or float), got '5' (str).",
        ),
        (
            {"MAX_SILENCE": 5, "RESTART_ON_SILENCE": "yes"},
            "django_workers.E002",
            "WORKERS['WORKERS'][0]['RESTART_ON_SILENCE'] must be a bool, got 'yes' (str).",
        ),
        (
            {"RESTART_ON_SILENCE": True},
            "django_workers.E018",
            "WORKERS['WORKERS'][0]['RESTART_ON_SILENCE'] is True, but WORKERS['WORKERS'][0] has no 'MAX_SILENCE'.",
        ),
        (
            {"MAX_SILENCS": 5},
            "django_workers.W001",
            "WORKERS['WORKERS'][0] has an unknown key 'MAX_SILENCS'; did you mean 'MAX_SILENCE'?",
        ),
    ],
)
def test_invalid_hang_detection_settings_are_check_messages(keys: dict[str, Any], check_id: str, text: str) -> None:
    found = messages({"WORKERS": [{"CLASS": CLASSIC, **keys}]})
    assert [(found_id, msg) for found_id, msg, _ in found] == [(check_id, text)]


def test_invalid_hang_detection_settings_do_not_build_a_pool() -> None:
    with override_settings(WORKERS={"WORKERS": [{"CLASS": CLASSIC, "RESTART_ON_SILENCE": True}]}):
        with pytest.raises(ImproperlyConfigured, match=r"django_workers\.E018"):
            build_pool()


def test_build_services_adds_the_health_endpoint_from_settings_or_the_option() -> None:
    def health_services(workers: dict[str, Any], health_port: int | None = None) -> list[HttpServer]:
        workers_settings = parsed({"WORKERS": [CLASSIC], "METRICS": {"ENABLED": False}, **workers})
        services = build_services(workers_settings, build_pool(workers_settings), health_port=health_port)
        return [service for service in services if isinstance(service, HttpServer)]

    assert health_services({}) == []
    assert health_services({}, None) == []
    (from_settings,) = health_services({"HEALTH": {"PORT": 8081, "ADDRESS": "0.0.0.0"}})
    assert (from_settings.address, from_settings.port, from_settings.paths) == ("0.0.0.0", 8081, ("/livez", "/readyz"))
    (from_option,) = health_services({"HEALTH": {"PORT": 8081}}, parse_port("9000", "--health-port"))
    assert (from_option.address, from_option.port) == ("127.0.0.1", 9000)
    for bad in ("http", "-1", "65536"):
        with pytest.raises(ValueError, match=rf"--health-port must be a TCP port number from 0 to 65535 .*{bad}"):
            parse_port(bad, "--health-port")
