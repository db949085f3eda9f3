"""The parsers of the sections of ``settings.WORKERS``, and of the whole setting.

Each parser takes the raw value and returns ``(parsed, messages)`` (see
:mod:`django_workers.settings.values`): :func:`parse_settings` adds the sections up. The system
checks report the messages; :func:`django_workers.settings.load_settings` raises the errors.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ..observability.names import metric_prefix
from . import values as ranges
from .ids import (
    E_LEASE_TOO_SHORT,
    E_NOT_A_DICT,
    E_OUT_OF_RANGE,
    E_TRACER_PROVIDER_NOT_CALLABLE,
    E_TRACER_PROVIDER_NOT_FOUND,
    E_UNKNOWN_DATABASE,
    W_FREQUENT_HEARTBEAT,
    W_NO_OPENTELEMETRY,
    W_NO_PROMETHEUS_CLIENT,
    W_NO_WORKERS,
    W_SHORT_ORPHAN_GRACE,
)
from .imports import import_module_of, importable
from .types import (
    SETTING,
    FleetSettings,
    HealthSettings,
    HistorySettings,
    MetricsSettings,
    TracingSettings,
    WorkersSettings,
)
from .values import (
    Messages,
    attempts,
    backoff,
    boolean,
    count,
    did_you_mean,
    error,
    got,
    port,
    seconds,
    section,
    text,
    warning,
    where,
    wrong_type,
)
from .workers import MISSING, parse_workers

__all__ = [
    "TOP_KEYS",
    "lease_timing",
    "parse_fleet",
    "parse_health",
    "parse_history",
    "parse_metrics",
    "parse_settings",
    "parse_tracing",
]

TOP_KEYS = (
    "DEFERRED_START_THRESHOLD",
    "MAX_EXECUTIONS_ATTEMPTS",
    "RESTART_BACKOFF",
    "STOP_TIMEOUT",
    "HISTORY_SIZE",
    "HISTORY",
    "METRICS",
    "TRACING",
    "HEALTH",
    "FLEET",
    "WORKERS",
)
HISTORY_KEYS = (
    "ENABLED",
    "DATABASE",
    "RETENTION_DAYS",
    "HEARTBEAT_INTERVAL",
    "ORPHAN_GRACE",
    "BUFFER_SIZE",
    "BATCH_SIZE",
)
METRICS_KEYS = ("ENABLED", "NAMESPACE", "SUBSYSTEM", "PORT", "ADDRESS")
TRACING_KEYS = ("ENABLED", "PROVIDER")
HEALTH_KEYS = ("PORT", "ADDRESS")
FLEET_KEYS = ("LEASE_TTL", "RENEW_INTERVAL", "MARGIN", "DATABASE")

_DEFAULTS = WorkersSettings()


def _serious(messages: Messages) -> bool:
    return any(message.is_serious() for message in messages)


def parse_settings(raw: object, databases: object) -> tuple[WorkersSettings | None, Messages]:
    """The whole setting (:data:`MISSING` when it is not set); ``None`` when it has an error."""
    if raw is MISSING:
        msg = f"The {SETTING} setting is not set: no worker is configured."
        hint = (
            f"That is fine for a web process; set {SETTING} = {{'WORKERS': ['myapp.workers.MyWorker']}} "
            f"for `manage.py runworkers` to have something to run."
        )
        return WorkersSettings(), [warning(W_NO_WORKERS, msg, hint)]
    if not isinstance(raw, Mapping):
        msg = f"The {SETTING} setting must be a dict, got {got(raw)}."
        hint = f"Write {SETTING} = {{'WORKERS': ['myapp.workers.MyWorker']}}; see docs/settings.md."
        return None, [error(E_NOT_A_DICT, msg, hint)]
    top, messages = section((), raw, TOP_KEYS, f"{SETTING} = {{'WORKERS': ['myapp.workers.MyWorker']}}")
    parsed: dict[str, Any] = {}

    def take(name: str, result: tuple[Any, Messages]) -> None:
        parsed[name], found = result
        messages.extend(found)

    if "DEFERRED_START_THRESHOLD" in top:
        take(
            "deferred_start_threshold",
            seconds(("DEFERRED_START_THRESHOLD",), top["DEFERRED_START_THRESHOLD"], ranges.DEFERRED_START_THRESHOLD),
        )
    if "MAX_EXECUTIONS_ATTEMPTS" in top:
        take("max_executions_attempts", attempts(("MAX_EXECUTIONS_ATTEMPTS",), top["MAX_EXECUTIONS_ATTEMPTS"]))
    if "RESTART_BACKOFF" in top:
        take("restart_backoff", backoff(("RESTART_BACKOFF",), top["RESTART_BACKOFF"], _DEFAULTS.restart_backoff))
    if "STOP_TIMEOUT" in top:
        take("stop_timeout", seconds(("STOP_TIMEOUT",), top["STOP_TIMEOUT"], ranges.STOP_TIMEOUT))
    if "HISTORY_SIZE" in top:
        take("history_size", count(("HISTORY_SIZE",), top["HISTORY_SIZE"], ranges.HISTORY_SIZE))
    if "HISTORY" in top:
        take("history", parse_history(top["HISTORY"], databases))
    if "METRICS" in top:
        take("metrics", parse_metrics(top["METRICS"]))
    if "TRACING" in top:
        take("tracing", parse_tracing(top["TRACING"]))
    if "HEALTH" in top:
        take("health", parse_health(top["HEALTH"]))
    messages += _optional_dependencies(
        top.get("METRICS"),
        parsed.get("metrics", MetricsSettings()),
        top.get("TRACING"),
        parsed.get("tracing", TracingSettings()),
    )
    pool_backoff = parsed.get("restart_backoff") or _DEFAULTS.restart_backoff
    take("workers", parse_workers(top.get("WORKERS", MISSING), pool_backoff))
    singletons = any(spec.singleton for spec in parsed["workers"])
    if "FLEET" in top or singletons:
        # Without singletons the leases are unused: a project that leaves FLEET out is not checked.
        take("fleet", parse_fleet(top.get("FLEET", {}), databases, singletons=singletons))
        stop_timeout = parsed.get("stop_timeout", _DEFAULTS.stop_timeout)
        if parsed["fleet"] is not None and stop_timeout is not None:
            messages += lease_timing(parsed["fleet"], stop_timeout)
    if _serious(messages):
        return None, messages
    return WorkersSettings(**parsed), messages


# -- HISTORY -----------------------------------------------------------------------------------------


def parse_history(value: object, databases: object) -> tuple[HistorySettings | None, Messages]:
    """``WORKERS["HISTORY"]``."""
    example = "'HISTORY': {'ENABLED': True, 'DATABASE': 'default', 'RETENTION_DAYS': 7}"
    given, messages = section(("HISTORY",), value, HISTORY_KEYS, example)
    default = HistorySettings()
    parsed: dict[str, Any] = {}

    def take(key: str, result: tuple[Any, Messages]) -> None:
        parsed[key.lower()], found = result
        messages.extend(found)

    if "ENABLED" in given:
        take("ENABLED", boolean(("HISTORY", "ENABLED"), given["ENABLED"]))
    if "DATABASE" in given:
        take("DATABASE", text(("HISTORY", "DATABASE"), given["DATABASE"], "'DATABASE': 'default'"))
    if "RETENTION_DAYS" in given:
        take("RETENTION_DAYS", count(("HISTORY", "RETENTION_DAYS"), given["RETENTION_DAYS"], ranges.RETENTION_DAYS))
    database = parsed.get("database", default.database)
    enabled = parsed.get("enabled", default.enabled)
    if database is not None and (enabled or "DATABASE" in given):
        found = _unknown_database("HISTORY", database, databases)
        if found:
            return None, [*messages, *found]
    if "HEARTBEAT_INTERVAL" in given:
        take("HEARTBEAT_INTERVAL", _heartbeat_interval(given["HEARTBEAT_INTERVAL"]))
    for key, limits in (("BUFFER_SIZE", ranges.BUFFER_SIZE), ("BATCH_SIZE", ranges.BATCH_SIZE)):
        if key in given:
            take(key, count(("HISTORY", key), given[key], limits))
    if given.get("ORPHAN_GRACE") is not None:
        take("ORPHAN_GRACE", seconds(("HISTORY", "ORPHAN_GRACE"), given["ORPHAN_GRACE"], ranges.ORPHAN_GRACE))
        heartbeat = parsed.get("heartbeat_interval", default.heartbeat_interval)
        if parsed["orphan_grace"] is not None and heartbeat is not None:
            messages += _orphan_grace(parsed["orphan_grace"], heartbeat)
    if _serious(messages):
        return None, messages
    return HistorySettings(**parsed), messages


def _unknown_database(name: str, alias: str, databases: object) -> Messages:
    """E004 when ``alias`` (``WORKERS[name]["DATABASE"]``) is not a key of ``settings.DATABASES``."""
    if not isinstance(databases, Mapping) or alias in databases:
        return []
    aliases = ", ".join(repr(known) for known in databases) or "none"
    msg = f"{where(name, 'DATABASE')} is {alias!r}, which is not a key of settings.DATABASES."
    hint = f"Use one of the configured database aliases ({aliases}), or add {alias!r} to DATABASES."
    return [error(E_UNKNOWN_DATABASE, msg, hint)]


def _heartbeat_interval(value: object) -> tuple[float | None, Messages]:
    """``HISTORY["HEARTBEAT_INTERVAL"]``: in range, and a warning when it writes too often."""
    interval, messages = seconds(("HISTORY", "HEARTBEAT_INTERVAL"), value, ranges.HEARTBEAT_INTERVAL)
    if interval is not None and interval < ranges.HEARTBEAT_WARNING_BELOW:
        place = where("HISTORY", "HEARTBEAT_INTERVAL")
        msg = (
            f"{place} is {interval:g} seconds: each runworkers process writes its node row to the database "
            f"{1 / interval:.3g} times a second."
        )
        hint = (
            f"Use {ranges.HEARTBEAT_WARNING_BELOW:g} second or more in production (default 10); the interval "
            "only bounds how fast a lost process and a control request are noticed."
        )
        messages.append(warning(W_FREQUENT_HEARTBEAT, msg, hint))
    return interval, messages


def _orphan_grace(grace: float, heartbeat: float) -> Messages:
    place = where("HISTORY", "ORPHAN_GRACE")
    if grace <= heartbeat:
        msg = f"{place} ({grace:g} s) must be longer than HEARTBEAT_INTERVAL ({heartbeat:g} s)."
        hint = (
            "A node is declared lost after ORPHAN_GRACE seconds without a heartbeat: use a few "
            "heartbeat intervals (the default is 3 x HEARTBEAT_INTERVAL)."
        )
        return [error(E_OUT_OF_RANGE, msg, hint)]
    if grace < 2 * heartbeat:
        msg = (
            f"{place} ({grace:g} s) is less than twice HEARTBEAT_INTERVAL ({heartbeat:g} s): one "
            f"late heartbeat gets the executions of a live node closed as lost."
        )
        return [warning(W_SHORT_ORPHAN_GRACE, msg, "Use at least 2 (by default 3) heartbeat intervals.")]
    return []


# -- FLEET -------------------------------------------------------------------------------------------


def parse_fleet(value: object, databases: object, *, singletons: bool = False) -> tuple[FleetSettings | None, Messages]:
    """``WORKERS["FLEET"]``: the leases of the singleton workers.

    ``DATABASE`` is checked when it is given or when a worker is a singleton (``singletons``).
    Its timing against ``STOP_TIMEOUT`` is :func:`lease_timing`'s business.
    """
    example = "'FLEET': {'LEASE_TTL': 60, 'RENEW_INTERVAL': 20, 'MARGIN': 1, 'DATABASE': 'default'}"
    given, messages = section(("FLEET",), value, FLEET_KEYS, example)
    default = FleetSettings()
    parsed: dict[str, Any] = {}

    def take(key: str, result: tuple[Any, Messages]) -> None:
        parsed[key.lower()], found = result
        messages.extend(found)

    if "LEASE_TTL" in given:
        take("LEASE_TTL", seconds(("FLEET", "LEASE_TTL"), given["LEASE_TTL"], ranges.LEASE_TTL))
    if given.get("RENEW_INTERVAL") is not None:
        take("RENEW_INTERVAL", seconds(("FLEET", "RENEW_INTERVAL"), given["RENEW_INTERVAL"], ranges.RENEW_INTERVAL))
    if "MARGIN" in given:
        take("MARGIN", seconds(("FLEET", "MARGIN"), given["MARGIN"], ranges.LEASE_MARGIN))
    if "DATABASE" in given:
        take("DATABASE", text(("FLEET", "DATABASE"), given["DATABASE"], "'DATABASE': 'default'"))
    database = parsed.get("database", default.database)
    if database is not None and ("DATABASE" in given or singletons):
        messages += _unknown_database("FLEET", database, databases)
    ttl = parsed.get("lease_ttl", default.lease_ttl)
    renew = parsed.get("renew_interval")
    if ttl is not None and renew is not None and renew >= ttl:
        msg = f"{where('FLEET', 'RENEW_INTERVAL')} ({renew:g} s) must be shorter than LEASE_TTL ({ttl:g} s)."
        hint = (
            "The holder renews its lease every RENEW_INTERVAL seconds: use a fraction of LEASE_TTL "
            "(a third when RENEW_INTERVAL is None, the default)."
        )
        messages.append(error(E_OUT_OF_RANGE, msg, hint))
    if _serious(messages):
        return None, messages
    return FleetSettings(**parsed), messages


def lease_timing(fleet: FleetSettings, stop_timeout: float) -> Messages:
    """E021 unless a holder can retry a renewal before it cancels its singleton worker.

    A holder whose renewals fail cancels its worker ``LEASE_TTL - MARGIN - STOP_TIMEOUT`` seconds
    after the start of its last successful renewal (the worker is then gone before the lease can
    expire): that must be later than its next renewal, ``LEASE_TTL > renew + MARGIN + STOP_TIMEOUT``
    (:meth:`FleetSettings.minimum_ttl`). ``stop_timeout``: ``STOP_TIMEOUT``, or what overrides it.
    """
    if fleet.stops_in_time(stop_timeout):
        return []
    numbers = f"{fleet.renew:g} + {fleet.margin:g} + {stop_timeout:g} = {fleet.renew + fleet.margin + stop_timeout:g}"
    unset = "; RENEW_INTERVAL is unset: a third of LEASE_TTL" if fleet.renew_interval is None else ""
    msg = (
        f"{where('FLEET', 'LEASE_TTL')} is {fleet.lease_ttl:g} seconds, which is not more than "
        f"RENEW_INTERVAL + MARGIN + STOP_TIMEOUT ({numbers} seconds{unset}): a holder whose renewals fail "
        f"cancels its singleton worker LEASE_TTL - MARGIN - STOP_TIMEOUT ({fleet.cancel_after(stop_timeout):g}) "
        "seconds after the start of its last renewal, so that the worker is gone before the lease can expire, "
        "and that leaves no time to retry a renewal."
    )
    shortest = math.floor(fleet.minimum_ttl(stop_timeout)) + 1
    if shortest <= ranges.LEASE_TTL.high:
        hint = (
            f"Set {where('FLEET', 'LEASE_TTL')} to at least {shortest} seconds, or lower "
            "STOP_TIMEOUT/RENEW_INTERVAL/MARGIN."
        )
    else:
        hint = f"Lower STOP_TIMEOUT/RENEW_INTERVAL/MARGIN: LEASE_TTL would have to be {shortest} seconds or more."
    if fleet.renew_interval is None:
        hint += " With RENEW_INTERVAL unset, renewals stay a third of LEASE_TTL apart."
    return [error(E_LEASE_TOO_SHORT, msg, hint)]


# -- METRICS, TRACING, HEALTH ----------------------------------------------------------------------


def parse_metrics(value: object) -> tuple[MetricsSettings | None, Messages]:
    """``WORKERS["METRICS"]``: namespace and subsystem sanitised as Yokai does."""
    example = "'METRICS': {'ENABLED': True, 'NAMESPACE': 'myapp', 'SUBSYSTEM': ''}"
    given, messages = section(("METRICS",), value, METRICS_KEYS, example)
    parsed: dict[str, Any] = {}

    def take(key: str, result: tuple[Any, Messages]) -> None:
        parsed[key.lower()], found = result
        messages.extend(found)

    if "ENABLED" in given:
        take("ENABLED", boolean(("METRICS", "ENABLED"), given["ENABLED"]))
    for key in ("NAMESPACE", "SUBSYSTEM"):
        if key in given:
            take(key, _prefix(key, given[key]))
    if given.get("PORT") is not None:
        take("PORT", port(("METRICS", "PORT"), given["PORT"]))
    if "ADDRESS" in given:
        take("ADDRESS", text(("METRICS", "ADDRESS"), given["ADDRESS"], "'ADDRESS': '127.0.0.1'"))
    if _serious(messages):
        return None, messages
    return MetricsSettings(**parsed), messages


def _prefix(key: str, value: object) -> tuple[str | None, Messages]:
    raw, messages = text(("METRICS", key), value, f"{key!r}: 'myapp'")
    if raw is None:
        return None, messages
    try:
        return metric_prefix(key.lower(), raw), []
    except ValueError:
        msg = f"{where('METRICS', key)} is {raw!r}, which is not valid in a Prometheus metric name."
        hint = (
            "Use letters, digits and underscores, not starting with a digit (spaces and dashes become "
            "underscores, upper case lower case), or '' for none."
        )
        return None, [error(E_OUT_OF_RANGE, msg, hint)]


def parse_tracing(value: object) -> tuple[TracingSettings | None, Messages]:
    """``WORKERS["TRACING"]``: the provider factory is imported (not called) to check it."""
    given, messages = section(("TRACING",), value, TRACING_KEYS, "'TRACING': {'ENABLED': True}")
    enabled = True
    if "ENABLED" in given:
        parsed_enabled, found = boolean(("TRACING", "ENABLED"), given["ENABLED"])
        messages += found
        if parsed_enabled is None:
            return None, messages
        enabled = parsed_enabled
    provider: str | None = None
    if given.get("PROVIDER") is not None and importable("opentelemetry.trace"):
        # Without opentelemetry tracing is off (W003 if asked for): the factory, which needs it, is not imported.
        provider, found = _tracer_provider(given["PROVIDER"])
        messages += found
        if provider is None:
            return None, messages
    return TracingSettings(enabled=enabled, provider=provider), messages


def _tracer_provider(value: object) -> tuple[str | None, Messages]:
    """``TRACING["PROVIDER"]``: the dotted path of a callable, imported (not called) to check it."""
    place = where("TRACING", "PROVIDER")
    example = "'PROVIDER': 'myproject.telemetry.tracer_provider'"
    if not isinstance(value, str):
        return None, [wrong_type(place, value, "a dotted path (str) of a function returning a TracerProvider", example)]
    imported, messages = import_module_of(
        place,
        value,
        shape="'module.function'",
        shape_hint=f"Write the import path of a zero-argument function returning a TracerProvider, e.g. {example}.",
        not_found=E_TRACER_PROVIDER_NOT_FOUND,
        not_found_hint="Check the spelling of the module path, and that its package is installed and importable.",
        import_failed=E_TRACER_PROVIDER_NOT_FOUND,
    )
    if imported is None:
        return None, messages
    module, module_path, attribute = imported
    factory = getattr(module, attribute, MISSING)
    if factory is MISSING:
        candidates = [name for name, item in vars(module).items() if callable(item) and not name.startswith("_")]
        suggestion = did_you_mean(attribute, candidates)
        msg = f"{place} is {value!r}, but module {module_path!r} has no attribute {attribute!r}"
        msg += f"; did you mean {suggestion!r}?" if suggestion else "."
        return None, [error(E_TRACER_PROVIDER_NOT_FOUND, msg, f"Check the function name, e.g. {example}.")]
    if not callable(factory):
        hint = (
            "Point to a zero-argument function (or class) that returns a TracerProvider, not to a provider "
            "built at import time."
        )
        msg = f"{place} is {value!r}, which is not callable but {got(factory)}."
        return None, [error(E_TRACER_PROVIDER_NOT_CALLABLE, msg, hint)]
    return value, []


def parse_health(value: object) -> tuple[HealthSettings | None, Messages]:
    """``WORKERS["HEALTH"]``. Its port may be the metrics port: one endpoint then serves both."""
    given, messages = section(("HEALTH",), value, HEALTH_KEYS, "'HEALTH': {'PORT': 8081, 'ADDRESS': '127.0.0.1'}")
    parsed: dict[str, Any] = {}

    def take(key: str, result: tuple[Any, Messages]) -> None:
        parsed[key.lower()], found = result
        messages.extend(found)

    if given.get("PORT") is not None:
        take("PORT", port(("HEALTH", "PORT"), given["PORT"]))
    if "ADDRESS" in given:
        take("ADDRESS", text(("HEALTH", "ADDRESS"), given["ADDRESS"], "'ADDRESS': '0.0.0.0'"))
    if _serious(messages):
        return None, messages
    return HealthSettings(**parsed), messages


def _asked_for(raw: object, keys: tuple[str, ...]) -> str | None:
    """The key by which a section asks for its feature explicitly (``ENABLED: True``, or one of ``keys`` set)."""
    if not isinstance(raw, Mapping):
        return None
    if raw.get("ENABLED") is True:
        return "ENABLED"
    return next((key for key in keys if raw.get(key) is not None), None)


def _optional_dependencies(
    metrics_raw: object, metrics: MetricsSettings | None, tracing_raw: object, tracing: TracingSettings | None
) -> Messages:
    """Warn when metrics or tracing are asked for explicitly but their package is missing (they are off).

    By default they are on when their package is importable and silently off otherwise: a new
    project without prometheus-client or opentelemetry-api gets no warning on every command. Asking
    explicitly is ``ENABLED: True``, or a ``PORT`` (metrics) or a ``PROVIDER`` (tracing) set.
    """
    messages: Messages = []
    asked = _asked_for(metrics_raw, ("PORT",))
    if metrics is not None and metrics.enabled and asked and not importable("prometheus_client"):
        place = where("METRICS", asked)
        messages.append(
            warning(
                W_NO_PROMETHEUS_CLIENT,
                f"{place} is {'True' if asked == 'ENABLED' else 'set'}, but prometheus-client is not installed: "
                "workers run without metrics.",
                "Install it (pip install 'django-worker-pool[metrics]'), or set "
                f"{where('METRICS', 'ENABLED')} = False.",
            )
        )
    asked = _asked_for(tracing_raw, ("PROVIDER",))
    if tracing is not None and tracing.enabled and asked and not importable("opentelemetry.trace"):
        place = where("TRACING", asked)
        messages.append(
            warning(
                W_NO_OPENTELEMETRY,
                f"{place} is {'True' if asked == 'ENABLED' else 'set'}, but opentelemetry-api is not installed: "
                "workers run without spans.",
                "Install it (pip install 'django-worker-pool[tracing]'), or set "
                f"{where('TRACING', 'ENABLED')} = False.",
            )
        )
    return messages
