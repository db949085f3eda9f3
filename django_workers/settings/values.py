"""The primitives of settings validation: one value in, the parsed value and its messages out.

Every parser returns ``(value, messages)``: the parsed value, or ``None`` when it is invalid, and
the check messages that say why (and warnings, which leave the value set). Nothing is gathered
by side effect: callers add up the messages they get, as Django's ``admin/checks.py`` does.
"""

from __future__ import annotations

import difflib
import math
import re
import reprlib
from collections.abc import Mapping, Sequence
from typing import Any

from django.core import checks

from ..core.backoff import Backoff
from .ids import E_OUT_OF_RANGE, E_WRONG_TYPE, W_UNKNOWN_KEY
from .types import SETTING

__all__ = [
    "Messages",
    "attempts",
    "backoff",
    "boolean",
    "count",
    "did_you_mean",
    "error",
    "got",
    "is_number",
    "parse_number",
    "parse_port",
    "port",
    "seconds",
    "section",
    "text",
    "warning",
    "where",
    "wrong_type",
]

#: What a parser says about the value it parsed.
Messages = list[checks.CheckMessage]

_short = reprlib.Repr()
_short.maxstring = 60
_short.maxother = 60

_DIGITS = re.compile(r"[0-9]+")
_BACKOFF_KEYS = ("INITIAL", "MAXIMUM", "MULTIPLIER", "JITTER")
_PORT_MEANING = "Use a TCP port number from 1 to 65535 (0: any free port, logged), or None for no endpoint."


def got(value: object) -> str:
    """A short description of a value: its (truncated) repr and its type."""
    return f"{_short.repr(value)} ({type(value).__qualname__})"


def where(*keys: object) -> str:
    """Where a value is in the setting: ``WORKERS['HISTORY']['DATABASE']``."""
    return SETTING + "".join(f"[{key!r}]" for key in keys)


def did_you_mean(word: object, candidates: Sequence[str]) -> str | None:
    """The candidate closest to ``word`` (also tried upper-cased), if one is close enough."""
    if not isinstance(word, str):
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
            msg = f"{place} has an unknown key {key!r}; did you mean {suggestion!r}?"
            hint = f"Rename {key!r} to {suggestion!r}; unknown keys are ignored."
        else:
            msg = f"{place} has an unknown key {key!r}."
            hint = f"Remove it; unknown keys are ignored. Known keys: {', '.join(known)}."
        messages.append(warning(W_UNKNOWN_KEY, msg, hint))
    return {key: value[key] for key in known if key in value}, messages


def seconds(keys: tuple[object, ...], value: object, *, positive: bool = False) -> tuple[float | None, Messages]:
    """A finite number of seconds, >= 0 (> 0 when ``positive``)."""
    place = where(*keys)
    if not is_number(value):
        return None, [wrong_type(place, value, "a number of seconds (int or float)", f"{keys[-1]!r}: 2.5")]
    assert isinstance(value, int | float)
    number = float(value)
    if math.isnan(number) or math.isinf(number):
        return None, [error(E_OUT_OF_RANGE, f"{place} must be a finite number, got {value!r}.", "Use a finite number.")]
    if positive and number <= 0:
        hint = (
            "Use a positive number of seconds, below the grace period of your process manager "
            "(Kubernetes waits 30 seconds before SIGKILL)."
        )
        return None, [error(E_OUT_OF_RANGE, f"{place} must be > 0 seconds, got {value!r}.", hint)]
    if number < 0:
        hint = "Use 0 to start at once, or a positive number of seconds."
        return None, [error(E_OUT_OF_RANGE, f"{place} must be >= 0 seconds, got {value!r}.", hint)]
    return number, []


def count(keys: tuple[object, ...], value: object, *, minimum: int, meaning: str) -> tuple[int | None, Messages]:
    """An int >= ``minimum``; ``meaning`` is the hint when it is too small."""
    place = where(*keys)
    if isinstance(value, bool) or not isinstance(value, int):
        return None, [wrong_type(place, value, "an int", f"{keys[-1]!r}: {max(minimum, 1)}")]
    if value < minimum:
        return None, [error(E_OUT_OF_RANGE, f"{place} must be >= {minimum}, got {value!r}.", meaning)]
    return value, []


def attempts(keys: tuple[object, ...], value: object) -> tuple[int | None, Messages]:
    """A number of execution attempts: 0 = unlimited."""
    meaning = "Use 0 for unlimited attempts, 1 to never restart, n for at most n attempts."
    return count(keys, value, minimum=0, meaning=meaning)


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


def parse_number(value: str, source: str, *, unit: str = "seconds", positive: bool = False) -> float:
    """A finite number from text (a command-line option): ``>= 0``, or ``> 0`` when ``positive``.

    ``ValueError`` naming ``source`` (``"--stop-timeout"``, say) and ``unit`` for anything else.
    """
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or number < 0 or (positive and number == 0):
        bound = "> 0" if positive else ">= 0"
        raise ValueError(f"{source} must be a number of {unit} {bound}, got {value!r}")
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
        hint = (
            "Use INITIAL >= 0 (0 restarts at once), MAXIMUM >= INITIAL, MULTIPLIER >= 1 and "
            "JITTER between 0 and 1. Missing keys are taken from the defaults (for a worker, from the "
            "pool's RESTART_BACKOFF)."
        )
        return None, [*messages, error(E_OUT_OF_RANGE, f"{place} is out of range: {exc}.", hint)]
