"""Restart backoff: the formula, jitter, validation, and the pool honouring float seconds."""

from __future__ import annotations

import dataclasses
import random
import threading
import time

import pytest

from django_workers.core import Backoff, WorkerPool, WorkerStatus
from django_workers.core.events import WorkerRestarting
from tests.core.conftest import EventLog, failing, messages
from tests.support import FnWorker


def test_delay_follows_the_formula_and_is_capped_at_maximum() -> None:
    backoff = Backoff(initial=1.0, maximum=30.0, multiplier=2.0, jitter=0)
    assert [backoff.delay(n) for n in range(1, 8)] == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_fractional_initial_and_multiplier() -> None:
    backoff = Backoff(initial=0.25, maximum=10.0, multiplier=1.5, jitter=0)
    assert [backoff.delay(n) for n in range(1, 5)] == pytest.approx([0.25, 0.375, 0.5625, 0.84375])


def test_multiplier_one_is_a_constant_delay() -> None:
    backoff = Backoff(initial=0.5, maximum=0.5, multiplier=1, jitter=0)
    assert {backoff.delay(n) for n in range(1, 50)} == {0.5}


def test_huge_restart_numbers_stay_at_maximum() -> None:
    backoff = Backoff(initial=1.0, maximum=30.0, multiplier=10.0, jitter=0)
    assert backoff.delay(10_000) == 30.0
    assert Backoff(initial=1.0, maximum=30.0, multiplier=2.0, jitter=0.5).delay(10_000, rand=lambda: 0.5) == 30.0


@pytest.mark.parametrize(
    ("rand_value", "expected"),
    [
        (0.0, 4.0 * 0.75),  # lowest factor: 1 - jitter
        (0.5, 4.0),  # the middle: no change
        (0.999999, 4.0 * 1.25),  # highest factor: 1 + jitter (rand is in [0, 1))
    ],
)
def test_jitter_scales_the_delay_with_the_injected_rand(rand_value: float, expected: float) -> None:
    backoff = Backoff(initial=1.0, maximum=30.0, multiplier=2.0, jitter=0.25)
    assert backoff.delay(3, rand=lambda: rand_value) == pytest.approx(expected, rel=1e-5)


def test_jitter_applies_to_the_capped_delay() -> None:
    backoff = Backoff(initial=1.0, maximum=10.0, multiplier=2.0, jitter=0.1)
    assert backoff.delay(20, rand=lambda: 0.0) == pytest.approx(9.0)
    assert backoff.delay(20, rand=lambda: 0.999999) == pytest.approx(11.0, rel=1e-5)


def test_random_jitter_stays_within_bounds() -> None:
    backoff = Backoff(initial=2.0, maximum=30.0, multiplier=2.0, jitter=0.1)
    rng = random.Random(1234)
    delays = [backoff.delay(1, rand=rng.random) for _ in range(2000)]
    assert all(1.8 <= d <= 2.2 for d in delays)
    assert min(delays) < 1.85 and max(delays) > 2.15  # the whole range is used, not one value
    default_rand = [backoff.delay(2) for _ in range(500)]
    assert all(3.6 <= d <= 4.4 for d in default_rand)
    assert len(set(default_rand)) > 1


def test_zero_jitter_is_deterministic() -> None:
    backoff = Backoff(initial=1.0, maximum=30.0, multiplier=2.0, jitter=0)
    assert backoff.delay(2, rand=lambda: 0.0) == backoff.delay(2, rand=lambda: 0.99) == 2.0


def test_initial_zero_means_restart_at_once() -> None:
    backoff = Backoff(initial=0)
    assert [backoff.delay(n) for n in (1, 2, 10, 1000)] == [0, 0, 0, 0]
    assert Backoff(initial=0, maximum=0, jitter=1).delay(5, rand=lambda: 0.9) == 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"initial": -0.001},
        {"initial": -1},
        {"initial": 5.0, "maximum": 4.9},
        {"multiplier": 0.99},
        {"multiplier": 0},
        {"jitter": -0.01},
        {"jitter": 1.01},
        {"initial": float("nan")},
        {"maximum": float("inf")},
    ],
)
def test_invalid_values_raise_value_error(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Backoff(**kwargs)


@pytest.mark.parametrize("kwargs", [{"initial": "1"}, {"maximum": None}, {"multiplier": True}, {"jitter": "0.1"}])
def test_non_numbers_raise_type_error(kwargs: dict[str, object]) -> None:
    with pytest.raises(TypeError):
        Backoff(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"initial": 0, "maximum": 0},
        {"initial": 3, "maximum": 3},
        {"multiplier": 1},
        {"jitter": 0},
        {"jitter": 1},
    ],
)
def test_boundary_values_are_accepted(kwargs: dict[str, float]) -> None:
    Backoff(**kwargs)


def test_restart_numbers_start_at_one() -> None:
    with pytest.raises(ValueError):
        Backoff(initial=1.0, jitter=0).delay(0)


def test_backoff_is_an_immutable_value() -> None:
    backoff = Backoff(initial=1, maximum=2, multiplier=3, jitter=0.5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        backoff.initial = 5  # type: ignore[misc]
    assert backoff == Backoff(initial=1.0, maximum=2.0, multiplier=3.0, jitter=0.5)
    assert isinstance(backoff.initial, float)


def test_the_default_pool_backoff_does_not_restart_at_once() -> None:
    assert WorkerPool().restart_backoff.initial > 0


# -- the pool honours the backoff -------------------------------------------------------------


def test_pool_waits_the_float_backoff_before_restarting(harness) -> None:
    times: list[float] = []
    restarted = threading.Event()

    def body(ctx) -> None:
        times.append(time.monotonic())
        if ctx.attempt == 1:
            raise RuntimeError("first attempt fails")
        restarted.set()

    pool = harness.pool(
        FnWorker("w", body), max_executions_attempts=2, restart_backoff=Backoff(initial=0.25, maximum=0.25, jitter=0)
    )
    pool.start()
    assert restarted.wait(5)
    assert pool.wait(5)
    gap = times[1] - times[0]
    assert gap >= 0.25, f"restarted after {gap:.3f}s, before the 0.25s backoff"
    assert gap < 0.9, f"restarted after {gap:.3f}s: the 0.25s backoff looks rounded up"
    assert pool.execution("w").status is WorkerStatus.SUCCESS


def test_pool_uses_growing_delays_for_successive_restarts(harness) -> None:
    log = EventLog()
    backoff = Backoff(initial=0.01, maximum=0.04, multiplier=2.0, jitter=0)
    pool = harness.pool(failing("sync", "w"), max_executions_attempts=5, restart_backoff=backoff, listeners=[log])
    pool.start()
    assert pool.wait(5)
    restarts = log.of(WorkerRestarting, "w")
    assert [(e.restart, e.delay) for e in restarts] == [(1, 0.01), (2, 0.02), (3, 0.04), (4, 0.04)]
    assert [e.attempt for e in restarts] == [1, 2, 3, 4]
    assert messages(pool.execution("w"))[-1] == "max execution attempts reached"


def test_per_worker_backoff_overrides_the_pool_backoff(harness) -> None:
    log = EventLog()
    pool = harness.pool(max_executions_attempts=2, restart_backoff=Backoff(initial=30, jitter=0), listeners=[log])
    pool.register(failing("sync", "w"), restart_backoff=Backoff(initial=0.02, maximum=0.02, jitter=0))
    pool.start()
    assert pool.wait(5)
    assert [e.delay for e in log.of(WorkerRestarting, "w")] == [0.02]
