"""The history benchmark runs end to end (smoke mode), on the database of the run. Speed is judged by the benchmark."""

from __future__ import annotations

import pytest

from tests.benchmarks.conftest import run_benchmark, summary_rows


@pytest.mark.slow
def test_bench_history_quick_mode_measures_both_benchmarks() -> None:
    # DATABASE_URL, when set, is passed on: the benchmark then creates (and drops) a PostgreSQL
    # database of its own on that server; otherwise it uses a SQLite file of its own.
    result = run_benchmark("bench_history.py", "--quick", timeout=300, warnings_as_errors=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "database: " in result.stdout
    rows = summary_rows(result.stdout, r"  [12]\. ")
    assert [row.split(".")[0].strip() for row in rows] == ["1", "2"], result.stdout
    assert "events persisted per second" in rows[0]
    assert "per attempt, history on/off" in rows[1]
    for row in rows:
        assert row.rstrip().endswith(("PASS", "FAIL")), row
