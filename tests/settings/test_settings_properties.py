"""Property-based tests (Hypothesis): no ``WORKERS`` value and no engine argument ends in a traceback.

Generated ``WORKERS`` settings (nested dicts and lists, numbers at the edges: ±0, NaN, ±inf,
2**64, ints too large for a float, huge strings, a wrong type at every key) either give system-check
messages (``E``/``W``, each with a hint) or a pool that starts and stops cleanly. The Python API
(``WorkerPool(...)``, ``register(...)``, ``Backoff(...)``) raises a clear ``ValueError`` or
``TypeError`` naming the argument, or works: never an ``OverflowError`` later, in a thread.

The examples Hypothesis found are kept as ``@example`` cases, which run on every run.

Run length: tests/conftest.py registers the Hypothesis profiles. ``make test`` runs the short
default one (a few seconds); ``HYPOTHESIS_PROFILE=long`` runs many more examples::

    HYPOTHESIS_PROFILE=long .venv/bin/python -m pytest tests/settings/test_settings_properties.py
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from typing import Any

import pytest
from django.core import checks
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from django_workers import Backoff, WorkerPool, runtime
from django_workers import settings as conf
from django_workers.observability import exposition
from django_workers.runtime import build_pool
from tests.scenarios.workers_fixtures import PATH
from tests.support import FnWorker, collect_logs

HUGE_INT = 10**400  # float() of it overflows, repr() of it is refused by default

#: Numbers at the edges of every range of docs/settings.md, and of what floats and waits accept.
EDGES = (
    0,
    0.0,
    -0.0,
    1,
    -1,
    0.5,
    1e-9,
    5e-324,
    math.nan,
    math.inf,
    -math.inf,
    2**64,
    -(2**64),
    2**70,
    HUGE_INT,
    -HUGE_INT,
    1e300,
    -1e300,
    0.1,
    0.099,
    100,
    100.5,
    3_600,
    3_600.5,
    10_000,
    10_001,
    36_500,
    36_501,
    65_535,
    65_536,
    86_400,
    86_400.001,
    1_000_000,
    1_000_001,
)
numbers = st.one_of(st.sampled_from(EDGES), st.integers(), st.floats())
huge_texts = st.sampled_from([(4_000, "x"), (2_000, "é\ud800"), (1_000, " ")]).map(lambda spec: spec[0] * spec[1])
scalars = st.one_of(numbers, st.booleans(), st.none(), st.text(max_size=10), huge_texts, st.binary(max_size=4))
anything = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.lists(inner, max_size=3).map(tuple),
        st.dictionaries(st.one_of(st.text(max_size=8), numbers), inner, max_size=3),
    ),
    max_leaves=6,
)


def mostly(valid: st.SearchStrategy[Any], other: st.SearchStrategy[Any], *, tenths: int = 8) -> st.SearchStrategy[Any]:
    """``valid`` ``tenths`` times out of ten, else ``other``: enough valid settings for pools to start."""
    return st.integers(0, 9).flatmap(lambda n: valid if n < tenths else other)


def maybe(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly a plausible value, sometimes anything at all (a wrong type, a nested dict)."""
    return mostly(valid, anything, tenths=9)


def section(keys: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """A dict with any subset of ``keys``, sometimes an unknown key too."""
    known = st.fixed_dictionaries({}, optional=keys)
    unknown = mostly(st.just({}), st.dictionaries(st.text(max_size=12), anything, min_size=1, max_size=1))
    return maybe(st.builds(lambda given, extra: {**extra, **given}, known, unknown))


def number(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A number in range (short waits: the pools start and stop), else an edge, else anything."""
    return mostly(valid, mostly(numbers, anything), tenths=9)


short = st.one_of(st.just(0), st.floats(min_value=0, max_value=0.05))
seconds = number(short)
ints = number(st.integers(min_value=0, max_value=5))
backoff = section(
    {
        "INITIAL": seconds,
        "MAXIMUM": number(st.floats(min_value=0.05, max_value=0.1)),
        "MULTIPLIER": number(st.floats(min_value=1, max_value=100)),
        "JITTER": number(st.floats(min_value=0, max_value=1)),
    }
)

#: Dotted paths: the fixtures' classes (workers, and things that are not) and made-up ones, never a
#: random module of the standard library (importing some has side effects).
runnable = st.sampled_from([f"{PATH}.ClassicWorker", f"{PATH}.SleepyWorker", f"{PATH}.AsyncWorker"])
not_runnable = st.one_of(
    st.sampled_from(
        [
            f"{PATH}.NotAWorker",
            f"{PATH}.NoRunWorker",
            f"{PATH}.not_a_class",
            f"{PATH}.FailingConstructorWorker",
            f"{PATH}.RaisingNameWorker",
            f"{PATH}.IntNameWorker",
            f"{PATH}",
            "no_such_package_xyz.workers.Worker",
            "",
        ]
    ),
    st.lists(st.sampled_from(["tests", "scenarios", "workers_fixtures", "ClassicWorker", "nope"]), max_size=4).map(
        ".".join
    ),
)
worker_paths = mostly(runnable, not_runnable)
options_entry = st.fixed_dictionaries(
    {
        "CLASS": st.just(f"{PATH}.OptionsWorker"),
        "OPTIONS": maybe(
            st.fixed_dictionaries({}, optional={"queue": maybe(st.text(max_size=20)), "batch_size": anything})
        ),
    }
)
entry = st.one_of(
    worker_paths,
    st.builds(
        lambda base, overrides: {**overrides, **base},
        st.one_of(options_entry, st.fixed_dictionaries({"CLASS": maybe(worker_paths)})),
        section(
            {
                "DEFERRED_START_THRESHOLD": seconds,
                "MAX_EXECUTIONS_ATTEMPTS": ints,
                "RESTART_BACKOFF": st.one_of(st.none(), backoff),
                "MAX_SILENCE": st.one_of(st.none(), seconds),
                "RESTART_ON_SILENCE": maybe(st.booleans()),
                # Never True: a singleton's pool needs the lease table (tests/fleet covers it).
                "SINGLETON": st.sampled_from([False, None, "yes", 1]),
            }
        ).map(lambda value: value if isinstance(value, dict) else {"OVERRIDES": value}),
    ),
)
workers_settings = section(
    {
        "DEFERRED_START_THRESHOLD": seconds,
        "MAX_EXECUTIONS_ATTEMPTS": ints,
        "RESTART_BACKOFF": backoff,
        "STOP_TIMEOUT": number(st.floats(min_value=0.01, max_value=86_400)),
        "HISTORY_SIZE": number(st.integers(min_value=1, max_value=1_000_000)),
        "HISTORY": section(
            {
                "ENABLED": maybe(st.booleans()),
                "DATABASE": maybe(st.sampled_from(["default", "default", "other"])),
                "RETENTION_DAYS": number(st.integers(min_value=1, max_value=36_500)),
                "HEARTBEAT_INTERVAL": number(st.floats(min_value=0.1, max_value=3_600)),
                "ORPHAN_GRACE": st.one_of(st.none(), number(st.floats(min_value=0.1, max_value=86_400))),
                "BUFFER_SIZE": number(st.integers(min_value=1, max_value=1_000_000)),
                "BATCH_SIZE": number(st.integers(min_value=1, max_value=10_000)),
            }
        ),
        "METRICS": section(
            {
                "ENABLED": maybe(st.booleans()),
                "NAMESPACE": maybe(st.sampled_from(["", "shop", "My-App", "my.app", "1abc"])),
                "SUBSYSTEM": maybe(st.sampled_from(["", "jobs"])),
                "PORT": maybe(st.sampled_from([None, 0, 9100, 65_536, -1])),
                "ADDRESS": maybe(st.sampled_from(["127.0.0.1", ""])),
            }
        ),
        "TRACING": section(
            {
                "ENABLED": maybe(st.booleans()),
                "PROVIDER": maybe(
                    st.sampled_from(
                        [
                            None,
                            None,
                            "opentelemetry.sdk.trace.TracerProvider",
                            "tests.scenarios.workers_observability.NOT_CALLABLE",
                            "no_such_package_xyz.provider",
                            "provider",
                        ]
                    )
                ),
            }
        ),
        "HEALTH": section({"PORT": maybe(st.sampled_from([None, 8081, 70_000])), "ADDRESS": maybe(st.just(""))}),
        "FLEET": section(
            {
                "LEASE_TTL": number(st.floats(min_value=0.1, max_value=86_400)),
                "RENEW_INTERVAL": st.one_of(st.none(), number(st.floats(min_value=0.01, max_value=100))),
                "MARGIN": number(st.floats(min_value=0.001, max_value=10)),
                "DATABASE": maybe(st.sampled_from(["default", "default", "other"])),
            }
        ),
    }
)
#: The whole setting: mostly with workers to run.
workers_settings = st.builds(
    lambda top, workers: top if workers is None or not isinstance(top, dict) else {**top, "WORKERS": workers},
    workers_settings,
    mostly(maybe(st.lists(entry, min_size=1, max_size=3)), st.one_of(st.none(), st.just([])), tenths=9),
)

PROPERTY = settings(
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large]
)


@pytest.fixture
def process_objects(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A throwaway Prometheus registry and tracer-provider cache: the pools built here leave no trace."""
    monkeypatch.setattr(exposition, "REGISTRY", CollectorRegistry(auto_describe=True))
    monkeypatch.setattr(exposition, "_process_metrics", {})
    monkeypatch.setattr(runtime, "_tracer_providers", {})
    yield


def assert_reported(messages: tuple[checks.CheckMessage, ...]) -> None:
    for message in messages:
        assert message.id is not None and message.id.startswith("django_workers.")
        assert message.id[len("django_workers.")] in "EW"
        assert message.id != conf.E_CHECK_CRASHED
        assert message.hint, str(message)
        assert str(message)  # printable, as manage.py check prints it


# -- settings.WORKERS ----------------------------------------------------------------------------------------


@PROPERTY
@given(workers=workers_settings)
@example(workers={"DEFERRED_START_THRESHOLD": HUGE_INT})  # found by Hypothesis: float() overflowed
@example(workers={"HISTORY_SIZE": 2**70, "WORKERS": [f"{PATH}.ClassicWorker"]})
@example(workers={"STOP_TIMEOUT": 1e300, "WORKERS": [f"{PATH}.SleepyWorker"]})
@example(workers={"DEFERRED_START_THRESHOLD": 1e300, "WORKERS": [f"{PATH}.SleepyWorker"]})
@example(workers={"RESTART_BACKOFF": {"INITIAL": 1e300, "MAXIMUM": 1e300}})
@example(workers={"RESTART_BACKOFF": {"INITIAL": HUGE_INT}})
@example(workers={"HISTORY": {"RETENTION_DAYS": 10**6, "HEARTBEAT_INTERVAL": 1e300}})
@example(workers={"HISTORY": {"HEARTBEAT_INTERVAL": 1e-9, "ORPHAN_GRACE": HUGE_INT}})
@example(workers={HUGE_INT: 1, "x" * 100_000: 2, "WORKERS": []})
@example(workers={"FLEET": {"LEASE_TTL": 5e-324, "RENEW_INTERVAL": HUGE_INT, "MARGIN": math.nan}})
@example(workers={"STOP_TIMEOUT": 86_400, "FLEET": {"LEASE_TTL": 86_400, "MARGIN": 5e-324}})
@example(workers={"WORKERS": [{"CLASS": f"{PATH}.SleepyWorker", "MAX_SILENCE": 5e-324, "RESTART_ON_SILENCE": True}]})
@example(workers={"MAX_EXECUTIONS_ATTEMPTS": 0, "RESTART_BACKOFF": {"INITIAL": 0}, "WORKERS": [f"{PATH}.AsyncWorker"]})
@example(workers={"WORKERS": [{"CLASS": f"{PATH}.OptionsWorker", "OPTIONS": {"queue": "\ud800" * 3}}]})
def test_any_workers_setting_gives_messages_or_a_pool_that_starts_and_stops(
    workers: Any, process_objects: None
) -> None:
    validation = conf.validate_settings(workers, databases={"default": {}})

    assert_reported(validation.messages)
    if validation.settings is None:
        assert validation.errors
        event("errors")
        return
    event(f"a pool of {len(validation.settings.workers)} worker(s)")
    pool = build_pool(validation.settings)
    start_and_stop(pool)


def start_and_stop(pool: WorkerPool) -> None:
    """Start the pool and stop it: every worker stops in time, no supervision fails on the way."""
    with collect_logs(level=logging.ERROR) as logs:
        pool.start()
        assert pool.stop(timeout=10.0) == []
    assert logs.matching("supervision of worker") == []


# -- the Python API ------------------------------------------------------------------------------------------

backoff_kwargs = st.fixed_dictionaries(
    {}, optional={"initial": maybe(seconds), "maximum": maybe(seconds), "multiplier": numbers, "jitter": numbers}
)


@PROPERTY
@given(kwargs=backoff_kwargs)
@example(kwargs={"multiplier": HUGE_INT})  # found by Hypothesis: float() overflowed
@example(kwargs={"initial": [1e16, {"a": "x" * 4_000, "b": None, "c": "x" * 4_000}]})  # found: a long message
@example(kwargs={"maximum": 1e300})
@example(kwargs={"initial": HUGE_INT, "maximum": HUGE_INT})
@example(kwargs={"multiplier": 1e300, "maximum": 86_400})
@example(kwargs={"initial": 5e-324, "multiplier": 100, "maximum": 86_400, "jitter": 1})
def test_backoff_raises_a_clear_error_or_gives_finite_delays(kwargs: dict[str, Any]) -> None:
    try:
        backoff = Backoff(**kwargs)
    except (TypeError, ValueError) as exc:
        assert str(exc).startswith("Backoff ")
        assert len(str(exc)) < 1_000  # a huge value is shortened, not copied
        return
    for restart in (1, 2, 10, 1_000, 10**6):
        delay = backoff.delay(restart, rand=lambda: 0.999)
        assert 0 <= backoff.base_delay(restart) <= backoff.maximum
        assert math.isfinite(delay) and 0 <= delay <= 2 * backoff.maximum


pool_kwargs = st.fixed_dictionaries(
    {},
    optional={
        "deferred_start_threshold": maybe(seconds),
        "max_executions_attempts": maybe(ints),
        "stop_timeout": maybe(seconds),
        "history_size": maybe(ints),
        "restart_backoff": st.one_of(st.none(), st.builds(Backoff, initial=st.just(0)), anything),
    },
)
register_kwargs = st.fixed_dictionaries(
    {},
    optional={
        "deferred_start_threshold": st.one_of(st.none(), maybe(seconds)),
        "max_executions_attempts": st.one_of(st.none(), maybe(ints)),
        "max_silence": st.one_of(st.none(), maybe(seconds)),
        "restart_on_silence": maybe(st.booleans()),
    },
)


@PROPERTY
@given(kwargs=pool_kwargs, overrides=register_kwargs)
@example(kwargs={"stop_timeout": 1e300}, overrides={})
@example(kwargs={"history_size": 2**70}, overrides={})
@example(kwargs={"deferred_start_threshold": HUGE_INT}, overrides={})  # found by Hypothesis
@example(kwargs={}, overrides={"deferred_start_threshold": math.inf})
@example(kwargs={}, overrides={"max_silence": 1e300, "restart_on_silence": True})
@example(kwargs={"max_executions_attempts": 0}, overrides={"max_silence": 5e-324, "restart_on_silence": True})
def test_worker_pool_and_register_raise_a_clear_error_or_run(kwargs: dict[str, Any], overrides: dict[str, Any]) -> None:
    try:
        pool = WorkerPool(log=False, **kwargs)
    except (TypeError, ValueError) as exc:
        assert any(name in str(exc) for name in kwargs), str(exc)
        return
    try:
        pool.register(FnWorker("w", lambda ctx: ctx.sleep(math.inf)), **overrides)
    except (TypeError, ValueError) as exc:
        assert any(name in str(exc) for name in overrides), str(exc)
        return
    start_and_stop(pool)
