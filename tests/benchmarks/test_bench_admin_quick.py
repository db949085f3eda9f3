"""Benchmark 3 (benchmarks/bench_admin.py) runs end to end in --quick mode on PostgreSQL.

Speed is judged by the benchmark itself (noisy machines); here only that it runs, measures every
page, and that the number of queries does not grow with the table (deterministic).
"""

from __future__ import annotations

import os
import re

import pytest

from tests.benchmarks.conftest import run_benchmark, summary_rows

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://")),
        reason="benchmark 3 measures the admin on PostgreSQL: set DATABASE_URL to run it",
    ),
]


@pytest.mark.timeout(300)
def test_bench_admin_quick_mode_measures_every_page() -> None:
    result = run_benchmark("bench_admin.py", "--quick", timeout=280, warnings_as_errors=True)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    rows = summary_rows(result.stdout, r"\s+\d+\. ")
    assert len(rows) == 11, result.stdout
    for row in rows:
        assert row.rstrip().endswith(("PASS", "FAIL")), row
        small, large = re.search(r"queries (\d+) vs (\d+)", row).groups()  # type: ignore[union-attr]
        assert small == large, f"the number of queries grows with the table: {row}"
    assert re.search(r"^Result: (PASS|FAIL)", result.stdout, re.MULTILINE), output
    created = re.search(r"^Databases: (\S+), (\S+) ", result.stdout, re.MULTILINE)
    assert created, output
    assert not set(created.groups()) & _databases(), "the benchmark drops its databases"


def _databases() -> set[str]:
    import psycopg

    with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as conn:
        return {row[0] for row in conn.execute("SELECT datname FROM pg_database")}
