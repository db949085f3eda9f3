"""The history's invariants, checked against what the pool itself reported (a :class:`Counting` listener).

The history may be incomplete (events dropped, counted and marked), never wrong:

- nothing invented: every stored event of an attempt is one the pool reported, in its order and
  with its timestamp, or one of the closings the recorder writes (:func:`closings`);
- counts reconcile: stored + dropped (+ still pending) = reported; the node's ``dropped_events`` and
  the markers say the same number; the pool's own counters (the metrics) agree with what it reported;
- every stored attempt has a truthful end: the one the pool reported, or ``unknown`` when that
  end is not stored (and events were dropped), or closed at the stop when it was still running
  (it then got ``did not stop within``); none is left open.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

from prometheus_client import CollectorRegistry

from django_workers.core.events import (
    AttemptFailed,
    AttemptStarted,
    AttemptSucceeded,
    ReportedEvent,
    WorkerStopTimedOut,
)
from django_workers.history import HistoryRecorder
from django_workers.history.attempts import END_UNKNOWN
from django_workers.models import Execution, ExecutionEvent, Node
from tests.history.conftest import Counting

DROPPED = re.compile(r"^dropped (\d+) event\(s\)")


def closings(recorder: HistoryRecorder) -> tuple[str, str, str]:
    """The events the recorder writes itself (unknown end, stopped while running, stopped while deferred)."""
    node = f"{recorder.hostname}:{recorder.pid}"
    return (
        END_UNKNOWN,
        f"node {node} stopped while the attempt was still running",
        f"node {node} stopped before the deferred attempt started",
    )


def _is_subsequence(part: Sequence[Any], whole: Sequence[Any]) -> bool:
    remaining = iter(whole)
    return all(any(item == candidate for candidate in remaining) for item in part)


def pool_counts(registry: CollectorRegistry) -> Counter[str]:
    """``worker_executions_total`` summed over the workers, by status (the pool's own counters)."""
    counts: Counter[str] = Counter()
    for metric in registry.collect():
        for sample in metric.samples:
            if sample.name == "worker_executions_total":
                counts[sample.labels["status"]] += int(sample.value)
    return counts


def check_history(
    alias: str, recorder: HistoryRecorder, counting: Counting, registry: CollectorRegistry | None = None
) -> Counter[str]:
    """Assert the invariants of the module docstring for ``recorder``'s node; the stored attempts by status."""
    node = Node.objects.using(alias).get(pk=recorder.node_id)
    unknown_end, stopped_running, _ = closings(recorder)
    made_here = set(closings(recorder))

    truth: dict[str, list[ReportedEvent]] = defaultdict(list)
    for event in counting.events:
        truth[event.execution_id].append(event)
    stored: dict[str, list[ExecutionEvent]] = defaultdict(list)
    markers: list[str] = []
    for event in ExecutionEvent.objects.using(alias).filter(node=node).order_by("timestamp", "id"):
        if event.execution_id is None:
            markers.append(event.message)
        else:
            stored[str(event.execution_id)].append(event)

    # Nothing invented, nothing stored twice, nothing out of order.
    stored_reported = 0
    for execution_id, events in stored.items():
        kept = [(event.message, event.timestamp) for event in events if event.message not in made_here]
        reported = [(event.record.message, event.record.timestamp) for event in truth.get(execution_id, [])]
        assert _is_subsequence(kept, reported), (execution_id, kept, reported)
        stored_reported += len(kept)

    # Counts reconcile.
    dropped = recorder.dropped
    assert stored_reported + dropped + recorder.pending == len(counting.events), (
        stored_reported,
        dropped,
        recorder.pending,
        len(counting.events),
    )
    assert node.dropped_events == dropped
    counted = []
    for message in markers:
        match = DROPPED.match(message)
        assert match, message
        counted.append(int(match[1]))
    assert sum(counted) == dropped, (markers, dropped)
    if registry is not None:
        counts = pool_counts(registry)
        ends = Counter(
            "success" if isinstance(event, AttemptSucceeded) else "error"
            for event in counting.events
            if isinstance(event, AttemptSucceeded | AttemptFailed)
        )
        started = sum(1 for event in counting.events if isinstance(event, AttemptStarted))
        assert (counts["started"], counts["success"], counts["error"]) == (started, ends["success"], ends["error"])

    # Every stored attempt has a truthful end.
    rows = {str(row.id): row for row in Execution.objects.using(alias).filter(node=node)}
    with_events = {key for key, events in stored.items() if any(event.message not in made_here for event in events)}
    assert set(rows) == with_events
    statuses: Counter[str] = Counter()
    for execution_id, row in rows.items():
        events = truth[execution_id]
        messages = {event.message for event in stored[execution_id]}
        assert row.worker == events[0].worker
        ends = [event for event in events if isinstance(event, AttemptSucceeded | AttemptFailed)]
        end = ends[-1] if ends else None
        what = f"{row.worker} attempt {row.attempt} ({execution_id})"
        if row.status == "unknown":
            assert unknown_end in messages, what
            assert end is None or end.record.message not in messages, what
            assert (row.finished_at, row.duration) == (None, None), what
            assert dropped > 0, what
        elif row.error == stopped_running:
            assert row.status == "lost", what
            assert any(isinstance(event, WorkerStopTimedOut) for event in events), what
            assert end is None, what  # still running when the node stopped
        elif row.status in ("success", "error"):
            assert end is not None, what
            assert row.status == ("success" if isinstance(end, AttemptSucceeded) else "error"), what
            if end.record.message in messages:
                assert row.finished_at == end.record.timestamp, what
                assert row.duration == end.duration, what
                if isinstance(end, AttemptFailed):
                    assert row.error == end.failure.message, what
            else:  # its end was dropped; a later event of the attempt (restarting...) says how it ended
                assert row.finished_at is None, what
        elif row.status == "deferred":
            assert row.finished_at is not None, what
        else:
            raise AssertionError(f"{what} left {row.status!r}")
        statuses[row.status] += 1
    return statuses
