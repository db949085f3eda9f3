"""benchmarks/bench_core.py and bench_peers.py run end to end (smoke mode). Speed is judged by the benchmarks."""

from __future__ import annotations

import re

import pytest

from tests.benchmarks.conftest import run_benchmark, summary_rows


@pytest.mark.slow
def test_bench_core_quick_mode_measures_every_benchmark() -> None:
    result = run_benchmark("bench_core.py", "--quick", timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = summary_rows(result.stdout, r"  [1-5]\. ")
    # 1 per-attempt, 2 start + stop of sync workers, 3 start + stop of async workers idle in
    # until_cancelled() and in the README loop, then the floor's start (information), 4 idle CPU,
    # 5 memory.
    assert [row.split(".")[0].strip() for row in rows] == ["1", "2", "2", "3", "3", "3", "3", "3", "4", "5"], (
        result.stdout
    )
    assert sum("until_cancelled" in row for row in rows) == 2
    assert sum("README loop" in row for row in rows) == 2
    for row in rows:
        expected = ("info",) if "floor" in row else ("PASS", "FAIL")
        assert row.rstrip().endswith(expected), row


@pytest.mark.slow
def test_bench_core_async_workers_option_sizes_benchmark_3() -> None:
    result = run_benchmark("bench_core.py", "--quick", "--only", "3", "--async-workers", "300", timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "start/stop of 300 async workers vs 300 raw asyncio tasks" in result.stdout
    assert "3. start floor, 300 tasks + ctx" in result.stdout


def test_bench_core_rejects_a_worker_count_below_one() -> None:
    result = run_benchmark("bench_core.py", "--async-workers", "0", timeout=60)
    assert result.returncode == 2
    assert "--async-workers must be >= 1, got 0" in result.stderr


@pytest.mark.slow
def test_bench_peers_quick_mode_measures_both_sides() -> None:
    result = run_benchmark("bench_peers.py", "--quick", timeout=280, warnings_as_errors=True)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = summary_rows(result.stdout, r"  [1-4]\. ")
    names = [re.split(r"\s{2,}", row.strip())[0] for row in rows]
    # 1 start-up of 5, 2 memory of 3 and of 5, 3 stop of 5, 4 restart latency median and p95.
    assert names == [
        "1. start-up, 5 workers",
        "2. memory (PSS), 3 idle workers",
        "2. memory (PSS), 5 idle workers",
        "3. graceful stop, 5 workers",
        "4. restart latency, median",
        "4. restart latency, p95",
    ], result.stdout
    for row in rows:
        assert row.rstrip().endswith(("PASS", "FAIL")), row
        assert "n/a" not in row and " - " not in row, row
