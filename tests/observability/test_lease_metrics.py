"""The metrics of singleton workers: the leader gauge, the lease transitions, standby and stuck statuses."""

from __future__ import annotations

import threading

import pytest
from prometheus_client import CollectorRegistry

from django_workers.core import WorkerContext
from django_workers.core.execution import WorkerStatus
from django_workers.metrics import WorkerMetrics
from tests.support import FnWorker, Harness, wait_for


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def status_of(registry: CollectorRegistry, worker: str) -> list[str]:
    """The statuses whose ``worker_status`` series is 1 (exactly one, when all is well)."""
    return [
        sample.labels["status"]
        for metric in registry.collect()
        if metric.name == "worker_status"
        for sample in metric.samples
        if sample.labels["worker"] == worker and sample.value == 1
    ]


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def test_the_leader_gauge_and_transitions_follow_the_lease(harness: Harness, registry: CollectorRegistry) -> None:
    gate = harness.gate()
    began = threading.Event()

    def body(ctx: WorkerContext) -> None:
        began.set()
        while not gate.is_set() and not ctx.cancelled:
            ctx.sleep(0.01)
        gate.wait()  # ignores the loss until the test lets it go: stuck

    metrics = WorkerMetrics().register(registry)
    pool = harness.pool(metrics=metrics)
    pool.register(FnWorker("relay-1", body), singleton=True)
    pool.register(FnWorker("plain", lambda ctx: None))
    pool.start()

    assert value(registry, "worker_lease_leader", worker="relay_1") == 0, "exists from the start, at 0"
    assert value(registry, "worker_lease_leader", worker="plain") is None, "only singletons have one"
    assert status_of(registry, "relay_1") == ["standby"]

    pool.lead("relay-1", 4)
    assert began.wait(5)
    assert value(registry, "worker_lease_leader", worker="relay_1") == 1
    assert value(registry, "worker_lease_transitions_total", worker="relay_1", change="acquired") == 1
    assert status_of(registry, "relay_1") == ["running"]

    pool.stand_by("relay-1", "test")
    assert value(registry, "worker_lease_leader", worker="relay_1") == 0
    assert value(registry, "worker_lease_transitions_total", worker="relay_1", change="lost") == 1
    assert pool.mark_stuck("relay-1", 0.5)
    assert status_of(registry, "relay_1") == ["stuck"]

    gate.set()
    wait_for(lambda: pool.execution("relay-1").status is WorkerStatus.STANDBY)
    # The report changes first, then the metrics hear of it (success, then standby): wait for the gauge.
    wait_for(lambda: status_of(registry, "relay_1") == ["standby"], what="the standby gauge")
