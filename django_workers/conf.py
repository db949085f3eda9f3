"""Settings: ``settings.WORKERS`` parsed, validated and turned into a configured pool.

Validation lives in one function, :func:`validate_settings`. The system checks
(:mod:`django_workers.checks`) report its messages; :func:`load_settings` raises them as
``ImproperlyConfigured``; so the two can never disagree. ``settings.WORKERS`` is read on every
call, never at import time (``override_settings`` and ``setting_changed`` just work).

Validating the workers imports their modules and calls each class with its ``OPTIONS`` once, to
learn its name: worker constructors must be cheap and side-effect free (connect in ``run()``).

Every key, its type, default and meaning, and every check id, are documented in
``docs/settings.md``.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import inspect
import math
import os
import re
import reprlib
import threading
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType, ModuleType
from typing import TYPE_CHECKING, Any, Final

from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from . import db
from .core.backoff import Backoff
from .core.worker import Worker
from .pool import WorkerPool
from .services import ProcessService

if TYPE_CHECKING:
    from .metrics import WorkerMetrics

__all__ = [
    "HealthSettings",
    "HistorySettings",
    "MetricsSettings",
    "SettingsValidation",
    "TracingSettings",
    "WorkerSpec",
    "WorkersSettings",
    "build_pool",
    "load_settings",
    "pool_metrics",
    "pool_tracing",
    "select_workers",
    "tracer_provider",
    "validate_settings",
]

#: The name of the Django setting.
SETTING: Final = "WORKERS"

DEFAULT_DEFERRED_START_THRESHOLD: Final = 0.0
DEFAULT_MAX_EXECUTIONS_ATTEMPTS: Final = 1
DEFAULT_RESTART_BACKOFF: Final = Backoff(initial=1.0, maximum=30.0, multiplier=2.0, jitter=0.1)
DEFAULT_STOP_TIMEOUT: Final = 25.0
DEFAULT_HISTORY_SIZE: Final = 100

# -- check ids (documented in docs/settings.md) ----------------------------------------------------

E_NOT_A_DICT: Final = "django_workers.E001"
E_WRONG_TYPE: Final = "django_workers.E002"
E_OUT_OF_RANGE: Final = "django_workers.E003"
E_UNKNOWN_DATABASE: Final = "django_workers.E004"
E_BAD_ENTRY: Final = "django_workers.E005"
E_NO_CLASS: Final = "django_workers.E006"
E_MODULE_NOT_FOUND: Final = "django_workers.E007"
E_ATTRIBUTE_NOT_FOUND: Final = "django_workers.E008"
E_IMPORT_FAILED: Final = "django_workers.E009"
E_NOT_A_WORKER: Final = "django_workers.E010"
E_NO_RUN: Final = "django_workers.E011"
E_CONSTRUCTOR_FAILED: Final = "django_workers.E012"
E_BAD_NAME: Final = "django_workers.E013"
E_DUPLICATE_NAME: Final = "django_workers.E014"
E_CHECK_CRASHED: Final = "django_workers.E015"
W_UNKNOWN_KEY: Final = "django_workers.W001"
W_NO_WORKERS: Final = "django_workers.W002"
E_TRACER_PROVIDER_NOT_FOUND: Final = "django_workers.E016"
E_TRACER_PROVIDER_NOT_CALLABLE: Final = "django_workers.E017"
W_NO_OPENTELEMETRY: Final = "django_workers.W003"
W_NO_PROMETHEUS_CLIENT: Final = "django_workers.W004"
E_RESTART_WITHOUT_SILENCE: Final = "django_workers.E018"
E_HEALTH_PORT_CONFLICT: Final = "django_workers.E019"
W_SHORT_ORPHAN_GRACE: Final = "django_workers.W005"

# -- the parsed settings ---------------------------------------------------------------------------


@dataclass(frozen=True)
class HistorySettings:
    """``WORKERS["HISTORY"]``: storing executions and their events in the database."""

    enabled: bool = False
    database: str = "default"
    retention_days: int = 7
    #: Seconds between two heartbeats of a ``runworkers`` node (its row's ``last_heartbeat``).
    heartbeat_interval: float = 10.0
    #: Seconds without a heartbeat after which a node's open executions are closed as ``error``;
    #: ``None``: three heartbeat intervals (see :attr:`grace`).
    orphan_grace: float | None = None
    #: Events kept in memory while the database is unreachable or slow (the oldest are dropped beyond).
    buffer_size: int = 1_000
    #: Events written per transaction, at most.
    batch_size: int = 1_000

    @property
    def grace(self) -> float:
        """The orphan grace period in effect, in seconds."""
        return 3 * self.heartbeat_interval if self.orphan_grace is None else self.orphan_grace


@dataclass(frozen=True)
class MetricsSettings:
    """``WORKERS["METRICS"]``: Prometheus counters (``[namespace_][subsystem_]worker_…``)."""

    enabled: bool = True
    namespace: str = ""
    subsystem: str = ""
    #: Port of the endpoint ``runworkers`` serves the metrics on (0: any free port); None: no endpoint.
    port: int | None = None
    #: Address that endpoint binds ("": every interface).
    address: str = "127.0.0.1"


@dataclass(frozen=True)
class TracingSettings:
    """``WORKERS["TRACING"]``: one OpenTelemetry span per attempt, annotation of spans inside workers."""

    enabled: bool = True
    #: Dotted path of a zero-argument factory returning the pool's TracerProvider; None: the global one.
    provider: str | None = None


@dataclass(frozen=True)
class HealthSettings:
    """``WORKERS["HEALTH"]``: the ``/livez`` and ``/readyz`` endpoint of ``runworkers`` (worker pods)."""

    #: Port of the endpoint (0: any free port, logged); None: no endpoint unless ``--health-port``.
    port: int | None = None
    #: Address that endpoint binds; "0.0.0.0" for a Kubernetes httpGet probe (it calls the pod's IP).
    address: str = "127.0.0.1"


@dataclass(frozen=True)
class WorkerSpec:
    """One validated entry of ``WORKERS["WORKERS"]``.

    The overrides are ``None`` when the entry does not set them (the pool's value applies).
    """

    path: str
    worker_class: type[Worker]
    name: str
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), hash=False)
    deferred_start_threshold: float | None = None
    max_executions_attempts: int | None = None
    restart_backoff: Backoff | None = None
    #: Hang detection: seconds without ``ctx.heartbeat()`` after which the worker is silent (unhealthy).
    max_silence: float | None = None
    #: Cancel (and restart, attempts permitting) a silent attempt.
    restart_on_silence: bool = False

    def instantiate(self) -> Worker:
        """A new instance of the worker class, with ``OPTIONS`` as keyword arguments."""
        return self.worker_class(**dict(self.options))


@dataclass(frozen=True)
class WorkersSettings:
    """``settings.WORKERS``, validated, with every default filled in."""

    deferred_start_threshold: float = DEFAULT_DEFERRED_START_THRESHOLD
    max_executions_attempts: int = DEFAULT_MAX_EXECUTIONS_ATTEMPTS
    restart_backoff: Backoff = DEFAULT_RESTART_BACKOFF
    stop_timeout: float = DEFAULT_STOP_TIMEOUT
    history_size: int = DEFAULT_HISTORY_SIZE
    history: HistorySettings = field(default_factory=HistorySettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    tracing: TracingSettings = field(default_factory=TracingSettings)
    health: HealthSettings = field(default_factory=HealthSettings)
    workers: tuple[WorkerSpec, ...] = ()

    def worker_names(self) -> list[str]:
        """The configured worker names, in configured order."""
        return [spec.name for spec in self.workers]


@dataclass(frozen=True)
class SettingsValidation:
    """The outcome of :func:`validate_settings`.

    ``settings`` is ``None`` when ``messages`` holds an error; warnings alone leave it set.
    """

    settings: WorkersSettings | None
    messages: tuple[checks.CheckMessage, ...]

    @property
    def errors(self) -> tuple[checks.CheckMessage, ...]:
        """The messages of level ERROR or above."""
        return tuple(message for message in self.messages if message.is_serious())


# -- the known keys ----------------------------------------------------------------------------------

_TOP_KEYS: Final = (
    "DEFERRED_START_THRESHOLD",
    "MAX_EXECUTIONS_ATTEMPTS",
    "RESTART_BACKOFF",
    "STOP_TIMEOUT",
    "HISTORY_SIZE",
    "HISTORY",
    "METRICS",
    "TRACING",
    "HEALTH",
    "WORKERS",
)
_BACKOFF_KEYS: Final = ("INITIAL", "MAXIMUM", "MULTIPLIER", "JITTER")
_HISTORY_KEYS: Final = (
    "ENABLED",
    "DATABASE",
    "RETENTION_DAYS",
    "HEARTBEAT_INTERVAL",
    "ORPHAN_GRACE",
    "BUFFER_SIZE",
    "BATCH_SIZE",
)
_METRICS_KEYS: Final = ("ENABLED", "NAMESPACE", "SUBSYSTEM", "PORT", "ADDRESS")
_TRACING_KEYS: Final = ("ENABLED", "PROVIDER")
_HEALTH_KEYS: Final = ("PORT", "ADDRESS")
_ENTRY_KEYS: Final = (
    "CLASS",
    "OPTIONS",
    "DEFERRED_START_THRESHOLD",
    "MAX_EXECUTIONS_ATTEMPTS",
    "RESTART_BACKOFF",
    "MAX_SILENCE",
    "RESTART_ON_SILENCE",
)

_PROMETHEUS_NAME: Final = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_MISSING: Final[Any] = object()

_short = reprlib.Repr()
_short.maxstring = 60
_short.maxother = 60


def _got(value: object) -> str:
    return f"{_short.repr(value)} ({type(value).__qualname__})"


def _where(*keys: object) -> str:
    return SETTING + "".join(f"[{key!r}]" for key in keys)


def _did_you_mean(word: object, candidates: Sequence[str]) -> str | None:
    if not isinstance(word, str):
        return None
    for probe in (word, word.upper()):
        matches = difflib.get_close_matches(probe, candidates, n=1, cutoff=0.6)
        if matches:
            return matches[0]
    return None


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _importable(module: str) -> bool:
    """Whether an optional dependency (``prometheus_client``, ``opentelemetry.trace``) can be imported."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def _relative(path: str) -> str:
    try:
        relative = os.path.relpath(path)
    except ValueError:  # another drive on Windows
        return path
    return path if relative.startswith("..") else relative


def _describe_exception(exc: BaseException) -> str:
    """``Type: message (file, line N)``: one line, the innermost frame that is real code."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{type(exc).__name__}: {exc.msg} ({_relative(exc.filename)}, line {exc.lineno})"
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    frames = [frame for frame in traceback.extract_tb(exc.__traceback__) if not frame.filename.startswith("<")]
    if frames and frames[-1].filename != __file__:
        text += f" ({_relative(frames[-1].filename)}, line {frames[-1].lineno})"
    return text


def _signature(cls: type) -> str:
    """``Name(a, b=1)``: the constructor's parameters without annotations, or ``""``."""
    with contextlib.suppress(TypeError, ValueError):
        signature = inspect.signature(cls)
        bare = signature.replace(
            parameters=[parameter.replace(annotation=parameter.empty) for parameter in signature.parameters.values()],
            return_annotation=signature.empty,
        )
        return f"{cls.__name__}{bare}"
    return ""


class _Validator:
    """Walks ``settings.WORKERS`` once, collecting check messages and the parsed values."""

    def __init__(self, databases: object) -> None:
        self.databases = databases
        self.messages: list[checks.CheckMessage] = []

    # -- messages ------------------------------------------------------------------------------

    def error(self, id: str, msg: str, hint: str) -> None:
        self.messages.append(checks.Error(msg, hint=hint, id=id))

    def warning(self, id: str, msg: str, hint: str) -> None:
        self.messages.append(checks.Warning(msg, hint=hint, id=id))

    def wrong_type(self, where: str, value: object, expected: str, example: str) -> None:
        self.error(E_WRONG_TYPE, f"{where} must be {expected}, got {_got(value)}.", f"Write it as, e.g., {example}.")

    # -- values --------------------------------------------------------------------------------

    def section(self, keys: tuple[object, ...], value: object, known: Sequence[str], example: str) -> dict[str, Any]:
        """A dict sub-setting: its known keys (unknown ones warned about); ``{}`` when invalid."""
        where = _where(*keys)
        if not isinstance(value, Mapping):
            self.wrong_type(where, value, "a dict", example)
            return {}
        for key in value:
            if key in known:
                continue
            suggestion = _did_you_mean(key, known)
            if suggestion is not None:
                msg = f"{where} has an unknown key {key!r}; did you mean {suggestion!r}?"
                hint = f"Rename {key!r} to {suggestion!r}; unknown keys are ignored."
            else:
                msg = f"{where} has an unknown key {key!r}."
                hint = f"Remove it; unknown keys are ignored. Known keys: {', '.join(known)}."
            self.warning(W_UNKNOWN_KEY, msg, hint)
        return {key: value[key] for key in known if key in value}

    def seconds(self, keys: tuple[object, ...], value: object, *, positive: bool = False) -> float | None:
        where = _where(*keys)
        name = keys[-1]
        if not _is_number(value):
            self.wrong_type(where, value, "a number of seconds (int or float)", f"{name!r}: 2.5")
            return None
        assert isinstance(value, int | float)
        seconds = float(value)
        if math.isnan(seconds) or math.isinf(seconds):
            self.error(E_OUT_OF_RANGE, f"{where} must be a finite number, got {value!r}.", "Use a finite number.")
            return None
        if positive and seconds <= 0:
            self.error(
                E_OUT_OF_RANGE,
                f"{where} must be > 0 seconds, got {value!r}.",
                "Use a positive number of seconds, below the grace period of your process manager "
                "(Kubernetes waits 30 seconds before SIGKILL).",
            )
            return None
        if seconds < 0:
            self.error(
                E_OUT_OF_RANGE,
                f"{where} must be >= 0 seconds, got {value!r}.",
                "Use 0 to start at once, or a positive number of seconds.",
            )
            return None
        return seconds

    def count(self, keys: tuple[object, ...], value: object, *, minimum: int, meaning: str) -> int | None:
        where = _where(*keys)
        if not _is_int(value):
            self.wrong_type(where, value, "an int", f"{keys[-1]!r}: {max(minimum, 1)}")
            return None
        assert isinstance(value, int)
        if value < minimum:
            self.error(E_OUT_OF_RANGE, f"{where} must be >= {minimum}, got {value!r}.", meaning)
            return None
        return value

    def attempts(self, keys: tuple[object, ...], value: object) -> int | None:
        meaning = "Use 0 for unlimited attempts, 1 to never restart, n for at most n attempts."
        return self.count(keys, value, minimum=0, meaning=meaning)

    def boolean(self, keys: tuple[object, ...], value: object) -> bool | None:
        if not isinstance(value, bool):
            self.wrong_type(_where(*keys), value, "a bool", f"{keys[-1]!r}: True")
            return None
        return value

    def text(self, keys: tuple[object, ...], value: object, example: str) -> str | None:
        if not isinstance(value, str):
            self.wrong_type(_where(*keys), value, "a str", example)
            return None
        return value

    def backoff(self, keys: tuple[object, ...], value: object, base: Backoff) -> Backoff | None:
        """A ``RESTART_BACKOFF`` dict (missing keys taken from ``base``) or a ``Backoff``."""
        if isinstance(value, Backoff):
            return value
        where = _where(*keys)
        example = f"{keys[-1]!r}: {{'INITIAL': 1.0, 'MAXIMUM': 30.0, 'MULTIPLIER': 2.0, 'JITTER': 0.1}}"
        if not isinstance(value, Mapping):
            self.wrong_type(where, value, "a dict (or a django_workers.Backoff)", example)
            return None
        given = self.section(keys, value, _BACKOFF_KEYS, example)
        numbers: dict[str, float] = {
            "initial": base.initial,
            "maximum": base.maximum,
            "multiplier": base.multiplier,
            "jitter": base.jitter,
        }
        valid = True
        for key, number in given.items():
            if not _is_number(number):
                self.wrong_type(_where(*keys, key), number, "a number (int or float)", f"{key!r}: 1.0")
                valid = False
            else:
                numbers[key.lower()] = number
        if not valid:
            return None
        try:
            return Backoff(**numbers)
        except (TypeError, ValueError) as exc:
            self.error(
                E_OUT_OF_RANGE,
                f"{where} is out of range: {exc}.",
                "Use INITIAL >= 0 (0 restarts at once), MAXIMUM >= INITIAL, MULTIPLIER >= 1 and "
                "JITTER between 0 and 1. Missing keys are taken from the defaults (for a worker, from the "
                "pool's RESTART_BACKOFF).",
            )
            return None

    # -- the whole setting -----------------------------------------------------------------------

    def validate(self, raw: object) -> WorkersSettings | None:
        if raw is _MISSING:
            self.warning(
                W_NO_WORKERS,
                f"The {SETTING} setting is not set: no worker is configured.",
                f"That is fine for a web process; set {SETTING} = {{'WORKERS': ['myapp.workers.MyWorker']}} "
                f"for `manage.py runworkers` to have something to run.",
            )
            return WorkersSettings()
        if not isinstance(raw, Mapping):
            self.error(
                E_NOT_A_DICT,
                f"The {SETTING} setting must be a dict, got {_got(raw)}.",
                f"Write {SETTING} = {{'WORKERS': ['myapp.workers.MyWorker']}}; see docs/settings.md.",
            )
            return None
        top = self.section((), raw, _TOP_KEYS, f"{SETTING} = {{'WORKERS': ['myapp.workers.MyWorker']}}")
        result: dict[str, Any] = {}

        if "DEFERRED_START_THRESHOLD" in top:
            result["deferred_start_threshold"] = self.seconds(
                ("DEFERRED_START_THRESHOLD",), top["DEFERRED_START_THRESHOLD"]
            )
        if "MAX_EXECUTIONS_ATTEMPTS" in top:
            result["max_executions_attempts"] = self.attempts(
                ("MAX_EXECUTIONS_ATTEMPTS",), top["MAX_EXECUTIONS_ATTEMPTS"]
            )
        backoff = DEFAULT_RESTART_BACKOFF
        if "RESTART_BACKOFF" in top:
            parsed_backoff = self.backoff(("RESTART_BACKOFF",), top["RESTART_BACKOFF"], DEFAULT_RESTART_BACKOFF)
            result["restart_backoff"] = parsed_backoff
            backoff = parsed_backoff or DEFAULT_RESTART_BACKOFF
        if "STOP_TIMEOUT" in top:
            result["stop_timeout"] = self.seconds(("STOP_TIMEOUT",), top["STOP_TIMEOUT"], positive=True)
        if "HISTORY_SIZE" in top:
            result["history_size"] = self.count(
                ("HISTORY_SIZE",),
                top["HISTORY_SIZE"],
                minimum=1,
                meaning="It is the number of events kept in memory per worker; use at least 1 (default 100).",
            )
        if "HISTORY" in top:
            result["history"] = self.history(top["HISTORY"])
        if "METRICS" in top:
            result["metrics"] = self.metrics(top["METRICS"])
        if "TRACING" in top:
            result["tracing"] = self.tracing(top["TRACING"])
        if "HEALTH" in top:
            result["health"] = self.health(top["HEALTH"], result.get("metrics"))
        self.optional_dependencies(result.get("metrics", MetricsSettings()), result.get("tracing", TracingSettings()))
        result["workers"] = self.workers(top.get("WORKERS", _MISSING), backoff)

        if any(message.is_serious() for message in self.messages):
            return None
        return WorkersSettings(**result)

    def history(self, value: object) -> HistorySettings | None:
        example = "'HISTORY': {'ENABLED': True, 'DATABASE': 'default', 'RETENTION_DAYS': 7}"
        given = self.section(("HISTORY",), value, _HISTORY_KEYS, example)
        default = HistorySettings()
        enabled = self.boolean(("HISTORY", "ENABLED"), given["ENABLED"]) if "ENABLED" in given else default.enabled
        database = (
            self.text(("HISTORY", "DATABASE"), given["DATABASE"], "'DATABASE': 'default'")
            if "DATABASE" in given
            else default.database
        )
        retention = (
            self.count(
                ("HISTORY", "RETENTION_DAYS"),
                given["RETENTION_DAYS"],
                minimum=1,
                meaning="Keep stored executions at least 1 day (default 7).",
            )
            if "RETENTION_DAYS" in given
            else default.retention_days
        )
        if (
            database is not None
            and (enabled or "DATABASE" in given)
            and isinstance(self.databases, Mapping)
            and database not in self.databases
        ):
            aliases = ", ".join(repr(alias) for alias in self.databases) or "none"
            self.error(
                E_UNKNOWN_DATABASE,
                f"{_where('HISTORY', 'DATABASE')} is {database!r}, which is not a key of settings.DATABASES.",
                f"Use one of the configured database aliases ({aliases}), or add {database!r} to DATABASES.",
            )
            return None
        recorder = self.history_recorder(given, default)
        if enabled is None or database is None or retention is None or recorder is None:
            return None
        return HistorySettings(enabled=enabled, database=database, retention_days=retention, **recorder)

    def history_recorder(self, given: Mapping[str, Any], default: HistorySettings) -> dict[str, Any] | None:
        """The recorder's keys of ``HISTORY`` (heartbeat, orphan grace, buffer, batch); None when invalid."""

        def positive_seconds(key: str, meaning: str) -> float | None:
            keys = ("HISTORY", key)
            value = given[key]
            if not _is_number(value) or not math.isfinite(value):
                if _is_number(value):
                    self.error(E_OUT_OF_RANGE, f"{_where(*keys)} must be a finite number, got {value!r}.", meaning)
                else:
                    self.wrong_type(_where(*keys), value, "a number of seconds (int or float)", f"{key!r}: 10")
                return None
            if value <= 0:
                self.error(E_OUT_OF_RANGE, f"{_where(*keys)} must be > 0 seconds, got {value!r}.", meaning)
                return None
            return float(value)

        parsed: dict[str, Any] = {}
        valid = True
        if "HEARTBEAT_INTERVAL" in given:
            heartbeat = positive_seconds(
                "HEARTBEAT_INTERVAL", "It is how often each runworkers process updates its node row (default 10)."
            )
            valid &= heartbeat is not None
            parsed["heartbeat_interval"] = heartbeat
        for key, meaning in (
            ("BUFFER_SIZE", "It is how many events wait in memory while the database is unreachable (default 1000)."),
            ("BATCH_SIZE", "It is how many events are written per transaction (default 1000)."),
        ):
            if key in given:
                count = self.count(("HISTORY", key), given[key], minimum=1, meaning=meaning)
                valid &= count is not None
                parsed[key.lower()] = count
        if given.get("ORPHAN_GRACE") is not None:
            grace = positive_seconds(
                "ORPHAN_GRACE", "Use a few heartbeat intervals (default: 3 x HEARTBEAT_INTERVAL), or None."
            )
            valid &= grace is not None
            parsed["orphan_grace"] = grace
            heartbeat = parsed.get("heartbeat_interval", default.heartbeat_interval)
            if grace is not None and heartbeat is not None:
                where = _where("HISTORY", "ORPHAN_GRACE")
                if grace <= heartbeat:
                    self.error(
                        E_OUT_OF_RANGE,
                        f"{where} ({grace:g} s) must be longer than HEARTBEAT_INTERVAL ({heartbeat:g} s).",
                        "A node is declared lost after ORPHAN_GRACE seconds without a heartbeat: use a few "
                        "heartbeat intervals (the default is 3 x HEARTBEAT_INTERVAL).",
                    )
                    valid = False
                elif grace < 2 * heartbeat:
                    self.warning(
                        W_SHORT_ORPHAN_GRACE,
                        f"{where} ({grace:g} s) is less than twice HEARTBEAT_INTERVAL ({heartbeat:g} s): one "
                        f"late heartbeat gets the executions of a live node closed as lost.",
                        "Use at least 2 (by default 3) heartbeat intervals.",
                    )
        return parsed if valid else None

    def metrics(self, value: object) -> MetricsSettings | None:
        example = "'METRICS': {'ENABLED': True, 'NAMESPACE': 'myapp', 'SUBSYSTEM': ''}"
        given = self.section(("METRICS",), value, _METRICS_KEYS, example)
        default = MetricsSettings()
        enabled = self.boolean(("METRICS", "ENABLED"), given["ENABLED"]) if "ENABLED" in given else default.enabled
        parts: dict[str, str | None] = {}
        for key in ("NAMESPACE", "SUBSYSTEM"):
            part = self.text(("METRICS", key), given[key], f"{key!r}: 'myapp'") if key in given else ""
            if part and not _PROMETHEUS_NAME.fullmatch(part):
                self.error(
                    E_OUT_OF_RANGE,
                    f"{_where('METRICS', key)} is {part!r}, which is not valid in a Prometheus metric name.",
                    "Use letters, digits and underscores only, not starting with a digit (or '' for none).",
                )
                part = None
            parts[key] = part
        namespace, subsystem = parts["NAMESPACE"], parts["SUBSYSTEM"]
        port: int | None = None
        valid_port = True
        if given.get("PORT") is not None:
            port = self.count(
                ("METRICS", "PORT"),
                given["PORT"],
                minimum=0,
                meaning="Use a TCP port number from 1 to 65535 (0: any free port, logged), or None for no endpoint.",
            )
            if port is not None and port > 65535:
                self.error(
                    E_OUT_OF_RANGE,
                    f"{_where('METRICS', 'PORT')} must be <= 65535, got {port!r}.",
                    "Use a TCP port number from 1 to 65535 (0: any free port, logged), or None for no endpoint.",
                )
                port = None
            valid_port = port is not None
        address = (
            self.text(("METRICS", "ADDRESS"), given["ADDRESS"], "'ADDRESS': '127.0.0.1'")
            if "ADDRESS" in given
            else default.address
        )
        if enabled is None or namespace is None or subsystem is None or not valid_port or address is None:
            return None
        return MetricsSettings(enabled=enabled, namespace=namespace, subsystem=subsystem, port=port, address=address)

    def tracing(self, value: object) -> TracingSettings | None:
        given = self.section(("TRACING",), value, _TRACING_KEYS, "'TRACING': {'ENABLED': True}")
        enabled = self.boolean(("TRACING", "ENABLED"), given["ENABLED"]) if "ENABLED" in given else True
        provider: str | None = None
        if given.get("PROVIDER") is not None and _importable("opentelemetry.trace"):
            # Without opentelemetry tracing is off (W003): the factory, which needs it, is not imported.
            provider = self.tracer_provider(given["PROVIDER"])
            if provider is None:
                return None
        return None if enabled is None else TracingSettings(enabled=enabled, provider=provider)

    def health(self, value: object, metrics: MetricsSettings | None) -> HealthSettings | None:
        example = "'HEALTH': {'PORT': 8081, 'ADDRESS': '127.0.0.1'}"
        given = self.section(("HEALTH",), value, _HEALTH_KEYS, example)
        default = HealthSettings()
        meaning = "Use a TCP port number from 1 to 65535 (0: any free port, logged), or None for no endpoint."
        port: int | None = None
        if given.get("PORT") is not None:
            port = self.count(("HEALTH", "PORT"), given["PORT"], minimum=0, meaning=meaning)
            if port is not None and port > 65535:
                self.error(E_OUT_OF_RANGE, f"{_where('HEALTH', 'PORT')} must be <= 65535, got {port!r}.", meaning)
                return None
            if port is None:
                return None
        address = (
            self.text(("HEALTH", "ADDRESS"), given["ADDRESS"], "'ADDRESS': '0.0.0.0'")
            if "ADDRESS" in given
            else default.address
        )
        if address is None:
            return None
        metrics_port = getattr(metrics, "port", None)
        if port and metrics is not None and metrics.enabled and port == metrics_port:
            self.error(
                E_HEALTH_PORT_CONFLICT,
                f"{_where('HEALTH', 'PORT')} and {_where('METRICS', 'PORT')} are both {port}: "
                "runworkers cannot serve the health and the metrics endpoints on one port.",
                "Give each endpoint a port of its own (e.g. 8081 for health, 9100 for metrics).",
            )
            return None
        return HealthSettings(port=port, address=address)

    def tracer_provider(self, value: object) -> str | None:
        """``TRACING["PROVIDER"]``: the dotted path of a callable, imported (not called) to check it."""
        where = _where("TRACING", "PROVIDER")
        example = "'PROVIDER': 'myproject.telemetry.tracer_provider'"
        if not isinstance(value, str):
            self.wrong_type(where, value, "a dotted path (str) of a function returning a TracerProvider", example)
            return None
        imported = self.import_module_of(
            where,
            value,
            shape="'module.function'",
            shape_hint=f"Write the import path of a zero-argument function returning a TracerProvider, e.g. {example}.",
            not_found=E_TRACER_PROVIDER_NOT_FOUND,
            not_found_hint="Check the spelling of the module path, and that its package is installed and importable.",
            import_failed=E_TRACER_PROVIDER_NOT_FOUND,
        )
        if imported is None:
            return None
        module, module_path, attribute = imported
        factory = getattr(module, attribute, _MISSING)
        if factory is _MISSING:
            candidates = [name for name, item in vars(module).items() if callable(item) and not name.startswith("_")]
            suggestion = _did_you_mean(attribute, candidates)
            msg = f"{where} is {value!r}, but module {module_path!r} has no attribute {attribute!r}"
            msg += f"; did you mean {suggestion!r}?" if suggestion else "."
            self.error(E_TRACER_PROVIDER_NOT_FOUND, msg, f"Check the function name, e.g. {example}.")
            return None
        if not callable(factory):
            self.error(
                E_TRACER_PROVIDER_NOT_CALLABLE,
                f"{where} is {value!r}, which is not callable but {_got(factory)}.",
                "Point to a zero-argument function (or class) that returns a TracerProvider, not to a provider "
                "built at import time.",
            )
            return None
        return value

    def optional_dependencies(self, metrics: MetricsSettings | None, tracing: TracingSettings | None) -> None:
        """Warn when metrics or tracing are enabled but their package is missing (they are then off)."""
        if metrics is not None and metrics.enabled and not _importable("prometheus_client"):
            self.warning(
                W_NO_PROMETHEUS_CLIENT,
                f"{_where('METRICS', 'ENABLED')} is True, but prometheus-client is not installed: "
                "workers run without metrics.",
                "Install it (pip install 'django-worker-pool[metrics]'), or set "
                f"{_where('METRICS', 'ENABLED')} = False.",
            )
        if tracing is not None and tracing.enabled and not _importable("opentelemetry.trace"):
            self.warning(
                W_NO_OPENTELEMETRY,
                f"{_where('TRACING', 'ENABLED')} is True, but opentelemetry-api is not installed: "
                "workers run without spans.",
                "Install it (pip install 'django-worker-pool[tracing]'), or set "
                f"{_where('TRACING', 'ENABLED')} = False.",
            )

    # -- the workers ----------------------------------------------------------------------------------

    def workers(self, value: object, backoff: Backoff) -> tuple[WorkerSpec, ...]:
        where = _where("WORKERS")
        no_workers_hint = (
            f"That is fine for a web process; add dotted paths of Worker subclasses to {where} "
            f"for `manage.py runworkers` to have something to run."
        )
        if value is _MISSING:
            self.warning(W_NO_WORKERS, f"{where} is not set: no worker is configured.", no_workers_hint)
            return ()
        if not isinstance(value, list | tuple):
            self.wrong_type(where, value, "a list of dotted paths or dicts", "'WORKERS': ['myapp.workers.MyWorker']")
            return ()
        if not value:
            self.warning(W_NO_WORKERS, f"{where} is empty: no worker is configured.", no_workers_hint)
            return ()
        specs: list[WorkerSpec] = []
        first_by_name: dict[str, tuple[str, int]] = {}
        for index, entry in enumerate(value):
            spec = self.worker(index, entry, backoff)
            if spec is None:
                continue
            if spec.name in first_by_name:
                other_path, other_index = first_by_name[spec.name]
                entries = f"{_where('WORKERS', other_index)} and {_where('WORKERS', index)}"
                if other_path == spec.path:
                    msg = f"{spec.path!r} is listed twice ({entries}): worker name {spec.name!r} is not unique."
                    hint = "Remove one of the two entries."
                else:
                    msg = (
                        f"Worker name {spec.name!r} is used by both {other_path!r} and {spec.path!r} "
                        f"({entries}); worker names must be unique."
                    )
                    hint = (
                        "Give each worker class a distinct `name` (a class attribute, or a property that "
                        "depends on the OPTIONS when one class is configured several times)."
                    )
                self.error(E_DUPLICATE_NAME, msg, hint)
                continue
            first_by_name[spec.name] = (spec.path, index)
            specs.append(spec)
        return tuple(specs)

    def worker(self, index: int, entry: object, pool_backoff: Backoff) -> WorkerSpec | None:
        keys: tuple[object, ...] = ("WORKERS", index)
        where = _where(*keys)
        overrides: dict[str, Any] = {}
        options: Mapping[str, Any] = {}
        valid = True
        if isinstance(entry, str):
            path, path_keys = entry, keys
        elif isinstance(entry, Mapping):
            example = "{'CLASS': 'myapp.workers.MyWorker', 'OPTIONS': {'batch_size': 50}}"
            given = self.section(keys, entry, _ENTRY_KEYS, example)
            if "CLASS" not in given:
                self.error(
                    E_NO_CLASS,
                    f"{where} has no 'CLASS' key.",
                    f"Add the dotted path of the worker class, e.g. {example}.",
                )
                return None
            path_keys = (*keys, "CLASS")
            path = given["CLASS"]
            if not isinstance(path, str):
                self.wrong_type(_where(*path_keys), path, "a dotted path (str)", "'CLASS': 'myapp.workers.MyWorker'")
                return None
            if given.get("DEFERRED_START_THRESHOLD") is not None:
                threshold = self.seconds((*keys, "DEFERRED_START_THRESHOLD"), given["DEFERRED_START_THRESHOLD"])
                valid &= threshold is not None
                overrides["deferred_start_threshold"] = threshold
            if given.get("MAX_EXECUTIONS_ATTEMPTS") is not None:
                attempts = self.attempts((*keys, "MAX_EXECUTIONS_ATTEMPTS"), given["MAX_EXECUTIONS_ATTEMPTS"])
                valid &= attempts is not None
                overrides["max_executions_attempts"] = attempts
            if given.get("RESTART_BACKOFF") is not None:
                backoff = self.backoff((*keys, "RESTART_BACKOFF"), given["RESTART_BACKOFF"], pool_backoff)
                valid &= backoff is not None
                overrides["restart_backoff"] = backoff
            if given.get("MAX_SILENCE") is not None:
                silence = self.seconds((*keys, "MAX_SILENCE"), given["MAX_SILENCE"], positive=True)
                valid &= silence is not None
                overrides["max_silence"] = silence
            if given.get("RESTART_ON_SILENCE") is not None:
                restart = self.boolean((*keys, "RESTART_ON_SILENCE"), given["RESTART_ON_SILENCE"])
                valid &= restart is not None
                overrides["restart_on_silence"] = bool(restart)
                if restart and given.get("MAX_SILENCE") is None:
                    self.error(
                        E_RESTART_WITHOUT_SILENCE,
                        f"{_where(*keys, 'RESTART_ON_SILENCE')} is True, but {where} has no 'MAX_SILENCE'.",
                        "Set 'MAX_SILENCE' (seconds without ctx.heartbeat() after which the worker is "
                        "silent and restarted), or remove 'RESTART_ON_SILENCE'.",
                    )
                    valid = False
            if given.get("OPTIONS") is not None:
                raw_options = given["OPTIONS"]
                if not isinstance(raw_options, Mapping) or not all(isinstance(key, str) for key in raw_options):
                    self.wrong_type(
                        _where(*keys, "OPTIONS"),
                        raw_options,
                        "a dict of constructor keyword arguments (str keys)",
                        "'OPTIONS': {'batch_size': 50}",
                    )
                    valid = False
                else:
                    options = raw_options
        else:
            self.error(
                E_BAD_ENTRY,
                f"{where} must be a dotted path (str) or a dict, got {_got(entry)}.",
                "Write 'myapp.workers.MyWorker', or {'CLASS': 'myapp.workers.MyWorker', ...} for per-worker settings.",
            )
            return None

        worker_class = self.worker_class(_where(*path_keys), path)
        if worker_class is None or not valid:
            return None
        name = self.worker_name(where, path, worker_class, options)
        if name is None:
            return None
        return WorkerSpec(
            path=path,
            worker_class=worker_class,
            name=name,
            options=MappingProxyType(dict(options)),
            **overrides,
        )

    def worker_class(self, where: str, path: str) -> type[Worker] | None:
        """Import ``path``; one message saying precisely what is wrong when it is not a Worker class."""
        imported = self.import_module_of(
            where,
            path,
            shape="'module.ClassName'",
            shape_hint="Write the full import path of a Worker subclass, e.g. 'myapp.workers.MyWorker'.",
            not_found=E_MODULE_NOT_FOUND,
            not_found_hint="Check the spelling of the module path, and that its package is installed and importable "
            "(on sys.path).",
            import_failed=E_IMPORT_FAILED,
        )
        if imported is None:
            return None
        module, module_path, attribute = imported
        try:
            worker_class = getattr(module, attribute)
        except Exception:
            candidates = sorted(
                name
                for name, value in vars(module).items()
                if isinstance(value, type) and issubclass(value, Worker) and value is not Worker
            )
            suggestion = _did_you_mean(attribute, candidates) or _did_you_mean(
                attribute, [name for name in vars(module) if not name.startswith("_")]
            )
            msg = f"{where} is {path!r}, but module {module_path!r} has no attribute {attribute!r}"
            msg += f"; did you mean {suggestion!r}?" if suggestion else "."
            hint = (
                f"Worker classes in {module_path}: {', '.join(candidates)}."
                if candidates
                else f"Check the class name; module {module_path!r} defines no Worker subclass."
            )
            self.error(E_ATTRIBUTE_NOT_FOUND, msg, hint)
            return None
        if not isinstance(worker_class, type):
            if isinstance(worker_class, Worker):
                kind = "a Worker instance"
            elif inspect.ismodule(worker_class):
                kind = "a module"
            elif inspect.isroutine(worker_class):
                kind = "a function"
            else:
                kind = _got(worker_class)
            self.error(
                E_NOT_A_WORKER,
                f"{where} is {path!r}, which is not a class but {kind}.",
                "Point to a subclass of django_workers.Worker (the class itself, not an instance or a function).",
            )
            return None
        if not issubclass(worker_class, Worker):
            self.error(
                E_NOT_A_WORKER,
                f"{where} is {path!r}, which is not a subclass of django_workers.Worker.",
                f"Make it `class {worker_class.__name__}(django_workers.Worker)` with a `name` and a `run(ctx)`.",
            )
            return None
        if worker_class.run is Worker.run:
            self.error(
                E_NO_RUN,
                f"{where} is {path!r}, whose class does not implement run(ctx).",
                f"Define `def run(self, ctx)` (or `async def run(self, ctx)`) in {worker_class.__name__}.",
            )
            return None
        return worker_class

    def import_module_of(
        self,
        where: str,
        path: str,
        *,
        shape: str,
        shape_hint: str,
        not_found: str,
        not_found_hint: str,
        import_failed: str,
    ) -> tuple[ModuleType, str, str] | None:
        """Import the module of the dotted ``path``: (module, module path, attribute name).

        ``None`` after one message saying precisely what is wrong: not a dotted path, no such
        module (``not_found``), or the module raised while being imported (``import_failed``,
        with the exception; a missing dependency inside it is that, not ``not_found``).
        """
        module_path, _, attribute = path.rpartition(".")
        if not module_path or not all(part.isidentifier() for part in path.split(".")):
            self.error(not_found, f"{where} is {path!r}, which is not a dotted path {shape}.", shape_hint)
            return None
        try:
            return importlib.import_module(module_path), module_path, attribute
        except ModuleNotFoundError as exc:
            missing = exc.name or ""
            if missing and (module_path == missing or module_path.startswith(missing + ".")):
                self.error(not_found, f"{where} is {path!r}, but there is no module named {missing!r}.", not_found_hint)
                return None
            failure: BaseException = exc
        except (Exception, SystemExit) as exc:
            failure = exc
        self.error(
            import_failed,
            f"{where} is {path!r}, but importing module {module_path!r} raised {_describe_exception(failure)}.",
            f"Fix the error in the module; `python -c 'import {module_path}'` shows the whole traceback.",
        )
        return None

    def worker_name(self, where: str, path: str, worker_class: type[Worker], options: Mapping[str, Any]) -> str | None:
        """Instantiate the class with its OPTIONS (as the pool will) and read its name."""
        call = f"{worker_class.__name__}(**OPTIONS)" if options else f"{worker_class.__name__}()"
        try:
            worker = worker_class(**dict(options))
        except Exception as exc:
            signature = _signature(worker_class)
            given = ", ".join(options) or "none"
            self.error(
                E_CONSTRUCTOR_FAILED,
                f"{where} is {path!r}, but {call} raised {_describe_exception(exc)}.",
                f"Fix OPTIONS (given: {given}; the constructor is {signature or 'not introspectable'}) or the "
                f"constructor. Constructors run during system checks: keep them free of I/O, connect in run().",
            )
            return None
        try:
            name = worker.name
        except Exception as exc:
            self.error(
                E_BAD_NAME,
                f"{where} is {path!r}, whose `name` raised {_describe_exception(exc)}.",
                'Set a class attribute such as name = "my-worker", or fix the name property.',
            )
            return None
        if not isinstance(name, str) or not name.strip():
            problem = f"an empty name {name!r}" if isinstance(name, str) else f"a name that is not a str: {_got(name)}"
            self.error(
                E_BAD_NAME,
                f"{where} is {path!r}, which has {problem}.",
                f'Set a class attribute such as name = "my-worker" in {worker_class.__name__} '
                f"(a non-empty str, unique in the pool).",
            )
            return None
        return name


# -- public API ---------------------------------------------------------------------------------------


def validate_settings(value: object = _MISSING, *, databases: object = _MISSING) -> SettingsValidation:
    """Validate ``settings.WORKERS`` (or ``value``) in one pass: check messages and parsed settings.

    The single source of truth of both the system checks and :func:`load_settings`. It imports
    every configured worker module and instantiates each worker class once (to learn its name),
    but never raises for a bad configuration: every problem is one check message.
    """
    if value is _MISSING:
        value = getattr(settings, SETTING, _MISSING)
    if databases is _MISSING:
        databases = getattr(settings, "DATABASES", {})
    validator = _Validator(databases)
    parsed = validator.validate(value)
    return SettingsValidation(settings=parsed, messages=tuple(validator.messages))


def load_settings() -> WorkersSettings:
    """``settings.WORKERS`` parsed into :class:`WorkersSettings` (read now, not cached).

    Raises ``ImproperlyConfigured`` carrying the system-check messages when it is invalid.
    """
    validation = validate_settings()
    if validation.settings is None:
        raise ImproperlyConfigured(
            "Invalid settings.WORKERS:\n" + "\n".join(str(message) for message in validation.errors)
        )
    return validation.settings


def _unknown_names(unknown: Sequence[str], known: Sequence[str]) -> str:
    parts = []
    for name in unknown:
        suggestion = _did_you_mean(name, known)
        if suggestion is None:
            containing = [candidate for candidate in known if name.lower() in candidate.lower()]
            suggestion = containing[0] if len(containing) == 1 else None
        parts.append(f"{name!r} (did you mean {suggestion!r}?)" if suggestion else repr(name))
    noun = "worker" if len(unknown) == 1 else "workers"
    configured = ", ".join(known) if known else f"none (settings.{SETTING}['WORKERS'] is empty)"
    return f"unknown {noun} {', '.join(parts)}; configured workers: {configured}"


def select_workers(
    specs: Sequence[WorkerSpec], *, only: Sequence[str] = (), exclude: Sequence[str] = ()
) -> tuple[WorkerSpec, ...]:
    """The specs named in ``only`` (all when empty) minus those in ``exclude``, in configured order.

    Raises ``ValueError`` naming any unknown name, with the configured names (and a "did you mean").
    """
    if isinstance(only, str) or isinstance(exclude, str):
        raise TypeError("only and exclude are sequences of worker names, not a single str")
    known = [spec.name for spec in specs]
    unknown = [name for name in dict.fromkeys([*only, *exclude]) if name not in known]
    if unknown:
        raise ValueError(_unknown_names(unknown, known))
    wanted = set(only) if only else set(known)
    wanted.difference_update(exclude)
    return tuple(spec for spec in specs if spec.name in wanted)


def pool_metrics(metrics_settings: MetricsSettings) -> WorkerMetrics | None:
    """The ``WorkerMetrics`` a pool built from the settings counts into, or ``None`` (no cost at all).

    ``None`` when ``METRICS["ENABLED"]`` is false or prometheus-client is missing (check W004).
    Otherwise this process's one ``WorkerMetrics`` for the namespace and subsystem, registered
    into ``prometheus_client.REGISTRY`` when first built and shared by every pool built later.
    """
    if not metrics_settings.enabled or not _importable("prometheus_client"):
        return None
    from .exposition import process_metrics

    try:
        return process_metrics(metrics_settings.namespace, metrics_settings.subsystem)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{_where('METRICS')}: {exc}") from exc


_tracer_providers: dict[str, Any] = {}
_tracer_providers_lock = threading.Lock()


def tracer_provider(path: str) -> Any:
    """The TracerProvider returned by the factory at dotted ``path``, called once per process.

    Later calls return the same provider (a provider owns span processors and their threads: one
    per process). ``ImproperlyConfigured`` when the factory cannot be imported, raises, or returns
    something that is not a tracer provider.
    """
    with _tracer_providers_lock:
        provider = _tracer_providers.get(path)
        if provider is not None:
            return provider
        where = _where("TRACING", "PROVIDER")
        try:
            factory = import_string(path)
        except ImportError as exc:
            raise ImproperlyConfigured(f"{where} {path!r} cannot be imported: {_describe_exception(exc)}") from exc
        try:
            provider = factory()
        except Exception as exc:
            raise ImproperlyConfigured(f"{where} {path!r} raised {_describe_exception(exc)}") from exc
        if not callable(getattr(provider, "get_tracer", None)):
            raise ImproperlyConfigured(
                f"{where} {path!r} returned {_got(provider)}, which is not a TracerProvider "
                f"(it has no get_tracer() method); return e.g. an opentelemetry.sdk.trace.TracerProvider."
            )
        _tracer_providers[path] = provider
        return provider


def pool_tracing(tracing_settings: TracingSettings) -> dict[str, Any]:
    """The tracing arguments of ``WorkerPool``: ``tracing`` and ``tracer_provider``.

    Tracing is off when ``TRACING["ENABLED"]`` is false or opentelemetry-api is missing (check
    W003). Otherwise every attempt runs in a span of the provider that ``TRACING["PROVIDER"]``
    returns (annotated by the pool), or of the global provider when it is None. No OpenTelemetry
    global is set.
    """
    if not tracing_settings.enabled or not _importable("opentelemetry.trace"):
        return {"tracing": False, "tracer_provider": None}
    provider = tracer_provider(tracing_settings.provider) if tracing_settings.provider is not None else None
    return {"tracing": True, "tracer_provider": provider}


def build_pool(
    workers_settings: WorkersSettings | None = None,
    *,
    only: Sequence[str] = (),
    exclude: Sequence[str] = (),
    stop_timeout: float | None = None,
) -> WorkerPool:
    """A new, unstarted :class:`~django_workers.WorkerPool` configured from the settings.

    ``workers_settings`` defaults to :func:`load_settings` (which raises ``ImproperlyConfigured``
    when they are invalid). Each configured worker is instantiated with its ``OPTIONS`` and
    registered with its overrides; ``only``/``exclude`` filter by worker name (``ValueError`` for
    an unknown one); ``stop_timeout`` overrides ``STOP_TIMEOUT``. The pool closes the database
    connections of its worker threads around every attempt (see :mod:`django_workers.db`).
    """
    if workers_settings is None:
        workers_settings = load_settings()
    specs = select_workers(workers_settings.workers, only=only, exclude=exclude)
    pool = WorkerPool(
        deferred_start_threshold=workers_settings.deferred_start_threshold,
        max_executions_attempts=workers_settings.max_executions_attempts,
        restart_backoff=workers_settings.restart_backoff,
        stop_timeout=workers_settings.stop_timeout if stop_timeout is None else stop_timeout,
        history_size=workers_settings.history_size,
        attempt_hooks=[db.connection_hygiene],
        listeners=[db.close_thread_connections],
        metrics=pool_metrics(workers_settings.metrics),
        **pool_tracing(workers_settings.tracing),
    )
    for spec in specs:
        try:
            worker = spec.instantiate()
        except Exception as exc:
            raise ImproperlyConfigured(
                f"Worker {spec.name!r} ({spec.path}) could not be instantiated: {_describe_exception(exc)}"
            ) from exc
        pool.register(
            worker,
            deferred_start_threshold=spec.deferred_start_threshold,
            max_executions_attempts=spec.max_executions_attempts,
            restart_backoff=spec.restart_backoff,
            max_silence=spec.max_silence,
            restart_on_silence=spec.restart_on_silence,
        )
    return pool


def _metrics_services(
    metrics_settings: MetricsSettings, pool: WorkerPool, options: Mapping[str, Any]
) -> list[ProcessService]:
    """The metrics endpoint (``METRICS`` ``PORT``/``ADDRESS``, ``--metrics-port``/``--metrics-address``)."""
    port_option, address_option = options.get("metrics_port"), options.get("metrics_address")
    if pool.metrics is None:
        if port_option is not None or address_option is not None:
            reason = (
                f"metrics are disabled ({_where('METRICS', 'ENABLED')} is False)"
                if not metrics_settings.enabled
                else "prometheus-client is not installed (pip install 'django-worker-pool[metrics]')"
            )
            raise ValueError(f"--metrics-port/--metrics-address cannot be used: {reason}")
        return []
    from .exposition import metrics_services

    return metrics_services(
        metrics_settings.port, metrics_settings.address, port_option=port_option, address_option=address_option
    )


def build_services(
    workers_settings: WorkersSettings, pool: WorkerPool, options: Mapping[str, Any] | None = None
) -> list[ProcessService]:
    """The process services ``runworkers`` runs beside ``pool`` (see :mod:`django_workers.services`).

    ``options`` are the command-line options of ``runworkers`` (ports and the like), when it is
    the caller. Each feature that needs a service adds it here from its settings.
    """
    services: list[ProcessService] = []
    services.extend(_history_services(workers_settings.history, pool))
    services.extend(_metrics_services(workers_settings.metrics, pool, options or {}))
    services.extend(_health_services(workers_settings.health, options or {}))
    return services


def _history_services(history: HistorySettings, pool: WorkerPool) -> list[ProcessService]:
    """The history recorder when ``HISTORY["ENABLED"]`` (first in the list: stopped last, it flushes)."""
    if not history.enabled:
        return []
    from .recorder import HistoryRecorder  # imports the models: only once the app registry is ready

    return [
        HistoryRecorder(
            history.database,
            buffer_size=history.buffer_size,
            batch_size=history.batch_size,
            heartbeat_interval=history.heartbeat_interval,
            orphan_grace=history.grace,
            retention_days=history.retention_days,
            metrics=pool.metrics,
        )
    ]


def _health_services(health: HealthSettings, options: Mapping[str, Any]) -> list[ProcessService]:
    """The ``/livez`` + ``/readyz`` endpoint when ``--health-port`` or ``HEALTH["PORT"]`` asks for one."""
    port: object = options.get("health_port")
    source = "--health-port"
    if port is None:
        port, source = health.port, _where("HEALTH", "PORT")
    if port is None:
        return []
    if isinstance(port, str) and port.strip().isdigit():
        port = int(port)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"{source} must be a TCP port number from 0 to 65535 (0: any free port), got {port!r}")
    from .health_server import HealthServer

    return [HealthServer(port, health.address)]
