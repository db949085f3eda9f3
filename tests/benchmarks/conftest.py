"""Helpers of the benchmark smoke tests: running a script of benchmarks/ in smoke mode, reading its summary table."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from tests.support import ROOT


def run_benchmark(
    script: str, *args: str, timeout: float, warnings_as_errors: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run ``benchmarks/<script>`` with this interpreter from the project root, output captured.

    The environment is the test's (``DATABASE_URL`` included); with ``warnings_as_errors``, also
    ``PYTHONWARNINGS=error``.
    """
    env = {**os.environ, "PYTHONWARNINGS": "error"} if warnings_as_errors else None
    return subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=env,
        check=False,
    )


def summary_rows(stdout: str, pattern: str) -> list[str]:
    """The lines after the script's ``Summary`` heading that match ``pattern`` (``re.match``)."""
    summary = stdout.split("Summary", 1)[1]
    return [line for line in summary.splitlines() if re.match(pattern, line)]
