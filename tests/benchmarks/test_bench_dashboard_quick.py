"""Benchmark 4 (benchmarks/bench_dashboard.py, the overview page) runs end to end in --quick mode on PostgreSQL.

Speed is judged by the benchmark itself (noisy machines); here only that it runs, that both sides
show the same rows, and that the number of queries does not grow with the history (deterministic).
"""

from __future__ import annotations

import os
import re

import pytest

from tests.benchmarks.conftest import run_benchmark, summary_rows
from tests.benchmarks.test_bench_admin_quick import _databases

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://")),
        reason="benchmark 4 measures the overview page on PostgreSQL: set DATABASE_URL to run it",
    ),
]


@pytest.mark.timeout(300)
def test_bench_dashboard_quick_mode_measures_the_overview() -> None:
    result = run_benchmark("bench_dashboard.py", "--quick", timeout=280, warnings_as_errors=True)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    sides = re.findall(
        r"^  (small|large)\s+queries\s+(\d+)\s+[\d.]+ ms\s+(\d+) worker rows on (\d+) nodes$", result.stdout, re.M
    )
    assert [side for side, *_ in sides] == ["small", "large"], output
    (_, small_queries, small_rows, small_nodes), (_, large_queries, large_rows, large_nodes) = sides
    assert small_queries == large_queries, "the number of queries grows with the history"
    assert (small_rows, small_nodes) == (large_rows, large_nodes) == ("96", "8"), output
    rows = summary_rows(result.stdout, r"\s+1\. overview")
    assert len(rows) == 1 and rows[0].rstrip().endswith(("PASS", "FAIL")), result.stdout
    assert re.search(r"^Result: (PASS|FAIL)", result.stdout, re.MULTILINE), output
    created = re.search(r"^Databases: (\S+), (\S+) ", result.stdout, re.MULTILINE)
    assert created, output
    assert not set(created.groups()) & _databases(), "the benchmark drops its databases"
