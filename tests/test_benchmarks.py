"""The benchmark script runs end to end (smoke mode). Speed is judged by the benchmark, not here."""

from __future__ import annotations

import pytest

from tests.benchmark_support import run_benchmark, summary_rows


@pytest.mark.slow
def test_bench_core_quick_mode_measures_every_benchmark() -> None:
    result = run_benchmark("bench_core.py", "--quick", timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = summary_rows(result.stdout, r"  [1-5]\. ")
    # 1 per-attempt, 2 start + stop of sync workers, 3 start + stop of async workers, then the stop
    # of cancelled ones and the floor's start (information), 4 idle CPU, 5 memory.
    assert [row.split(".")[0].strip() for row in rows] == ["1", "2", "2", "3", "3", "3", "3", "4", "5"], result.stdout
    for row in rows:
        expected = ("info",) if "cancelled" in row or "floor" in row else ("PASS", "FAIL")
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
