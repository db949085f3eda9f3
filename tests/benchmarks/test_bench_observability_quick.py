"""benchmarks/bench_observability.py runs end to end (smoke mode). Speed is judged by the benchmark, not here."""

from __future__ import annotations

import re

import pytest

from tests.benchmarks.conftest import run_benchmark, summary_rows


@pytest.mark.slow
def test_bench_observability_quick_mode_measures_every_row() -> None:
    result = run_benchmark("bench_observability.py", "--quick", timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = summary_rows(result.stdout, r"  [1-5]\. ")
    assert [row.split(".")[0].strip() for row in rows] == ["1", "2", "3", "4", "5"], result.stdout
    for row in rows[:4]:
        assert row.rstrip().endswith("info"), row
    assert re.search(r"<= 1\.5x\s+(PASS|FAIL)\s+<- TARGET$", rows[4].rstrip()), rows[4]
    assert "Traceback" not in result.stderr
