"""The benchmark script runs end to end (smoke mode). Speed is judged by the benchmark, not here."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_bench_core_quick_mode_measures_every_benchmark() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_core.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summary = result.stdout.split("Summary", 1)[1]
    rows = [line for line in summary.splitlines() if re.match(r"  [1-5]\. ", line)]
    # 1 per-attempt, 2 start + stop of sync workers, 3 start + stop of async workers and the stop of
    # cancelled ones (information), 4 idle CPU, 5 memory.
    assert [row.split(".")[0].strip() for row in rows] == ["1", "2", "2", "3", "3", "3", "4", "5"], summary
    for row in rows:
        expected = ("info",) if "cancelled" in row else ("PASS", "FAIL")
        assert row.rstrip().endswith(expected), row
