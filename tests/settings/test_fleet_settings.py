"""``WORKERS["FLEET"]`` and per-worker ``"SINGLETON"``: the settings of singleton workers on a lease.

The safety rule under test: a holder whose renewals fail cancels its singleton worker
``LEASE_TTL - MARGIN - STOP_TIMEOUT`` seconds after the start of its last successful renewal, so
``LEASE_TTL > renew + MARGIN + STOP_TIMEOUT`` leaves time to retry one renewal first (E021).
"""

from __future__ import annotations

from dataclasses import FrozenInstanceError
from pathlib import Path
from typing import Any

import pytest
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from django_workers import settings as conf
from django_workers.settings import FleetSettings, WorkersSettings, lease_timing, load_settings
from tests.scenarios.workers_fixtures import PATH

CLASSIC = f"{PATH}.ClassicWorker"
DATABASES = {"default": {}, "leases": {}}


def validate(workers: dict[str, Any], *, databases: object = DATABASES) -> conf.SettingsValidation:
    return conf.validate_settings(workers, databases=databases)


def fleet(section: object, **top: object) -> dict[str, Any]:
    """A WORKERS with one ordinary worker and the given FLEET section."""
    return {"WORKERS": [CLASSIC], "FLEET": section, **top}


def singleton(**top: object) -> dict[str, Any]:
    """A WORKERS whose only worker is a singleton, without a FLEET section unless given."""
    return {"WORKERS": [{"CLASS": CLASSIC, "SINGLETON": True}], **top}


def only_message(workers: dict[str, Any], **kwargs: Any) -> checks.CheckMessage:
    messages = validate(workers, **kwargs).messages
    assert len(messages) == 1, "\n".join(map(str, messages))
    [message] = messages
    assert message.hint, "every message says how to fix it"
    return message


# -- defaults and parsing -------------------------------------------------------------------------------------


def test_the_defaults() -> None:
    defaults = FleetSettings()
    assert defaults == FleetSettings(lease_ttl=60.0, renew_interval=None, margin=1.0, database="default")
    assert defaults.renew == 20.0
    assert WorkersSettings().fleet == defaults


def test_a_project_without_fleet_gets_the_defaults_and_no_singleton() -> None:
    parsed = validate({"WORKERS": [CLASSIC, {"CLASS": f"{PATH}.AsyncWorker"}]}).settings
    assert parsed is not None
    assert parsed.fleet == FleetSettings()
    assert [spec.singleton for spec in parsed.workers] == [False, False]


def test_every_key_is_parsed() -> None:
    workers = fleet({"LEASE_TTL": 90, "RENEW_INTERVAL": 15.5, "MARGIN": 2, "DATABASE": "leases"})
    validation = validate(workers)

    assert validation.messages == ()
    assert validation.settings is not None
    parsed = validation.settings.fleet
    assert parsed == FleetSettings(lease_ttl=90.0, renew_interval=15.5, margin=2.0, database="leases")
    assert isinstance(parsed.lease_ttl, float) and isinstance(parsed.margin, float)
    assert parsed.renew == 15.5


def test_load_settings_reads_fleet_and_singleton_from_the_setting() -> None:
    workers = {
        "STOP_TIMEOUT": 5,
        "FLEET": {"LEASE_TTL": 30},
        "WORKERS": [CLASSIC, {"CLASS": f"{PATH}.AsyncWorker", "SINGLETON": True}],
    }
    with override_settings(WORKERS=workers):
        loaded = load_settings()
    assert loaded.fleet == FleetSettings(lease_ttl=30.0)
    assert [(spec.name, spec.singleton) for spec in loaded.workers] == [("classic", False), ("async", True)]


@pytest.mark.parametrize(("ttl", "renew"), [(60, 20.0), (30, 10.0), (0.3, 0.1), (100, 100 / 3)])
def test_the_renew_interval_defaults_to_a_third_of_the_ttl(ttl: float, renew: float) -> None:
    parsed = FleetSettings(lease_ttl=ttl)
    assert parsed.renew == pytest.approx(renew)


def test_a_renew_interval_of_none_is_the_default() -> None:
    parsed = validate(fleet({"LEASE_TTL": 45, "RENEW_INTERVAL": None})).settings
    assert parsed is not None
    assert parsed.fleet.renew_interval is None
    assert parsed.fleet.renew == 15.0


def test_an_empty_fleet_section_is_the_defaults() -> None:
    validation = validate(fleet({}))
    assert validation.messages == ()
    assert validation.settings is not None and validation.settings.fleet == FleetSettings()


def test_the_fleet_settings_are_immutable() -> None:
    with pytest.raises(FrozenInstanceError):
        FleetSettings().lease_ttl = 5  # type: ignore[misc]


# -- SINGLETON ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [(True, True), (False, False), (None, False)])
def test_singleton_is_parsed(value: object, expected: bool) -> None:
    validation = validate({"WORKERS": [{"CLASS": CLASSIC, "SINGLETON": value}]})
    assert validation.messages == ()
    assert validation.settings is not None
    [spec] = validation.settings.workers
    assert spec.singleton is expected


def test_a_dotted_path_entry_is_not_a_singleton() -> None:
    validation = validate({"WORKERS": [CLASSIC]})
    assert validation.settings is not None
    assert validation.settings.workers[0].singleton is False


@pytest.mark.parametrize("value", ["yes", 1, 0, 1.0, [True]])
def test_singleton_of_the_wrong_type_is_refused(value: object) -> None:
    message = only_message({"WORKERS": [{"CLASS": CLASSIC, "SINGLETON": value}]})
    assert message.id == conf.E_WRONG_TYPE
    assert "WORKERS['WORKERS'][0]['SINGLETON'] must be a bool" in message.msg
    assert "'SINGLETON': True" in message.hint


def test_a_misspelt_singleton_key_says_did_you_mean() -> None:
    message = only_message({"WORKERS": [{"CLASS": CLASSIC, "SINGELTON": True}]})
    assert message.id == conf.W_UNKNOWN_KEY
    assert "did you mean 'SINGLETON'?" in message.msg


# -- wrong types, ranges, unknown keys ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "text"),
    [
        ("60", "WORKERS['FLEET'] must be a dict, got '60' (str)"),
        ([("LEASE_TTL", 60)], "WORKERS['FLEET'] must be a dict"),
        ({"LEASE_TTL": "60"}, "WORKERS['FLEET']['LEASE_TTL'] must be a number of seconds (int or float), got '60'"),
        ({"LEASE_TTL": True}, "WORKERS['FLEET']['LEASE_TTL'] must be a number of seconds (int or float), got True"),
        ({"LEASE_TTL": None}, "WORKERS['FLEET']['LEASE_TTL'] must be a number of seconds"),
        ({"RENEW_INTERVAL": "20"}, "WORKERS['FLEET']['RENEW_INTERVAL'] must be a number of seconds"),
        ({"MARGIN": False}, "WORKERS['FLEET']['MARGIN'] must be a number of seconds"),
        ({"MARGIN": None}, "WORKERS['FLEET']['MARGIN'] must be a number of seconds"),
        ({"DATABASE": None}, "WORKERS['FLEET']['DATABASE'] must be a str, got None"),
        ({"DATABASE": 0}, "WORKERS['FLEET']['DATABASE'] must be a str"),
    ],
)
def test_a_wrong_type_is_an_error(section: object, text: str) -> None:
    message = only_message(fleet(section))
    assert message.id == conf.E_WRONG_TYPE
    assert text in message.msg
    assert message.hint.startswith("Write it as, e.g.,")


@pytest.mark.parametrize(
    ("section", "text", "hint"),
    [
        ({"LEASE_TTL": 0}, "WORKERS['FLEET']['LEASE_TTL'] must be > 0 seconds, got 0.", "more than 0 and at most"),
        ({"LEASE_TTL": -5}, "WORKERS['FLEET']['LEASE_TTL'] must be > 0 seconds", "how long a lease lasts"),
        (
            {"LEASE_TTL": 86_400.5},
            "WORKERS['FLEET']['LEASE_TTL'] must be <= 86400 seconds (a day), got 86400.5.",
            "more than 0 and at most 86400 seconds (a day)",
        ),
        ({"LEASE_TTL": 10**400}, "WORKERS['FLEET']['LEASE_TTL'] must be <= 86400 seconds", "at most 86400"),
        ({"LEASE_TTL": float("inf")}, "WORKERS['FLEET']['LEASE_TTL'] must be a finite number", "at most 86400"),
        ({"LEASE_TTL": float("nan")}, "WORKERS['FLEET']['LEASE_TTL'] must be a finite number", "at most 86400"),
        ({"RENEW_INTERVAL": 0}, "WORKERS['FLEET']['RENEW_INTERVAL'] must be > 0 seconds", "renews its lease"),
        ({"RENEW_INTERVAL": 1e300}, "WORKERS['FLEET']['RENEW_INTERVAL'] must be <= 86400 seconds", "at most 86400"),
        ({"MARGIN": 0}, "WORKERS['FLEET']['MARGIN'] must be > 0 seconds", "clock-rate differences"),
        ({"MARGIN": -1}, "WORKERS['FLEET']['MARGIN'] must be > 0 seconds", "statement latency"),
        ({"MARGIN": 86_401}, "WORKERS['FLEET']['MARGIN'] must be <= 86400 seconds", "at most 86400"),
    ],
)
def test_a_number_out_of_range_is_an_error_naming_the_bound(section: dict[str, Any], text: str, hint: str) -> None:
    message = only_message(fleet(section))
    assert message.id == conf.E_OUT_OF_RANGE
    assert text in message.msg
    assert hint in message.hint


@pytest.mark.parametrize(
    ("section", "text"),
    [
        ({"LEASE_TTL": 30, "RENEW_INTERVAL": 30}, "RENEW_INTERVAL'] (30 s) must be shorter than LEASE_TTL (30 s)."),
        ({"RENEW_INTERVAL": 61}, "RENEW_INTERVAL'] (61 s) must be shorter than LEASE_TTL (60 s)."),
    ],
)
def test_a_renew_interval_not_shorter_than_the_ttl_is_an_error(section: dict[str, Any], text: str) -> None:
    message = only_message(fleet(section))
    assert message.id == conf.E_OUT_OF_RANGE
    assert text in message.msg
    assert "a fraction of LEASE_TTL" in message.hint


@pytest.mark.parametrize(
    ("key", "suggestion"),
    [
        ("LEASE_TLL", "LEASE_TTL"),
        ("lease_ttl", "LEASE_TTL"),
        ("RENEW_INTERVALL", "RENEW_INTERVAL"),
        ("MARGINS", "MARGIN"),
        ("DATABSE", "DATABASE"),
    ],
)
def test_an_unknown_key_is_a_warning_with_did_you_mean(key: str, suggestion: str) -> None:
    validation = validate(fleet({key: 1}))
    [message] = validation.messages
    assert message.id == conf.W_UNKNOWN_KEY
    assert message.level == checks.WARNING
    assert f"WORKERS['FLEET'] has an unknown key {key!r}; did you mean {suggestion!r}?" in message.msg
    assert f"Rename {key!r} to {suggestion!r}" in message.hint
    assert validation.settings is not None and validation.settings.fleet == FleetSettings()


def test_an_unknown_key_without_a_close_one_lists_the_known_keys() -> None:
    message = only_message(fleet({"BROKER": "redis://"}))
    assert message.id == conf.W_UNKNOWN_KEY
    assert "LEASE_TTL, RENEW_INTERVAL, MARGIN, DATABASE" in message.hint


def test_a_misspelt_fleet_section_says_did_you_mean() -> None:
    message = only_message({"WORKERS": [CLASSIC], "FLET": {}})
    assert message.id == conf.W_UNKNOWN_KEY
    assert "did you mean 'FLEET'?" in message.msg


# -- DATABASE ----------------------------------------------------------------------------------------------------


def test_an_unknown_database_alias_is_an_error_listing_the_aliases() -> None:
    message = only_message(fleet({"DATABASE": "lease"}))
    assert message.id == conf.E_UNKNOWN_DATABASE
    assert message.msg == "WORKERS['FLEET']['DATABASE'] is 'lease', which is not a key of settings.DATABASES."
    assert "'default', 'leases'" in message.hint


def test_the_default_alias_is_checked_when_a_worker_is_a_singleton() -> None:
    message = only_message(singleton(STOP_TIMEOUT=5), databases={"other": {}})
    assert message.id == conf.E_UNKNOWN_DATABASE
    assert "WORKERS['FLEET']['DATABASE'] is 'default'" in message.msg
    assert "'other'" in message.hint


def test_the_default_alias_is_not_checked_without_singletons() -> None:
    assert validate(fleet({}), databases={"other": {}}).messages == ()
    assert validate({"WORKERS": [CLASSIC]}, databases={}).messages == ()


# -- the safety check: LEASE_TTL > renew + MARGIN + STOP_TIMEOUT --------------------------------------------------


def test_minimum_ttl_with_an_explicit_renew_interval() -> None:
    settings = FleetSettings(lease_ttl=60, renew_interval=20, margin=1)
    assert settings.minimum_ttl(25) == 46
    assert settings.cancel_after(25) == 34
    assert settings.stops_in_time(25)
    assert not FleetSettings(lease_ttl=46, renew_interval=20, margin=1).stops_in_time(25)
    assert FleetSettings(lease_ttl=46.01, renew_interval=20, margin=1).stops_in_time(25)


def test_minimum_ttl_with_the_default_renew_interval_accounts_for_it_following_the_ttl() -> None:
    # renew = TTL / 3, so TTL > TTL / 3 + MARGIN + STOP_TIMEOUT is TTL > 1.5 * (MARGIN + STOP_TIMEOUT).
    assert FleetSettings().minimum_ttl(25) == 39
    assert not FleetSettings(lease_ttl=39).stops_in_time(25)
    assert FleetSettings(lease_ttl=39.01).stops_in_time(25)
    assert FleetSettings(lease_ttl=39.01).cancel_after(25) > FleetSettings(lease_ttl=39.01).renew


def test_the_defaults_are_safe_with_the_default_stop_timeout() -> None:
    assert FleetSettings().stops_in_time(WorkersSettings().stop_timeout)
    assert validate(singleton()).messages == ()


@pytest.mark.parametrize(
    ("section", "stop_timeout", "shortest"),
    [
        ({"LEASE_TTL": 46, "RENEW_INTERVAL": 20}, 25, 47),
        ({"LEASE_TTL": 40, "RENEW_INTERVAL": 10, "MARGIN": 5}, 25, 41),
        ({"LEASE_TTL": 46.5, "RENEW_INTERVAL": 20.5}, 25, 47),
        ({"LEASE_TTL": 39}, 25, 40),
        ({}, 100, 152),
    ],
)
def test_a_lease_too_short_for_the_stop_timeout_is_an_error_giving_the_shortest_valid_ttl(
    section: dict[str, Any], stop_timeout: float, shortest: int
) -> None:
    message = only_message(fleet(section, STOP_TIMEOUT=stop_timeout))

    assert message.id == conf.E_LEASE_TOO_SHORT == "django_workers.E021"
    assert message.level == checks.ERROR
    assert message.msg.startswith("WORKERS['FLEET']['LEASE_TTL'] is ")
    assert "RENEW_INTERVAL + MARGIN + STOP_TIMEOUT" in message.msg
    assert f"+ {stop_timeout:g} =" in message.msg
    assert message.hint.startswith(f"Set WORKERS['FLEET']['LEASE_TTL'] to at least {shortest} seconds, or lower ")
    assert "STOP_TIMEOUT/RENEW_INTERVAL/MARGIN" in message.hint
    # The value the hint gives is valid.
    fixed = {**section, "LEASE_TTL": shortest}
    assert validate(fleet(fixed, STOP_TIMEOUT=stop_timeout)).messages == ()


def test_the_message_names_the_numbers() -> None:
    message = only_message(fleet({"LEASE_TTL": 46, "RENEW_INTERVAL": 20}, STOP_TIMEOUT=25))
    assert message.msg.startswith(
        "WORKERS['FLEET']['LEASE_TTL'] is 46 seconds, which is not more than "
        "RENEW_INTERVAL + MARGIN + STOP_TIMEOUT (20 + 1 + 25 = 46 seconds): "
    )
    assert "LEASE_TTL - MARGIN - STOP_TIMEOUT (20) seconds after the start of its last renewal" in message.msg


def test_the_message_says_when_the_renew_interval_is_a_third_of_the_ttl() -> None:
    message = only_message(fleet({"LEASE_TTL": 30}, STOP_TIMEOUT=25))
    assert "(10 + 1 + 25 = 36 seconds; RENEW_INTERVAL is unset: a third of LEASE_TTL)" in message.msg
    assert "renewals stay a third of LEASE_TTL apart" in message.hint


@pytest.mark.parametrize(
    ("section", "stop_timeout"),
    [
        ({"LEASE_TTL": 46.001, "RENEW_INTERVAL": 20}, 25),
        ({"LEASE_TTL": 47, "RENEW_INTERVAL": 20}, 25),
        ({"LEASE_TTL": 39.001}, 25),
        ({"LEASE_TTL": 10, "RENEW_INTERVAL": 2, "MARGIN": 0.5}, 7.4),
    ],
)
def test_a_lease_just_long_enough_passes(section: dict[str, Any], stop_timeout: float) -> None:
    assert validate(fleet(section, STOP_TIMEOUT=stop_timeout)).messages == ()


def test_a_singleton_without_fleet_is_checked_with_the_defaults() -> None:
    message = only_message(singleton(STOP_TIMEOUT=100))
    assert message.id == conf.E_LEASE_TOO_SHORT
    assert "LEASE_TTL'] is 60 seconds" in message.msg
    assert "at least 152 seconds" in message.hint


@pytest.mark.parametrize("stop_timeout", [39, 100, 86_400])
def test_no_error_without_fleet_and_without_singletons_whatever_the_stop_timeout(stop_timeout: float) -> None:
    workers = {"STOP_TIMEOUT": stop_timeout, "WORKERS": [CLASSIC, {"CLASS": f"{PATH}.AsyncWorker", "SINGLETON": False}]}
    validation = validate(workers)
    assert validation.messages == ()
    assert validation.settings is not None and validation.settings.fleet == FleetSettings()


def test_an_explicit_fleet_is_checked_even_without_singletons() -> None:
    assert only_message(fleet({}, STOP_TIMEOUT=100)).id == conf.E_LEASE_TOO_SHORT


def test_an_invalid_stop_timeout_or_fleet_gives_its_own_error_only() -> None:
    assert only_message(fleet({}, STOP_TIMEOUT=-1)).id == conf.E_OUT_OF_RANGE
    assert only_message(fleet({"RENEW_INTERVAL": 90}, STOP_TIMEOUT=100)).id == conf.E_OUT_OF_RANGE


def test_a_stop_timeout_beyond_any_valid_ttl_only_asks_to_lower_it() -> None:
    message = only_message(fleet({}, STOP_TIMEOUT=86_400))
    assert message.id == conf.E_LEASE_TOO_SHORT
    assert message.hint.startswith("Lower STOP_TIMEOUT/RENEW_INTERVAL/MARGIN: LEASE_TTL would have to be 129602")


def test_lease_timing_checks_an_overridden_stop_timeout() -> None:
    # What runworkers --stop-timeout needs: the same rule, for another stop timeout.
    settings = FleetSettings()
    assert lease_timing(settings, 25) == []
    [message] = lease_timing(settings, 40)
    assert message.id == conf.E_LEASE_TOO_SHORT
    assert "at least 62 seconds" in message.hint


def test_load_settings_raises_for_a_lease_too_short() -> None:
    with override_settings(WORKERS=singleton(STOP_TIMEOUT=50)):
        with pytest.raises(ImproperlyConfigured, match=r"django_workers\.E021"):
            load_settings()


# -- documented ---------------------------------------------------------------------------------------------------


def test_the_keys_the_check_and_the_formula_are_documented() -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "settings.md").read_text()
    assert "### `FLEET`" in text
    for key in ("`LEASE_TTL`", "`RENEW_INTERVAL`", "`MARGIN`", "`SINGLETON`"):
        assert key in text, key
    assert f"| `{conf.E_LEASE_TOO_SHORT}` | error |" in text
    assert "LEASE_TTL > renew + MARGIN + STOP_TIMEOUT" in text
