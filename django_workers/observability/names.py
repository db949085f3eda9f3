"""Metric names the Yokai way: the one rule for the ``worker`` label and the name prefixes."""

from __future__ import annotations

import re

__all__ = ["metric_prefix", "sanitize", "worker_label"]

# Prometheus metric names match [a-zA-Z_:][a-zA-Z0-9_:]*, colons being reserved for recording
# rules: a prefix is a name without colons.
_PREFIX = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")

_TRANSLATION = str.maketrans({" ": "_", "-": "_"})


def sanitize(text: str) -> str:
    """Yokai's ``Sanitize``: lower-cased, spaces and dashes replaced by ``_``."""
    return text.lower().translate(_TRANSLATION)


def worker_label(name: str) -> str:
    """The ``worker`` label of a worker name (``"My Worker-1"`` becomes ``"my_worker_1"``)."""
    return sanitize(name)


def metric_prefix(kind: str, value: object) -> str:
    """A metric namespace or subsystem, sanitised as Yokai does; ``ValueError`` if still invalid.

    ``"My-App"`` becomes ``"my_app"``; ``""`` means none. What sanitising cannot make valid (a
    dot, a leading digit, a non-ASCII letter) raises, naming the rule.
    """
    if not isinstance(value, str):
        raise TypeError(f"the metrics {kind} must be a str, got {value!r}")
    prefix = sanitize(value)
    if prefix and not _PREFIX.fullmatch(prefix):
        raise ValueError(
            f"the metrics {kind} {value!r} is not valid in a Prometheus metric name, even sanitised "
            f"({prefix!r}): use ASCII letters, digits and underscores (spaces and dashes become "
            f"underscores), not starting with a digit, e.g. 'myapp', or '' for none"
        )
    return prefix
