"""The ranges of the engine's numbers: what ``WorkerPool``, ``register()`` and ``Backoff`` accept.

A value outside them is refused at once with a ``ValueError`` naming the range, rather than
failing later in a worker's thread (``Event.wait`` cannot wait 1e300 seconds, a ``deque`` cannot
hold 2**70 events). The settings check the same ranges (``django_workers.settings.values``), and
docs/settings.md says why each bound is where it is.
"""

from __future__ import annotations

import math
import reprlib
from typing import Final

from .text import unprintable

__all__ = [
    "MAX_ATTEMPTS",
    "MAX_HISTORY_SIZE",
    "MAX_MULTIPLIER",
    "MAX_WAIT",
    "count",
    "number_text",
    "seconds",
    "shown",
]

#: The longest wait the pool takes, in seconds (a day): a deferred start, a restart backoff, a stop
#: timeout, the silence of a watched worker.
MAX_WAIT: Final = 86_400.0

#: The most execution attempts a worker may be given (0 means unlimited).
MAX_ATTEMPTS: Final = 1_000_000

#: The most events kept in memory per worker.
MAX_HISTORY_SIZE: Final = 1_000_000

#: The largest restart backoff multiplier.
MAX_MULTIPLIER: Final = 100.0


_short = reprlib.Repr()
_short.maxstring = 60
_short.maxother = 60


def shown(value: object) -> str:
    """A value for a message, never raising: its (truncated) repr, or the size of a huge int."""
    if isinstance(value, int) and value.bit_length() > 128:
        return f"{'a negative' if value < 0 else 'an'} int of {value.bit_length()} bits"
    try:
        return _short.repr(value)
    except Exception:
        return unprintable(value)


def number_text(value: float) -> str:
    """A bound as messages show it: ``86400``, ``0.1``."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def seconds(name: str, value: object, low: float = 0.0, high: float = MAX_WAIT, *, low_open: bool = False) -> float:
    """``value`` as a float if it is a real number of seconds (not a bool) within ``[low, high]``.

    ``(low, high]`` when ``low_open``. ``TypeError`` for a non-number, ``ValueError`` naming
    ``name`` and the range for NaN, an infinity or a number out of range (a huge int included: it
    is compared before any conversion to float).
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds (int or float), got {shown(value)}")
    bounds = f"{'>' if low_open else '>='} {number_text(low)} and <= {number_text(high)}"
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number of seconds ({bounds}), got {value!r}")
    if value < low or (low_open and value == low) or value > high:
        raise ValueError(f"{name} must be {bounds} seconds, got {shown(value)}")
    return float(value)


def count(name: str, value: object, low: int, high: int, meaning: str) -> int:
    """``value`` if it is an int (not a bool) within ``[low, high]``; ``meaning`` ends the messages.

    ``TypeError`` for a non-int, ``ValueError`` naming ``name`` and the range otherwise.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int ({meaning}), got {shown(value)}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be >= {low} and <= {high:,} ({meaning}), got {shown(value)}")
    return value
