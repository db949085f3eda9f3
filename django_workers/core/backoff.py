"""Restart backoff: how long the pool waits before restarting a failed worker."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

from .limits import MAX_MULTIPLIER, MAX_WAIT, shown

__all__ = ["Backoff"]


def _number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"Backoff {name} must be a number of seconds (int or float), got {shown(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"Backoff {name} must be a finite number, got {value!r}")
    if isinstance(value, int) and abs(value) > MAX_WAIT:  # before float(): a huge int does not convert
        return math.inf if value > 0 else -math.inf
    return float(value)


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential restart backoff with jitter, capped at ``maximum``.

    The delay before restart ``n`` (``n = 1, 2, …``) is
    ``min(maximum, initial * multiplier ** (n - 1))`` scaled by a random factor in
    ``[1 - jitter, 1 + jitter]``. ``Backoff(initial=0)`` restarts at once.

    Raises ``ValueError`` when ``initial < 0``, ``maximum < initial``, ``multiplier < 1`` or
    ``jitter`` is outside ``[0, 1]``, and beyond the engine's bounds: ``initial`` and ``maximum``
    at most a day (:data:`~django_workers.core.limits.MAX_WAIT` seconds), ``multiplier`` at most
    :data:`~django_workers.core.limits.MAX_MULTIPLIER`. ``TypeError`` for a value that is not a
    number (int or float, not a bool).
    """

    initial: float = 1.0
    maximum: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.1

    def __post_init__(self) -> None:
        initial = _number("initial", self.initial)
        maximum = _number("maximum", self.maximum)
        multiplier = _number("multiplier", self.multiplier)
        jitter = _number("jitter", self.jitter)
        if initial < 0:
            raise ValueError(f"Backoff initial must be >= 0 seconds (0 restarts at once), got {shown(self.initial)}")
        if initial > MAX_WAIT:
            raise ValueError(f"Backoff initial must be <= {MAX_WAIT:g} seconds (a day), got {shown(self.initial)}")
        if maximum < initial:
            given = repr(maximum) if math.isfinite(maximum) else shown(self.maximum)
            raise ValueError(f"Backoff maximum ({given}) must be >= initial ({initial!r})")
        if maximum > MAX_WAIT:
            raise ValueError(f"Backoff maximum must be <= {MAX_WAIT:g} seconds (a day), got {shown(self.maximum)}")
        if multiplier < 1:
            raise ValueError(f"Backoff multiplier must be >= 1, got {shown(self.multiplier)}")
        if multiplier > MAX_MULTIPLIER:
            raise ValueError(f"Backoff multiplier must be <= {MAX_MULTIPLIER:g}, got {shown(self.multiplier)}")
        if not 0 <= jitter <= 1:
            raise ValueError(f"Backoff jitter must be between 0 and 1 inclusive, got {shown(self.jitter)}")
        object.__setattr__(self, "initial", initial)
        object.__setattr__(self, "maximum", maximum)
        object.__setattr__(self, "multiplier", multiplier)
        object.__setattr__(self, "jitter", jitter)

    def base_delay(self, restart: int) -> float:
        """The delay before restart number ``restart`` (1-based), before jitter."""
        if restart < 1:
            raise ValueError(f"restart numbers start at 1, got {restart!r}")
        if self.initial == 0:
            return 0.0
        try:
            delay = self.initial * self.multiplier ** (restart - 1)
        except OverflowError:
            return self.maximum
        return min(self.maximum, delay)

    def delay(self, restart: int, rand: Callable[[], float] = random.random) -> float:
        """The jittered delay before restart number ``restart`` (1-based).

        ``rand`` returns a float in ``[0, 1)``; inject a deterministic one in tests.
        """
        if self.initial == 0:
            return 0.0
        base = self.base_delay(restart)
        if self.jitter == 0:
            return base
        return base * (1 - self.jitter + 2 * self.jitter * rand())
