"""Benchmark 7 (benchmarks/bench_fleet.py, singleton takeover and lease load) runs end to end in --quick mode.

PostgreSQL only (it creates and drops a database of its own). Takeover times are the benchmark's
to judge; here: every round took over with the next fence, each singleton had exactly one leader,
and the load is about one statement per renew interval per singleton per replica.
"""

from __future__ import annotations

import os
import re

import pytest

from tests.benchmarks.conftest import run_benchmark
from tests.benchmarks.test_bench_admin_quick import _databases

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://")),
        reason="benchmark 7 measures leases on PostgreSQL: set DATABASE_URL to run it",
    ),
]


@pytest.mark.timeout(300)
def test_bench_fleet_quick_mode_measures_takeovers_and_load() -> None:
    before = _databases()
    result = run_benchmark("bench_fleet.py", "--quick", timeout=280, warnings_as_errors=True)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    rounds = re.findall(r"^  round\s+\d+: fence (\d+) -> (\d+), takeover ([\d.]+) s", result.stdout, re.M)
    assert len(rounds) == 3, output
    for old, new, _ in rounds:
        assert int(new) == int(old) + 1, "each takeover is the next fence"
    assert "10 leader seat(s) of 10 singletons" in result.stdout, output
    per_seat = re.search(
        r"^statements/min per singleton per replica\s+([\d.]+) at RENEW_INTERVAL 2 s", result.stdout, re.M
    )
    assert per_seat, output
    assert 25 <= float(per_seat.group(1)) <= 35, "one statement per 2 s renew interval: about 30 a minute"
    assert re.search(r"^takeover / TTL\s+median [\d.]+x\s+worst [\d.]+x", result.stdout, re.M), output
    left = {name for name in _databases() - before if name.startswith("workers_fleet_")}
    assert not left, "the benchmark drops its database"
