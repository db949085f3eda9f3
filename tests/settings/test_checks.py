"""System checks of settings.WORKERS: one clear message per broken configuration, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from django.core import checks
from django.core.checks import run_checks
from django.test import override_settings

from django_workers import checks as workers_checks
from django_workers import settings as conf
from django_workers.checks import TAG, check_settings
from tests.scenarios.workers_fixtures import PATH
from tests.support import MANAGE, ROOT

CLASSIC = f"{PATH}.ClassicWorker"


def top(**keys: object) -> dict[str, object]:
    """A valid WORKERS with one worker, plus the given top-level keys."""
    return {"WORKERS": [CLASSIC], **keys}


def entry(**keys: object) -> dict[str, object]:
    """A WORKERS whose only worker is a dict entry with the given keys."""
    return {"WORKERS": [{"CLASS": CLASSIC, **keys}]}


def check(workers: object) -> list[checks.CheckMessage]:
    with override_settings(WORKERS=workers):
        return check_settings()


# (id, WORKERS, substrings of the message)
BROKEN: list[tuple[str, object, tuple[str, ...]]] = [
    # E001: not a dict
    ("E001", [CLASSIC], ("setting must be a dict", "(list)")),
    ("E001", None, ("setting must be a dict", "None (NoneType)")),
    # W001: unknown keys, with a "did you mean"
    (
        "W001",
        top(STOP_TIMOUT=5),
        ("unknown key 'STOP_TIMOUT'", "did you mean 'STOP_TIMEOUT'?"),
    ),
    ("W001", top(max_executions_attempts=2), ("did you mean 'MAX_EXECUTIONS_ATTEMPTS'?",)),
    ("W001", top(RESTART_BACKOFF={"INITAL": 1.0}), ("WORKERS['RESTART_BACKOFF']", "did you mean 'INITIAL'?")),
    ("W001", top(HISTORY={"ENABLE": False}), ("WORKERS['HISTORY']", "did you mean 'ENABLED'?")),
    ("W001", top(FLEET={"LEASE_TIL": 60}), ("WORKERS['FLEET']", "did you mean 'LEASE_TTL'?")),
    ("W001", entry(OPTION={}), ("WORKERS['WORKERS'][0]", "did you mean 'OPTIONS'?")),
    ("W001", top(QUEUE_BROKER_URL="amqp://"), ("unknown key 'QUEUE_BROKER_URL'",)),
    # E002: wrong types (a bool is not a number)
    ("E002", top(DEFERRED_START_THRESHOLD="3"), ("WORKERS['DEFERRED_START_THRESHOLD'] must be a number", "'3' (str)")),
    ("E002", top(DEFERRED_START_THRESHOLD=True), ("must be a number", "True (bool)")),
    ("E002", top(MAX_EXECUTIONS_ATTEMPTS=2.5), ("WORKERS['MAX_EXECUTIONS_ATTEMPTS'] must be an int", "2.5 (float)")),
    ("E002", top(MAX_EXECUTIONS_ATTEMPTS=False), ("must be an int", "False (bool)")),
    ("E002", top(STOP_TIMEOUT=None), ("WORKERS['STOP_TIMEOUT'] must be a number",)),
    ("E002", top(HISTORY_SIZE=10.0), ("WORKERS['HISTORY_SIZE'] must be an int",)),
    ("E002", top(RESTART_BACKOFF=5), ("WORKERS['RESTART_BACKOFF'] must be a dict",)),
    ("E002", top(RESTART_BACKOFF={"JITTER": "0.1"}), ("WORKERS['RESTART_BACKOFF']['JITTER'] must be a number",)),
    ("E002", top(HISTORY="yes"), ("WORKERS['HISTORY'] must be a dict",)),
    ("E002", top(HISTORY={"ENABLED": 1}), ("WORKERS['HISTORY']['ENABLED'] must be a bool", "1 (int)")),
    ("E002", top(HISTORY={"DATABASE": None}), ("WORKERS['HISTORY']['DATABASE'] must be a str",)),
    ("E002", top(METRICS={"NAMESPACE": 3}), ("WORKERS['METRICS']['NAMESPACE'] must be a str",)),
    ("E002", top(TRACING={"ENABLED": "true"}), ("WORKERS['TRACING']['ENABLED'] must be a bool",)),
    ("E002", {"WORKERS": CLASSIC}, ("WORKERS['WORKERS'] must be a list",)),
    ("E002", entry(OPTIONS=[("batch_size", 5)]), ("WORKERS['WORKERS'][0]['OPTIONS'] must be a dict",)),
    ("E002", {"WORKERS": [{"CLASS": 42}]}, ("WORKERS['WORKERS'][0]['CLASS'] must be a dotted path",)),
    ("E002", entry(MAX_EXECUTIONS_ATTEMPTS="4"), ("WORKERS['WORKERS'][0]['MAX_EXECUTIONS_ATTEMPTS'] must be an int",)),
    ("E002", entry(SINGLETON="yes"), ("WORKERS['WORKERS'][0]['SINGLETON'] must be a bool", "'yes' (str)")),
    ("E002", top(FLEET={"LEASE_TTL": "60"}), ("WORKERS['FLEET']['LEASE_TTL'] must be a number",)),
    # E003: out of range
    ("E003", top(DEFERRED_START_THRESHOLD=-1), ("WORKERS['DEFERRED_START_THRESHOLD'] must be >= 0",)),
    ("E003", top(MAX_EXECUTIONS_ATTEMPTS=-1), ("WORKERS['MAX_EXECUTIONS_ATTEMPTS'] must be >= 0",)),
    ("E003", top(STOP_TIMEOUT=0), ("WORKERS['STOP_TIMEOUT'] must be > 0",)),
    ("E003", top(STOP_TIMEOUT=float("nan")), ("WORKERS['STOP_TIMEOUT'] must be a finite number",)),
    ("E003", top(RESTART_BACKOFF={"INITIAL": -1}), ("initial must be >= 0",)),
    ("E003", top(RESTART_BACKOFF={"INITIAL": 5, "MAXIMUM": 1}), ("maximum (1.0) must be >= initial (5.0)",)),
    ("E003", top(RESTART_BACKOFF={"MULTIPLIER": 0.5}), ("multiplier must be >= 1",)),
    ("E003", top(RESTART_BACKOFF={"JITTER": 1.5}), ("jitter must be between 0 and 1",)),
    ("E003", top(HISTORY={"RETENTION_DAYS": 0}), ("WORKERS['HISTORY']['RETENTION_DAYS'] must be >= 1",)),
    ("E003", top(HISTORY_SIZE=0), ("WORKERS['HISTORY_SIZE'] must be >= 1",)),
    ("E003", top(FLEET={"MARGIN": 0}), ("WORKERS['FLEET']['MARGIN'] must be > 0",)),
    ("E003", top(FLEET={"RENEW_INTERVAL": 60}), ("RENEW_INTERVAL'] (60 s) must be shorter than LEASE_TTL (60 s)",)),
    ("E003", top(METRICS={"NAMESPACE": "my.app"}), ("'my.app'", "Prometheus")),
    ("E003", entry(DEFERRED_START_THRESHOLD=-0.5), ("WORKERS['WORKERS'][0]['DEFERRED_START_THRESHOLD'] must be >= 0",)),
    ("E003", entry(RESTART_BACKOFF={"MAXIMUM": 0.5}), ("WORKERS['WORKERS'][0]['RESTART_BACKOFF'] is out of range",)),
    # E004: unknown history or lease database
    ("E004", top(HISTORY={"ENABLED": True, "DATABASE": "history"}), ("'history'", "settings.DATABASES")),
    ("E004", top(FLEET={"DATABASE": "leases"}), ("WORKERS['FLEET']['DATABASE'] is 'leases'", "settings.DATABASES")),
    # E005, E006: malformed entries
    ("E005", {"WORKERS": [42]}, ("WORKERS['WORKERS'][0] must be a dotted path (str) or a dict", "42 (int)")),
    ("E006", {"WORKERS": [{"OPTIONS": {}}]}, ("WORKERS['WORKERS'][0] has no 'CLASS' key",)),
    # E007: the module does not exist (or the path is not a dotted path)
    ("E007", {"WORKERS": ["no_such_package_xyz.workers.Worker"]}, ("no module named 'no_such_package_xyz'",)),
    (
        "E007",
        {"WORKERS": ["tests.scenarios.no_such_module.Worker"]},
        ("no module named 'tests.scenarios.no_such_module'",),
    ),
    ("E007", {"WORKERS": ["ClassicWorker"]}, ("'ClassicWorker', which is not a dotted path",)),
    ("E007", {"WORKERS": [""]}, ("'', which is not a dotted path",)),
    # E008: the module exists, the attribute does not
    (
        "E008",
        {"WORKERS": [f"{PATH}.ClasicWorker"]},
        (f"module '{PATH}' has no attribute", "did you mean 'ClassicWorker'?"),
    ),
    # E009: the module exists but importing it fails
    (
        "E009",
        {"WORKERS": ["tests.scenarios.workers_name_error.BrokenWorker"]},
        ("NameError: name 'undefined_name' is not defined", "workers_name_error.py, line 5"),
    ),
    (
        "E009",
        {"WORKERS": ["tests.scenarios.workers_missing_dependency.DependentWorker"]},
        ("ModuleNotFoundError: No module named 'django_workers_missing_dependency'", "workers_missing_dependency.py"),
    ),
    # E010, E011: not a Worker class
    ("E010", {"WORKERS": [f"{PATH}.not_a_class"]}, ("which is not a class but a function",)),
    ("E010", {"WORKERS": [f"{PATH}.NOT_A_CLASS_EITHER"]}, ("which is not a class", "42 (int)")),
    ("E010", {"WORKERS": [f"{PATH}.AN_INSTANCE"]}, ("which is not a class but a Worker instance",)),
    ("E010", {"WORKERS": ["tests.scenarios.workers_fixtures"]}, ("which is not a class but a module",)),
    ("E010", {"WORKERS": [f"{PATH}.NotAWorker"]}, ("not a subclass of django_workers.Worker",)),
    ("E011", {"WORKERS": [f"{PATH}.NoRunWorker"]}, ("does not implement run(ctx)",)),
    # E020: run() is a generator, whose body would never run
    ("E020", {"WORKERS": [f"{PATH}.GeneratorRunWorker"]}, ("GeneratorRunWorker.run is a generator function",)),
    (
        "E020",
        {"WORKERS": [f"{PATH}.AsyncGeneratorRunWorker"]},
        ("AsyncGeneratorRunWorker.run is an async generator function",),
    ),
    # E012: the constructor raises with the given OPTIONS
    ("E012", {"WORKERS": [f"{PATH}.FailingConstructorWorker"]}, ("RuntimeError: cannot connect to the broker",)),
    (
        "E012",
        {"WORKERS": [{"CLASS": f"{PATH}.OptionsWorker", "OPTIONS": {"batch": 5}}]},
        ("OptionsWorker(**OPTIONS) raised TypeError", "'batch'"),
    ),
    # E013: invalid names
    ("E013", {"WORKERS": [f"{PATH}.EmptyNameWorker"]}, ("an empty name",)),
    ("E013", {"WORKERS": [f"{PATH}.IntNameWorker"]}, ("a name that is not a str: 42 (int)",)),
    ("E013", {"WORKERS": [f"{PATH}.RaisingNameWorker"]}, ("`name` raised KeyError: 'QUEUE'",)),
    # E014: duplicate names
    ("E014", {"WORKERS": [CLASSIC, CLASSIC]}, ("listed twice", "[0] and WORKERS['WORKERS'][1]")),
    (
        "E014",
        {"WORKERS": [CLASSIC, f"{PATH}.SameNameAsClassicWorker"]},
        ("'classic' is used by both", CLASSIC, f"{PATH}.SameNameAsClassicWorker"),
    ),
    # E021: a singleton's lease too short to retry a renewal before the worker must be stopped
    (
        "E021",
        entry(SINGLETON=True) | {"STOP_TIMEOUT": 100},
        ("WORKERS['FLEET']['LEASE_TTL'] is 60 seconds", "(20 + 1 + 100 = 121 seconds"),
    ),
    ("E021", top(STOP_TIMEOUT=25, FLEET={"LEASE_TTL": 46, "RENEW_INTERVAL": 20}), ("(20 + 1 + 25 = 46 seconds)",)),
    # W002: no worker (a web process needs none)
    ("W002", {"WORKERS": []}, ("WORKERS['WORKERS'] is empty",)),
    ("W002", {}, ("WORKERS['WORKERS'] is not set",)),
]


def test_a_missing_workers_setting_means_defaults_and_no_worker() -> None:
    from django.conf import settings

    with override_settings():
        del settings.WORKERS
        messages = check_settings()
        loaded = conf.load_settings()
    [message] = messages
    assert message.id == "django_workers.W002"
    assert message.msg == "The WORKERS setting is not set: no worker is configured."
    assert loaded == conf.WorkersSettings()


@pytest.mark.parametrize(
    ("code", "workers", "fragments"),
    BROKEN,
    ids=[f"{code}-{index}" for index, (code, _, _) in enumerate(BROKEN)],
)
def test_each_broken_configuration_gives_exactly_one_message(
    code: str, workers: object, fragments: tuple[str, ...]
) -> None:
    messages = check(workers)

    assert len(messages) == 1, "\n".join(map(str, messages))
    [message] = messages
    assert message.id == f"django_workers.{code}"
    assert message.level == (checks.WARNING if code.startswith("W") else checks.ERROR)
    for fragment in fragments:
        assert fragment in message.msg
    assert message.hint, "every message says how to fix it"
    assert "Traceback" not in message.msg


def test_the_table_covers_every_id_but_the_crash_guard() -> None:
    documented = {f"E{n:03d}" for n in range(1, 15)} | {"E020", "E021", "W001", "W002"}
    assert {code for code, _, _ in BROKEN} == documented


def test_a_valid_configuration_has_no_message() -> None:
    workers = {
        "DEFERRED_START_THRESHOLD": 0,
        "MAX_EXECUTIONS_ATTEMPTS": 0,
        "RESTART_BACKOFF": {"INITIAL": 0},
        "STOP_TIMEOUT": 5,
        "HISTORY_SIZE": 1,
        "HISTORY": {"ENABLED": True, "DATABASE": "default", "RETENTION_DAYS": 1},
        "METRICS": {"ENABLED": False, "NAMESPACE": "my_app", "SUBSYSTEM": "jobs"},
        "TRACING": {"ENABLED": False},
        "WORKERS": [
            CLASSIC,
            f"{PATH}.AsyncWorker",
            {"CLASS": f"{PATH}.OptionsWorker", "OPTIONS": {"queue": "a"}},
            {"CLASS": f"{PATH}.OptionsWorker", "OPTIONS": {"queue": "b"}, "RESTART_BACKOFF": None},
        ],
    }
    assert check(workers) == []


def test_the_testproject_settings_pass_the_checks_without_error() -> None:
    assert [message for message in check_settings() if message.is_serious()] == []


def test_a_syntax_error_in_a_worker_module_shows_file_and_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "workers_syntax_error.py").write_text(
        "from django_workers import Worker\n\nclass W(Worker)\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))

    [message] = check({"WORKERS": ["workers_syntax_error.W"]})

    assert message.id == "django_workers.E009"
    assert "SyntaxError:" in message.msg
    assert "workers_syntax_error.py, line 3" in message.msg
    assert "python -c 'import workers_syntax_error'" in message.hint


def test_a_module_exiting_at_import_is_reported_not_obeyed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "workers_exiting.py").write_text("raise SystemExit('no workers here')\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    [message] = check({"WORKERS": ["workers_exiting.W"]})

    assert message.id == "django_workers.E009"
    assert "SystemExit: no workers here" in message.msg


def test_several_problems_give_one_message_each() -> None:
    messages = check(
        {
            "STOP_TIMEOUT": -1,
            "RETRIES": 3,
            "WORKERS": [CLASSIC, f"{PATH}.Missing", {"CLASS": f"{PATH}.OptionsWorker", "OPTIONS": {"nope": 1}}],
        }
    )
    assert sorted(message.id for message in messages) == [
        "django_workers.E003",
        "django_workers.E008",
        "django_workers.E012",
        "django_workers.W001",
    ]


def test_a_wrong_override_and_a_wrong_class_in_one_entry_are_both_reported() -> None:
    messages = check({"WORKERS": [{"CLASS": f"{PATH}.NotAWorker", "MAX_EXECUTIONS_ATTEMPTS": -1}]})
    assert sorted(message.id for message in messages) == ["django_workers.E003", "django_workers.E010"]


def test_the_hint_of_a_missing_attribute_lists_the_module_workers() -> None:
    [message] = check({"WORKERS": [f"{PATH}.Nothing"]})
    assert message.id == "django_workers.E008"
    assert "ClassicWorker" in message.hint
    assert "OptionsWorker" in message.hint


def test_the_hint_of_a_constructor_error_shows_the_signature() -> None:
    [message] = check({"WORKERS": [{"CLASS": f"{PATH}.OptionsWorker", "OPTIONS": {"batch": 5}}]})
    assert "OptionsWorker(queue='default', batch_size=10)" in message.hint
    assert "given: batch" in message.hint


def test_the_history_database_is_checked_when_history_is_enabled_or_the_alias_given() -> None:
    assert check(top(HISTORY={"ENABLED": False})) == []
    assert check(top(HISTORY={"ENABLED": False, "DATABASE": "nope"}))[0].id == "django_workers.E004"
    validation = conf.validate_settings(top(HISTORY={"ENABLED": True}), databases={"other": {}})
    [message] = validation.messages
    assert validation.settings is None
    assert message.id == "django_workers.E004"
    assert "'other'" in message.hint


def test_the_check_is_registered_with_its_tag() -> None:
    with override_settings(WORKERS=top(STOP_TIMEOUT=0)):
        messages = run_checks(tags=[TAG])
    assert [message.id for message in messages] == ["django_workers.E003"]


def test_the_check_is_skipped_when_other_apps_are_checked() -> None:
    from django.apps import apps

    with override_settings(WORKERS=top(STOP_TIMEOUT=0)):
        assert check_settings(app_configs=[apps.get_app_config("auth")]) == []
        assert len(check_settings(app_configs=[apps.get_app_config("django_workers")])) == 1


def test_the_check_never_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    def crash(*args: object, **kwargs: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(workers_checks, "validate_settings", crash)

    [message] = check_settings()

    assert message.id == "django_workers.E015"
    assert "RuntimeError: bug" in message.msg
    assert message.hint


def test_the_messages_print_the_django_way() -> None:
    [message] = check(top(STOP_TIMEOUT=0))
    assert str(message).startswith("?: (django_workers.E003) WORKERS['STOP_TIMEOUT'] must be > 0 seconds, got 0.")
    assert "\n\tHINT: " in str(message)


@pytest.mark.slow
def test_manage_py_check_prints_the_messages_and_exits_1_without_traceback() -> None:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.scenarios.settings_broken_workers"}
    result = subprocess.run(
        [sys.executable, str(MANAGE), "check"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output
    assert "SystemCheckError" in output
    assert "(django_workers.E003) WORKERS['STOP_TIMEOUT'] must be > 0 seconds, got -1." in output
    assert "(django_workers.E009)" in output
    assert "NameError: name 'undefined_name' is not defined" in output
    assert "workers_name_error.py, line 5" in output
    assert "HINT:" in output


@pytest.mark.slow
def test_manage_py_check_passes_on_the_testproject() -> None:
    result = subprocess.run(
        [sys.executable, str(MANAGE), "check"],
        cwd=ROOT,
        env={key: value for key, value in os.environ.items() if key != "DJANGO_SETTINGS_MODULE"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_load_settings_raises_the_check_messages() -> None:
    from django.core.exceptions import ImproperlyConfigured

    with override_settings(WORKERS=top(STOP_TIMEOUT=0)), pytest.raises(ImproperlyConfigured) as info:
        conf.load_settings()
    assert "(django_workers.E003) WORKERS['STOP_TIMEOUT'] must be > 0 seconds" in str(info.value)
    assert "HINT:" in str(info.value)


def test_load_settings_ignores_warnings() -> None:
    with override_settings(WORKERS=top(STOP_TIMOUT=3)):
        loaded = conf.load_settings()
    assert loaded.stop_timeout == conf.WorkersSettings().stop_timeout
    assert loaded.worker_names() == ["classic"]


def test_checks_and_load_settings_agree_on_every_broken_configuration() -> None:
    from django.core.exceptions import ImproperlyConfigured

    for code, workers, _ in BROKEN:
        with override_settings(WORKERS=workers):
            if code.startswith("E"):
                with pytest.raises(ImproperlyConfigured, match=f"django_workers.{code}"):
                    conf.load_settings()
            else:
                conf.load_settings()


def test_source_of_the_fixture_module_lines() -> None:
    # The E009 case above names line 5 of workers_name_error.py: keep the two in step.
    source = (Path(__file__).parents[1] / "scenarios" / "workers_name_error.py").read_text().splitlines()
    assert "undefined_name" in source[4]
    assert textwrap.dedent(source[4]).startswith("VALUE =")


@pytest.mark.parametrize(("given", "sanitised"), [("My-App", "my_app"), ("shop jobs", "shop_jobs"), ("", "")])
def test_metric_namespace_and_subsystem_are_sanitised_as_yokai_does(given: str, sanitised: str) -> None:
    validation = conf.validate_settings(top(METRICS={"NAMESPACE": given, "SUBSYSTEM": given}))
    assert validation.errors == ()
    assert validation.settings is not None
    assert (validation.settings.metrics.namespace, validation.settings.metrics.subsystem) == (sanitised, sanitised)
