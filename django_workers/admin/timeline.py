"""A worker's attempts over the last day as buckets of an inline SVG (rendered by the template).

The day is 96 buckets of 15 minutes (three tally periods each). A bucket's colour says how its
attempts ended: ``lost`` (an attempt's process was lost), ``failed`` (failures only), ``mixed``
(failures and successes), ``ok`` (successes only), ``started`` (attempts started, none ended in
it: long-running workers) or ``empty``. Its tooltip (an SVG ``<title>``) gives the counts and
the period, in the current time zone.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Final

from django.utils import timezone
from django.utils.html import format_html_join
from django.utils.safestring import SafeString
from django.utils.translation import get_language, ngettext
from django.utils.translation import gettext as _

from ..models import TALLY_PERIOD

__all__ = ["BUCKETS", "BUCKET_WIDTH", "Bucket", "Timeline", "build_timeline", "period_labels"]

#: Buckets of a day, and the periods in each.
BUCKETS: Final = 96
PERIODS_PER_BUCKET: Final = 24 * 3600 // TALLY_PERIOD // BUCKETS
BUCKET_SECONDS: Final = PERIODS_PER_BUCKET * TALLY_PERIOD
#: The SVG's geometry (user units = CSS pixels): a gap of one unit between buckets.
BUCKET_WIDTH: Final = 6
HEIGHT: Final = 18

Counts = tuple[int, int, int, int, int]  # started, succeeded, failed, lost, restarted


@dataclass(frozen=True)
class Bucket:
    """One bucket: where it is drawn, its outcome (a CSS class suffix) and its tooltip."""

    x: int
    outcome: str
    title: str
    #: Attempts started in it (:attr:`Timeline.attempts` adds them up).
    started: int


@dataclass(frozen=True)
class Timeline:
    """The day's buckets, oldest first."""

    buckets: tuple[Bucket, ...]
    start: datetime
    width: int = BUCKETS * BUCKET_WIDTH
    height: int = HEIGHT
    bar_width: int = BUCKET_WIDTH - 1

    @property
    def attempts(self) -> int:
        """Attempts started in the day."""
        return sum(bucket.started for bucket in self.buckets)

    def rects(self) -> SafeString:
        """The buckets as SVG ``<rect>`` elements with their ``<title>``, escaped (``format_html``).

        Built here rather than by a template loop: a page has ~100 of them per worker.
        """
        return format_html_join(
            "",
            '<rect class="dw-bucket dw-bucket-{}" x="{}" y="0" width="{}" height="{}"><title>{}</title></rect>',
            ((bucket.outcome, bucket.x, self.bar_width, self.height, bucket.title) for bucket in self.buckets),
        )


def _outcome(started: int, succeeded: int, failed: int, lost: int) -> str:
    if lost:
        return "lost"
    if failed and succeeded:
        return "mixed"
    if failed:
        return "failed"
    if succeeded:
        return "ok"
    if started:
        return "started"
    return "empty"


def _period(start: datetime, end: datetime) -> str:
    start, end = timezone.localtime(start), timezone.localtime(end)
    return f"{start:%Y-%m-%d %H:%M}\u2013{end:%H:%M} {end:%Z}".strip()


@lru_cache(maxsize=4096)
def _describe_in(counts: Counts, language: str | None) -> str:
    """A bucket's counts in words, cached per language (a day has many alike buckets)."""
    started, succeeded, failed, lost, restarted = counts
    if not any(counts):
        return _("no attempt")
    parts = [
        ngettext("%d started", "%d started", started) % started,
        ngettext("%d succeeded", "%d succeeded", succeeded) % succeeded,
        ngettext("%d failed", "%d failed", failed) % failed,
    ]
    if lost:
        parts.append(ngettext("%d lost", "%d lost", lost) % lost)
    parts.append(ngettext("%d restart", "%d restarts", restarted) % restarted)
    return ", ".join(parts)


def period_labels(start: datetime, now: datetime) -> list[str]:
    """The period of each bucket of the day beginning at ``start``, as its tooltip says it (once per page)."""
    labels = []
    for index in range(BUCKETS):
        begin = start + timedelta(seconds=index * BUCKET_SECONDS)
        labels.append(_period(begin, min(begin + timedelta(seconds=BUCKET_SECONDS), max(now, begin))))
    return labels


def build_timeline(
    periods: Iterable[tuple[datetime, Counts]], start: datetime, now: datetime, labels: list[str] | None = None
) -> Timeline:
    """The buckets of the day beginning at ``start`` (a period boundary) from per-period counts.

    ``labels``: :func:`period_labels` of the same day, computed once for every timeline of a page.
    """
    if labels is None:
        labels = period_labels(start, now)
    sums = [[0] * 5 for _ in range(BUCKETS)]
    for period_start, counts in periods:
        index = int((period_start - start).total_seconds()) // BUCKET_SECONDS
        if 0 <= index < BUCKETS:
            total = sums[index]
            for i, value in enumerate(counts):
                total[i] += value
    language = get_language()  # once per timeline, not per bucket
    buckets = []
    for index, (started, succeeded, failed, lost, restarted) in enumerate(sums):
        described = _describe_in((started, succeeded, failed, lost, restarted), language)
        buckets.append(
            Bucket(
                x=index * BUCKET_WIDTH,
                outcome=_outcome(started, succeeded, failed, lost),
                title=f"{labels[index]}: {described}",
                started=started,
            )
        )
    return Timeline(buckets=tuple(buckets), start=start)
