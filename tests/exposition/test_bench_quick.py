"""benchmarks/bench_observability.py runs end to end (smoke mode). Speed is judged by the benchmark, not here."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_bench_observability_quick_mode_measures_every_row() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_observability.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summary = result.stdout.split("Summary", 1)[1]
    rows = [line for line in summary.splitlines() if re.match(r"  [1-5]\. ", line)]
    assert [row.split(".")[0].strip() for row in rows] == ["1", "2", "3", "4", "5"], summary
    for row in rows[:4]:
        assert row.rstrip().endswith("info"), row
    assert re.search(r"<= 1\.5x\s+(PASS|FAIL)\s+<- TARGET$", rows[4].rstrip()), rows[4]
    assert "Traceback" not in result.stderr
