"""Settings of the ``runworkers`` replicas of benchmarks/bench_fleet.py: the test project's, one singleton.

``DATABASE_URL`` (the benchmark's scratch database) and ``FLEET_BENCH_WORKERS`` (the WORKERS setting
as JSON) come from the benchmark.
"""

import json
import os

from testproject.settings import *  # noqa: F403

WORKERS = json.loads(os.environ["FLEET_BENCH_WORKERS"])
