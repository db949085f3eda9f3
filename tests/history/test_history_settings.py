"""The recorder's HISTORY keys: parsed, validated by the shared validator, turned into the service."""

from __future__ import annotations

from typing import Any

import pytest

from django_workers import settings as conf
from django_workers.history import HistoryRecorder
from django_workers.runtime import build_pool, build_services
from django_workers.settings import HistorySettings, WorkersSettings


def validate(history: Any) -> conf.SettingsValidation:
    return conf.validate_settings({"HISTORY": history, "WORKERS": []}, databases={"default": {}})


def ids(validation: conf.SettingsValidation) -> list[str]:
    return [message.id for message in validation.messages if message.id != conf.W_NO_WORKERS]


def test_defaults() -> None:
    history = HistorySettings()
    assert (history.heartbeat_interval, history.orphan_grace, history.grace) == (10.0, None, 30.0)
    assert (history.buffer_size, history.batch_size) == (1_000, 1_000)
    assert validate({}).settings == WorkersSettings(history=HistorySettings())


def test_every_key_is_parsed() -> None:
    validation = validate(
        {
            "ENABLED": True,
            "HEARTBEAT_INTERVAL": 2,
            "ORPHAN_GRACE": 7.5,
            "BUFFER_SIZE": 100,
            "BATCH_SIZE": 10,
            "RETENTION_DAYS": 3,
        }
    )
    assert ids(validation) == []
    assert validation.settings is not None
    assert validation.settings.history == HistorySettings(
        enabled=True,
        retention_days=3,
        heartbeat_interval=2.0,
        orphan_grace=7.5,
        buffer_size=100,
        batch_size=10,
    )
    assert validation.settings.history.grace == 7.5
    assert validate({"HEARTBEAT_INTERVAL": 0.5, "ORPHAN_GRACE": None}).settings.history.grace == 1.5  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("history", "check_id", "text"),
    [
        ({"HEARTBEAT_INTERVAL": "10"}, "E002", "WORKERS['HISTORY']['HEARTBEAT_INTERVAL'] must be a number of seconds"),
        ({"HEARTBEAT_INTERVAL": True}, "E002", "must be a number of seconds (int or float), got True (bool)"),
        ({"HEARTBEAT_INTERVAL": 0}, "E003", "WORKERS['HISTORY']['HEARTBEAT_INTERVAL'] must be >= 0.1 seconds, got 0."),
        ({"HEARTBEAT_INTERVAL": -1}, "E003", "must be >= 0.1 seconds, got -1."),
        ({"HEARTBEAT_INTERVAL": float("nan")}, "E003", "must be a finite number, got nan."),
        ({"ORPHAN_GRACE": "30"}, "E002", "WORKERS['HISTORY']['ORPHAN_GRACE'] must be a number of seconds"),
        ({"ORPHAN_GRACE": 0}, "E003", "WORKERS['HISTORY']['ORPHAN_GRACE'] must be > 0 seconds, got 0."),
        ({"ORPHAN_GRACE": 10}, "E003", "ORPHAN_GRACE'] (10 s) must be longer than HEARTBEAT_INTERVAL (10 s)."),
        (
            {"HEARTBEAT_INTERVAL": 2, "ORPHAN_GRACE": 1},
            "E003",
            "ORPHAN_GRACE'] (1 s) must be longer than HEARTBEAT_INTERVAL (2 s).",
        ),
        ({"BUFFER_SIZE": 0}, "E003", "WORKERS['HISTORY']['BUFFER_SIZE'] must be >= 1, got 0."),
        ({"BUFFER_SIZE": 1.5}, "E002", "WORKERS['HISTORY']['BUFFER_SIZE'] must be an int"),
        ({"BATCH_SIZE": 0}, "E003", "WORKERS['HISTORY']['BATCH_SIZE'] must be >= 1, got 0."),
        ({"BATCH_SIZE": "500"}, "E002", "WORKERS['HISTORY']['BATCH_SIZE'] must be an int"),
        ({"HEARTBEAT": 5}, "W001", "has an unknown key 'HEARTBEAT'; did you mean 'HEARTBEAT_INTERVAL'?"),
        ({"ORPHAN_GRACE": 15}, "W005", "ORPHAN_GRACE'] (15 s) is less than twice HEARTBEAT_INTERVAL (10 s)"),
    ],
)
def test_invalid_values_are_check_messages(history: dict[str, Any], check_id: str, text: str) -> None:
    validation = validate(history)
    assert ids(validation) == [f"django_workers.{check_id}"]
    message = next(message for message in validation.messages if message.id == f"django_workers.{check_id}")
    assert text in message.msg
    assert message.hint
    if check_id.startswith("W"):
        assert validation.settings is not None  # a warning alone leaves the settings usable
    else:
        assert validation.settings is None


def test_build_services_adds_the_recorder_when_history_is_enabled() -> None:
    history = HistorySettings(
        enabled=True,
        database="default",
        retention_days=3,
        heartbeat_interval=2.0,
        buffer_size=100,
        batch_size=10,
    )
    workers_settings = WorkersSettings(history=history)
    pool = build_pool(workers_settings)
    services = build_services(workers_settings, pool)
    recorders = [service for service in services if isinstance(service, HistoryRecorder)]
    assert len(recorders) == 1 and services[0] is recorders[0]  # first: stopped last, after the endpoints
    recorder = recorders[0]
    assert (recorder.database, recorder.retention_days, recorder.heartbeat_interval) == ("default", 3, 2.0)
    assert (recorder.orphan_grace, recorder.buffer_size, recorder.batch_size) == (6.0, 100, 10)
    assert recorder.metrics is pool.metrics
    assert recorder.name == "history recorder (database 'default')"

    disabled = WorkersSettings(history=HistorySettings(enabled=False))
    assert not any(isinstance(service, HistoryRecorder) for service in build_services(disabled, build_pool(disabled)))
