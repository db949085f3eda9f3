"""The primitives of settings validation: one value in, the parsed value and its messages out.

Every parser returns ``(value, messages)``: the parsed value, or ``None`` when it is invalid, and
the check messages that say why (and warnings, which leave the value set). Nothing is gathered
by side effect: callers add up the messages they get, as Django's ``admin/checks.py`` does.

The range of every number of the setting and of the command options is a :class:`Range` here,
stated once: the messages name the bound a value crosses, the hints the whole range. The engine's
own bounds (the longest wait, the most attempts) come from :mod:`django_workers.core.limits`.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from django.core import checks

from ..core import limits as engine
from ..core.backoff import Backoff
from .ids import E_OUT_OF_RANGE, E_WRONG_TYPE, W_UNKNOWN_KEY
from .types import SETTING

__all__ = [
    "ATTEMPTS",
    "BATCH_SIZE",
    "BUFFER_SIZE",
    "DEFERRED_START_THRESHOLD",
    "HEARTBEAT_INTERVAL",
    "HEARTBEAT_WARNING_BELOW",
    "HISTORY_SIZE",
    "LEASE_MARGIN",
    "LEASE_TTL",
    "MAX_SILENCE",
    "ORPHAN_GRACE",
    "PRUNE_BATCH_SIZE",
    "PRUNE_OLDER_THAN",
    "RENEW_INTERVAL",
    "RETENTION_DAYS",
    "STOP_TIMEOUT",
    "Messages",
    "Range",
    "attempts",
    "backoff",
    "boolean",
    "count",
    "did_you_mean",
    "error",
    "got",
    "is_number",
    "parse_int",
    "parse_number",
    "parse_port",
    "port",
    "seconds",
    "section",
    "shown",
    "text",
    "warning",
    "where",
    "wrong_type",
]

#: What a parser says about the value it parsed.
Messages = list[checks.CheckMessage]

#: A word longer than this gets no "did you mean" (difflib is slow on long strings).
_LONGEST_WORD = 100

_DIGITS = re.compile(r"[0-9]+")
_BACKOFF_KEYS = ("INITIAL", "MAXIMUM", "MULTIPLIER", "JITTER")
_PORT_MEANING = "Use a TCP port number from 1 to 65535 (0: any free port, logged), or None for no endpoint."


@dataclass(frozen=True)
class Range:
    """The values one number of the setting may take: the one place that states its range.

    A check message names the bound the value crosses; its hint names the whole range (see
    :meth:`describe`) and what the number means. docs/settings.md says why each bound is there.
    """

    low: float
    high: float
    #: "seconds", "days"; "" for a count.
    unit: str = ""
    #: ``low`` itself is refused (``> low``).
    low_open: bool = False
    #: What ``high`` is in words ("a day"), shown beside it.
    high_note: str = ""
    #: What the number is for: the end of the hint.
    meaning: str = ""

    def low_bound(self) -> str:
        """The low bound as a condition: ``>= 0``, ``> 0``."""
        return f"{'>' if self.low_open else '>='} {engine.number_text(self.low)}"

    def high_bound(self) -> str:
        """The high bound as a condition, with its unit and note: ``<= 86400 seconds (a day)``."""
        return f"<= {self._high()}"

    def _unit(self) -> str:
        return f" {self.unit}" if self.unit else ""

    def _high(self) -> str:
        note = f" ({self.high_note})" if self.high_note else ""
        return f"{engine.number_text(self.high)}{self._unit()}{note}"

    def describe(self) -> str:
        """The range in words: ``from 0 to 86400 seconds (a day)``."""
        if self.low_open:
            return f"more than {engine.number_text(self.low)} and at most {self._high()}"
        return f"from {engine.number_text(self.low)} to {self._high()}"

    def hint(self) -> str:
        """The hint of a message about this number."""
        return f"Use a value {self.describe()}." + (f" {self.meaning}" if self.meaning else "")

    def violation(self, value: float) -> str | None:
        """What is wrong with ``value`` (a finite number), or ``None`` when it is in range."""
        if value < self.low or (self.low_open and value == self.low):
            return f"must be {self.low_bound()}{self._unit()}"
        if value > self.high:
            return f"must be {self.high_bound()}"
        return None


def _wait(meaning: str = "") -> Range:
    """A number of seconds more than 0 and at most a day (the engine's longest wait)."""
    return Range(0, engine.MAX_WAIT, "seconds", low_open=True, high_note="a day", meaning=meaning)


#: The ranges of the numbers of ``settings.WORKERS``; the engine's bounds come from core.limits.
DEFERRED_START_THRESHOLD: Final = Range(
    0, engine.MAX_WAIT, "seconds", high_note="a day", meaning="0 starts the worker at once."
)
STOP_TIMEOUT: Final = _wait(
    "Keep it below the grace period of your process manager (Kubernetes waits 30 seconds before SIGKILL)."
)
MAX_SILENCE: Final = _wait("It is how long a worker may go without ctx.heartbeat() before it counts as silent.")
ATTEMPTS: Final = Range(
    0,
    engine.MAX_ATTEMPTS,
    meaning="0 means unlimited attempts, 1 never restarts, n allows at most n attempts.",
)
HISTORY_SIZE: Final = Range(
    1, engine.MAX_HISTORY_SIZE, meaning="It is the number of events kept in memory per worker (default 100)."
)
RETENTION_DAYS: Final = Range(
    1, 36_500, "days", high_note="a century", meaning="It is how long stored executions are kept (default 7)."
)
HEARTBEAT_INTERVAL: Final = Range(
    0.1,
    3_600,
    "seconds",
    high_note="an hour",
    meaning="It is how often each runworkers process updates its node row (default 10).",
)
#: Below this ``HEARTBEAT_INTERVAL`` (in range) is a warning: a write a second per process, or more.
HEARTBEAT_WARNING_BELOW: Final = 1.0
ORPHAN_GRACE: Final = _wait("Use a few heartbeat intervals (default: 3 x HEARTBEAT_INTERVAL), or None.")
BUFFER_SIZE: Final = Range(
    1,
    1_000_000,
    meaning="It is how many events wait in memory while the database is unreachable (default 1000).",
)
BATCH_SIZE: Final = Range(1, 10_000, meaning="It is how many events are written per transaction (default 1000).")
LEASE_TTL: Final = _wait(
    "It is how long a lease lasts after each renewal: how long a dead holder keeps the others "
    "from taking over (default 60)."
)
RENEW_INTERVAL: Final = _wait(
    "It is how often the holder renews its lease, less than LEASE_TTL (default: a third of it), or None."
)
LEASE_MARGIN: Final = _wait(
    "It is what the holder subtracts from LEASE_TTL for clock-rate differences and statement latency (default 1)."
)
#: ``pruneworkerhistory --older-than`` (0: everything) and ``--batch-size``.
PRUNE_OLDER_THAN: Final = Range(0, RETENTION_DAYS.high, "days", high_note="a century")
PRUNE_BATCH_SIZE: Final = Range(1, 10_000)

#: The default ranges of :func:`parse_number` (a command-line option in seconds).
_WAIT = Range(0, engine.MAX_WAIT, "seconds", high_note="a day")
_POSITIVE_WAIT = _wait()


#: A value for a message, never raising: its (truncated) repr, or the size of a huge int.
shown = engine.shown


def got(value: object) -> str:
    """A short description of a value: its (truncated) repr and its type."""
    return f"{shown(value)} ({type(value).__qualname__})"


def where(*keys: object) -> str:
    """Where a value is in the setting: ``WORKERS['HISTORY']['DATABASE']``."""
    return SETTING + "".join(f"[{key!r}]" for key in keys)


def did_you_mean(word: object, candidates: Sequence[str]) -> str | None:
    """The candidate closest to ``word`` (also tried upper-cased), if one is close enough."""
    if not isinstance(word, str) or len(word) > _LONGEST_WORD:
        return None
    for probe in (word, word.upper()):
        matches = difflib.get_close_matches(probe, candidates, n=1, cutoff=0.6)
        if matches:
            return matches[0]
    return None


def is_number(value: object) -> bool:
    """An int or a float, not a bool."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def error(id: str, msg: str, hint: str) -> checks.CheckMessage:
    """An error of the checks."""
    return checks.Error(msg, hint=hint, id=id)


def warning(id: str, msg: str, hint: str) -> checks.CheckMessage:
    """A warning of the checks."""
    return checks.Warning(msg, hint=hint, id=id)


def wrong_type(place: str, value: object, expected: str, example: str) -> checks.CheckMessage:
    """The value at ``place`` is not of the ``expected`` type."""
    return error(E_WRONG_TYPE, f"{place} must be {expected}, got {got(value)}.", f"Write it as, e.g., {example}.")


def section(
    keys: tuple[object, ...], value: object, known: Sequence[str], example: str
) -> tuple[dict[str, Any], Messages]:
    """A dict sub-setting: its known keys (a warning for each unknown one); ``{}`` when not a dict."""
    place = where(*keys)
    if not isinstance(value, Mapping):
        return {}, [wrong_type(place, value, "a dict", example)]
    messages: Messages = []
    for key in value:
        if key in known:
            continue
        suggestion = did_you_mean(key, known)
        if suggestion is not None:
            msg = f"{place} has an unknown key {shown(key)}; did you mean {suggestion!r}?"
            hint = f"Rename {shown(key)} to {suggestion!r}; unknown keys are ignored."
        else:
            msg = f"{place} has an unknown key {shown(key)}."
            hint = f"Remove it; unknown keys are ignored. Known keys: {', '.join(known)}."
        messages.append(warning(W_UNKNOWN_KEY, msg, hint))
    return {key: value[key] for key in known if key in value}, messages


def seconds(
    keys: tuple[object, ...], value: object, limits: Range | None = None, *, positive: bool = False
) -> tuple[float | None, Messages]:
    """A finite number of seconds within ``limits``.

    By default :data:`DEFERRED_START_THRESHOLD`'s range, or :data:`MAX_SILENCE`'s when
    ``positive`` (what the entries of ``WORKERS["WORKERS"]`` override).
    """
    if limits is None:
        limits = MAX_SILENCE if positive else DEFERRED_START_THRESHOLD
    place = where(*keys)
    if not is_number(value):
        return None, [wrong_type(place, value, "a number of seconds (int or float)", f"{keys[-1]!r}: 2.5")]
    assert isinstance(value, int | float)
    if isinstance(value, float) and not math.isfinite(value):
        return None, [error(E_OUT_OF_RANGE, f"{place} must be a finite number, got {value!r}.", limits.hint())]
    problem = limits.violation(value)
    if problem is not None:
        return None, [error(E_OUT_OF_RANGE, f"{place} {problem}, got {shown(value)}.", limits.hint())]
    return float(value), []


def count(keys: tuple[object, ...], value: object, limits: Range) -> tuple[int | None, Messages]:
    """An int within ``limits``."""
    place = where(*keys)
    if isinstance(value, bool) or not isinstance(value, int):
        return None, [wrong_type(place, value, "an int", f"{keys[-1]!r}: {max(int(limits.low), 1)}")]
    problem = limits.violation(value)
    if problem is not None:
        return None, [error(E_OUT_OF_RANGE, f"{place} {problem}, got {shown(value)}.", limits.hint())]
    return value, []


def attempts(keys: tuple[object, ...], value: object) -> tuple[int | None, Messages]:
    """A number of execution attempts: 0 = unlimited."""
    return count(keys, value, ATTEMPTS)


def boolean(keys: tuple[object, ...], value: object) -> tuple[bool | None, Messages]:
    """True or False (not a truthy value)."""
    if not isinstance(value, bool):
        return None, [wrong_type(where(*keys), value, "a bool", f"{keys[-1]!r}: True")]
    return value, []


def text(keys: tuple[object, ...], value: object, example: str) -> tuple[str | None, Messages]:
    """A str."""
    if not isinstance(value, str):
        return None, [wrong_type(where(*keys), value, "a str", example)]
    return value, []


def parse_port(value: object, source: str) -> int:
    """A TCP port number (``0``: any free port) from an int or a string of digits.

    ``ValueError`` naming ``source`` (``"--metrics-port"``, say) for anything else: a bool, a
    float, a negative number, more than 65535.
    """
    port = value
    if isinstance(value, str) and _DIGITS.fullmatch(value.strip()):
        port = int(value.strip())
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"{source} must be a TCP port number from 0 to 65535 (0: any free port), got {value!r}")
    return port


def parse_number(
    value: str, source: str, limits: Range | None = None, *, unit: str = "seconds", positive: bool = False
) -> float:
    """A finite number from text (a command-line option) within ``limits``.

    By default from 0 (more than 0 when ``positive``) to a day of seconds. ``ValueError`` naming
    ``source`` (``"--stop-timeout"``, say), the unit and the bound crossed for anything else.
    """
    if limits is None:
        limits = _POSITIVE_WAIT if positive else _WAIT
    unit = limits.unit or unit
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if math.isfinite(number) and number > limits.high:
        raise ValueError(f"{source} must be {limits.high_bound()}, got {value!r}")
    if not math.isfinite(number) or limits.violation(number) is not None:
        raise ValueError(f"{source} must be a number of {unit} {limits.low_bound()}, got {value!r}")
    return number


def parse_int(value: str, source: str, limits: Range) -> int:
    """An int from text (a command-line option) within ``limits``.

    ``ValueError`` naming ``source`` (``"--batch-size"``, say) and the bound crossed otherwise.
    """
    try:
        number = int(value)
    except ValueError:
        number = None
    if number is None or number < limits.low:
        raise ValueError(f"{source} must be an int {limits.low_bound()}, got {value!r}")
    if number > limits.high:
        raise ValueError(f"{source} must be an int {limits.high_bound()}, got {value!r}")
    return number


def port(keys: tuple[object, ...], value: object) -> tuple[int | None, Messages]:
    """A TCP port number from 0 (any free port) to 65535, as an int (see :func:`parse_port`)."""
    if isinstance(value, bool) or not isinstance(value, int):
        return None, [wrong_type(where(*keys), value, "an int", f"{keys[-1]!r}: 9100")]
    try:
        return parse_port(value, where(*keys)), []
    except ValueError as exc:
        return None, [error(E_OUT_OF_RANGE, f"{exc}.", _PORT_MEANING)]


def backoff(keys: tuple[object, ...], value: object, base: Backoff) -> tuple[Backoff | None, Messages]:
    """A ``RESTART_BACKOFF`` dict (missing keys taken from ``base``) or a ``Backoff``."""
    if isinstance(value, Backoff):
        return value, []
    place = where(*keys)
    example = f"{keys[-1]!r}: {{'INITIAL': 1.0, 'MAXIMUM': 30.0, 'MULTIPLIER': 2.0, 'JITTER': 0.1}}"
    if not isinstance(value, Mapping):
        return None, [wrong_type(place, value, "a dict (or a django_workers.Backoff)", example)]
    given, messages = section(keys, value, _BACKOFF_KEYS, example)
    numbers: dict[str, float] = {
        "initial": base.initial,
        "maximum": base.maximum,
        "multiplier": base.multiplier,
        "jitter": base.jitter,
    }
    for key, number in given.items():
        if is_number(number):
            numbers[key.lower()] = number
        else:
            messages.append(wrong_type(where(*keys, key), number, "a number (int or float)", f"{key!r}: 1.0"))
    if any(message.is_serious() for message in messages):
        return None, messages
    try:
        return Backoff(**numbers), messages
    except (TypeError, ValueError) as exc:
        day = engine.number_text(engine.MAX_WAIT)
        hint = (
            f"Use INITIAL from 0 (restart at once) to {day} seconds (a day), MAXIMUM from INITIAL to "
            f"{day}, MULTIPLIER from 1 to {engine.number_text(engine.MAX_MULTIPLIER)} and JITTER from 0 to 1. "
            "Missing keys are taken from the defaults (for a worker, from the pool's RESTART_BACKOFF)."
        )
        return None, [*messages, error(E_OUT_OF_RANGE, f"{place} is out of range: {exc}.", hint)]
