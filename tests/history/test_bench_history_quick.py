"""The history benchmark runs end to end (smoke mode), on the database of the run. Speed is judged by the benchmark."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_bench_history_quick_mode_measures_both_benchmarks() -> None:
    # DATABASE_URL, when set, is passed on: the benchmark then creates (and drops) a PostgreSQL
    # database of its own on that server; otherwise it uses a SQLite file of its own.
    result = subprocess.run(
        [sys.executable, "-W", "error", str(ROOT / "benchmarks" / "bench_history.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "database: " in result.stdout
    summary = result.stdout.split("Summary", 1)[1]
    rows = [line for line in summary.splitlines() if re.match(r"  [12]\. ", line)]
    assert [row.split(".")[0].strip() for row in rows] == ["1", "2"], summary
    assert "events persisted per second" in rows[0]
    assert "per attempt, history on/off" in rows[1]
    for row in rows:
        assert row.rstrip().endswith(("PASS", "FAIL")), row
