"""The benchmark script runs end to end (smoke mode). Speed is judged by the benchmark, not here."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def bench_core(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_core.py"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        check=False,
    )


@pytest.mark.slow
def test_bench_core_quick_mode_measures_every_benchmark() -> None:
    result = bench_core("--quick", timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = result.stdout.split("Summary", 1)[1]
    rows = [line for line in summary.splitlines() if re.match(r"  [1-5]\. ", line)]
    # 1 per-attempt, 2 start + stop of sync workers, 3 start + stop of async workers, then the stop
    # of cancelled ones and the floor's start (information), 4 idle CPU, 5 memory.
    assert [row.split(".")[0].strip() for row in rows] == ["1", "2", "2", "3", "3", "3", "3", "4", "5"], summary
    for row in rows:
        expected = ("info",) if "cancelled" in row or "floor" in row else ("PASS", "FAIL")
        assert row.rstrip().endswith(expected), row


@pytest.mark.slow
def test_bench_core_async_workers_option_sizes_benchmark_3() -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "bench_core.py"),
            "--quick",
            "--only",
            "3",
            "--async-workers",
            "300",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "start/stop of 300 async workers vs 300 raw asyncio tasks" in result.stdout
    assert "3. start floor, 300 tasks + ctx" in result.stdout


def test_bench_core_rejects_a_worker_count_below_one() -> None:
    result = bench_core("--async-workers", "0", timeout=60)
    assert result.returncode == 2
    assert "--async-workers must be >= 1, got 0" in result.stderr
