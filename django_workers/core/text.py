"""Text taken from user objects: never raising, and bounded.

Every error text the pool keeps or writes (event messages, ``last_error``, tracebacks, log
messages, history rows) comes from here. An object whose ``__str__`` or ``__repr__`` raises gives
``<unprintable TypeName>`` instead of breaking supervision; lone surrogates (text that cannot be
encoded as UTF-8) are escaped; and a text longer than :data:`ERROR_TEXT_LIMIT` characters is cut,
with a mark saying how much was cut.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from types import FrameType

__all__ = [
    "ERROR_TEXT_LIMIT",
    "cap",
    "cap_middle",
    "format_exception",
    "format_stack",
    "safe_repr",
    "safe_str",
    "unprintable",
]

#: The most characters of one error text (a message, a traceback, a stack) that the pool keeps.
ERROR_TEXT_LIMIT = 16 * 1024


def _type_name(obj: object) -> str:
    try:
        return type(obj).__qualname__
    except Exception:  # pragma: no cover - a metaclass that breaks even this
        return "object"


def unprintable(obj: object) -> str:
    """The text of an object whose ``str()`` or ``repr()`` raised: ``<unprintable TypeName>``."""
    return f"<unprintable {_type_name(obj)}>"


def _clean(text: str) -> str:
    """``text`` with lone surrogates escaped, so it can be written as UTF-8 (logs, the database)."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def _bounded(text: str, limit: int, cut: Callable[[str, int], str]) -> str:
    """``text`` cut with ``cut``, then cleaned; escaping lengthens a text, so it is cut again."""
    text = cut(text, limit)
    cleaned = _clean(text)
    return text if cleaned is text else cut(cleaned, limit)


def cap(text: str, limit: int = ERROR_TEXT_LIMIT) -> str:
    """``text`` cut to at most ``limit`` characters (plus the mark), keeping its beginning."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… [{len(text) - limit:,} more characters cut]"


def cap_middle(text: str, limit: int = ERROR_TEXT_LIMIT) -> str:
    """``text`` cut to at most ``limit`` characters (plus the mark), keeping both ends.

    For tracebacks and stacks: the outermost frames come first, the exception line last.
    """
    if len(text) <= limit:
        return text
    head = limit * 3 // 4
    tail = limit - head
    return f"{text[:head]}\n… [{len(text) - limit:,} characters cut] …\n{text[-tail:]}"


def safe_str(obj: object, limit: int = ERROR_TEXT_LIMIT) -> str:
    """``str(obj)``, capped; ``<unprintable TypeName>`` when it raises or is not a str."""
    try:
        text = str(obj)
    except Exception:
        return unprintable(obj)
    if type(text) is str and len(text) <= limit and text.isascii():
        return text  # the common case, on every failed attempt: no further call
    if type(text) is not str:  # a str subclass whose methods may misbehave
        try:
            text = str.__str__(text)
        except Exception:  # pragma: no cover - str.__str__ of a str subclass does not raise
            return unprintable(obj)
    return _bounded(text, limit, cap)


def safe_repr(obj: object, limit: int = ERROR_TEXT_LIMIT) -> str:
    """``repr(obj)``, capped; ``<unprintable TypeName>`` when it raises."""
    try:
        text = repr(obj)
    except Exception:
        return unprintable(obj)
    if type(text) is not str:  # pragma: no cover - repr() itself refuses what is not a str
        text = str.__str__(text)
    return _bounded(text, limit, cap)


def format_exception(exc: BaseException, limit: int = ERROR_TEXT_LIMIT) -> str:
    """The traceback of ``exc`` with its causes (as ``traceback.format_exception``), capped.

    Never raises: a traceback that cannot be formatted (a recursion too deep, a broken object in
    the chain) gives a one-line explanation instead.
    """
    try:
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    except Exception as error:  # RecursionError on absurd chains, say
        text = f"{_type_name(exc)}: (the traceback could not be formatted: {_type_name(error)})\n"
    return _bounded(text, limit, cap_middle)


def format_stack(frame: FrameType, limit: int = ERROR_TEXT_LIMIT) -> str:
    """Where ``frame``'s thread is (as ``traceback.format_stack``), capped; never raises."""
    try:
        text = "".join(traceback.format_stack(frame))
    except Exception as error:  # pragma: no cover - a frame whose source cannot be read
        text = f"(the stack could not be formatted: {_type_name(error)})\n"
    return _bounded(text, limit, cap_middle)
