"""Settings of the peers benchmark's project (benchmarks/bench_peers.py): no database, one app.

The benchmark sets the environment of every process it starts:

- ``PEERS_SIDE``: ``pool`` for ``manage.py runworkers`` (adds ``django_workers`` and ``WORKERS``),
  ``baseline`` for the one-command-per-worker processes, which do not load the package at all;
- ``PEERS_WORKERS``: how many workers the pool runs (``idle-0`` … ``idle-<n-1>``);
- ``PEERS_EVENTS`` and ``PEERS_CRASH_DIR``: read by the workers' body (``idlers/body.py``).
"""

import os

SECRET_KEY = "peers-benchmark-only-not-a-secret"
DEBUG = False
ALLOWED_HOSTS: list[str] = []
USE_TZ = True
# The workers never touch the ORM: Django's dummy backend is enough.
DATABASES: dict[str, dict[str, str]] = {}

INSTALLED_APPS = ["idlers"]

if os.environ.get("PEERS_SIDE") == "pool":
    INSTALLED_APPS.append("django_workers")
    WORKERS = {
        # Restarted for ever and at once, as supervisord's autorestart restarts a process that ran
        # past its startsecs: the restart benchmark compares supervision, not backoff policies.
        "MAX_EXECUTIONS_ATTEMPTS": 0,
        "RESTART_BACKOFF": {"INITIAL": 0.0, "MAXIMUM": 1.0, "MULTIPLIER": 2.0, "JITTER": 0.0},
        # The baseline has neither: each side runs the workers and nothing else.
        "METRICS": {"ENABLED": False},
        "TRACING": {"ENABLED": False},
        "WORKERS": [
            {"CLASS": "idlers.workers.IdleWorker", "OPTIONS": {"index": i}}
            for i in range(int(os.environ.get("PEERS_WORKERS", "1")))
        ],
    }
