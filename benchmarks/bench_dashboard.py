#!/usr/bin/env python
"""Benchmark 4: the overview page (admin:django_workers_dashboard) with a million executions against a thousand.

Run from the project root, with a PostgreSQL server::

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/test .venv/bin/python benchmarks/bench_dashboard.py
    ... benchmarks/bench_dashboard.py --quick     # smoke mode: 20,000 executions against 1,000, 3 rounds
    ... benchmarks/bench_dashboard.py --strict    # exit 1 when the target is missed
    ... benchmarks/bench_dashboard.py --explain   # also print the plans of the large side's queries

Two throw-away databases on the server of ``DATABASE_URL`` (``workers_dash_<pid>_small`` and
``..._large``), migrated, then filled with SQL only. Both sides have the same fleet and differ
only in how much history it left (the execution rate):

- 10 nodes over a week (the default retention): 6 alive (one of them stale: no heartbeat for
  ten minutes), 2 stopped within the day (2 h and 20 h ago), 2 stopped three days ago;
- 12 workers; 1,000 (small) or 1,000,000 (large) executions spread evenly over the week, each on
  a node alive at its time, 80 % success / 15 % error / 5 % running;
- the tallies and the workers' states that the recorder keeps for them (``ExecutionTally``: one
  row per node, worker and 5-minute period with their counts, a restart per failed attempt that
  was not the last; ``WorkerState``: per node and worker, from its latest execution, exhausted
  when that one failed its last attempt).

Then ``VACUUM ANALYZE``. The page is requested through Django's test client, logged in as staff
with the view and control permissions, reading the history from one side or the other
(``WORKERS["HISTORY"]["DATABASE"]``). Reported: the number of queries on each side (they must be
equal) and the best time of ``rounds`` interleaved requests per side after a warm-up. Target:
equal queries, and the large side's time at most 2x the small side's.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_admin import count_queries, create_databases, drop_databases, explain, request, setup_django, side

NODES = 10
WORKERS = 12
WEEK = 7 * 24 * 3600
TARGET_RATIO = 2.0
OVERVIEW = "/admin/django_workers/workeroverview/"
#: Per node: seconds since it stopped (None: running), seconds since its last heartbeat.
FLEET = [
    (None, 0),
    (None, 0),
    (None, 0),
    (None, 0),
    (None, 0),
    (None, 600),  # stale
    (2 * 3600, 2 * 3600),
    (20 * 3600, 20 * 3600),
    (3 * 86400, 3 * 86400),
    (3 * 86400, 3 * 86400),
]


@dataclass(frozen=True)
class Sizes:
    executions: int


FULL = {"small": Sizes(1_000), "large": Sizes(1_000_000)}
QUICK = {"small": Sizes(1_000), "large": Sizes(20_000)}


def fill(alias: str, sizes: Sizes) -> None:
    """The fleet, the executions, and the tallies and states the recorder would have kept (SQL only)."""
    from django.db import connections

    stops = "ARRAY[{}]::int[]".format(", ".join("NULL" if stop is None else str(stop) for stop, _ in FLEET))
    beats = "ARRAY[{}]::int[]".format(", ".join(str(beat) for _, beat in FLEET))
    with connections[alias].cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO django_workers_node (id, hostname, pid, started_at, last_heartbeat, stopped_at, version, workers,
                                             dropped_events)
            SELECT gen_random_uuid(), 'host-' || k, 1000 + k, now() - interval '7 days',
                   now() - ({beats})[k + 1] * interval '1 second',
                   now() - ({stops})[k + 1] * interval '1 second',
                   '0.1.0', '[]'::jsonb, 0
            FROM generate_series(0, %(nodes)s - 1) AS k
            """,
            {"nodes": NODES},
        )
        # Execution i is created i * step seconds ago on node i % NODES, or on a running node (i % 5)
        # when that node had stopped by then.
        cursor.execute(
            f"""
            WITH nodes AS (SELECT id, (pid - 1000) AS k FROM django_workers_node),
                 rows AS (SELECT i, (i::float8 * %(week)s / %(n)s) AS ago,
                                 CASE WHEN ({stops})[i %% %(nodes)s + 1] > (i::float8 * %(week)s / %(n)s)
                                      THEN i %% 5 ELSE i %% %(nodes)s END AS k
                          FROM generate_series(0, %(n)s - 1) AS i)
            INSERT INTO django_workers_execution
                (id, node_id, worker, attempt, max_attempts, status, started_at, finished_at, duration, error,
                 traceback, created_at)
            SELECT gen_random_uuid(), nodes.id, 'worker-' || (rows.i / %(nodes)s %% %(workers)s), 1 + rows.i %% 3, 3,
                   CASE WHEN rows.i %% 20 < 16 THEN 'success' WHEN rows.i %% 20 < 19 THEN 'error' ELSE 'running' END,
                   now() - rows.ago * interval '1 second',
                   CASE WHEN rows.i %% 20 < 19 THEN now() - rows.ago * interval '1 second' + interval '250 milliseconds'
                   END,
                   CASE WHEN rows.i %% 20 < 19 THEN 0.25 END,
                   CASE WHEN rows.i %% 20 BETWEEN 16 AND 18 THEN 'ValueError: boom ' || rows.i ELSE '' END,
                   '',
                   now() - rows.ago * interval '1 second'
            FROM rows JOIN nodes ON nodes.k = rows.k
            """,
            {"n": sizes.executions, "nodes": NODES, "workers": WORKERS, "week": WEEK},
        )
        cursor.execute(
            """
            INSERT INTO django_workers_executiontally
                (node_id, worker, period_start, started, succeeded, failed, lost, restarted)
            SELECT node_id, worker, to_timestamp(floor(extract(epoch FROM created_at) / 300) * 300),
                   count(*), count(*) FILTER (WHERE status = 'success'), count(*) FILTER (WHERE status = 'error'), 0,
                   count(*) FILTER (WHERE status = 'error' AND attempt < max_attempts)
            FROM django_workers_execution
            GROUP BY 1, 2, 3
            """
        )
        cursor.execute(
            """
            INSERT INTO django_workers_workerstate
                (node_id, worker, position, status, attempt, max_attempts, since, execution_id, last_error,
                 last_error_execution_id, exhausted, silent, paused, updated_at)
            SELECT latest.node_id, latest.worker, replace(latest.worker, 'worker-', '')::int, latest.status,
                   latest.attempt, latest.max_attempts, coalesce(latest.finished_at, latest.started_at), latest.id,
                   coalesce(failure.error, ''), failure.id,
                   latest.status = 'error' AND latest.attempt >= latest.max_attempts, false, false, now()
            FROM (SELECT DISTINCT ON (node_id, worker) * FROM django_workers_execution
                  ORDER BY node_id, worker, created_at DESC) AS latest
            LEFT JOIN LATERAL (SELECT id, error FROM django_workers_execution AS e
                               WHERE e.node_id = latest.node_id AND e.worker = latest.worker AND e.status = 'error'
                               ORDER BY e.created_at DESC LIMIT 1) AS failure ON true
            """
        )
        for table in ("node", "execution", "executiontally", "workerstate"):
            cursor.execute(f"VACUUM ANALYZE django_workers_{table}")
        counts = []
        for table in ("execution", "executiontally", "workerstate"):
            cursor.execute(f"SELECT count(*) FROM django_workers_{table}")
            counts.append(cursor.fetchone()[0])
        cursor.execute(
            "SELECT count(*) FROM django_workers_executiontally WHERE period_start >= now() - interval '1 day'"
        )
        (day,) = cursor.fetchone()
    executions, tallies, states = counts
    print(f"  {alias}: {executions:,} executions, {tallies:,} tallies ({day:,} in the last day), {states:,} states")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="smoke mode: 20,000 executions against 1,000, 3 rounds")
    parser.add_argument("--strict", action="store_true", help="exit 1 when the target is missed")
    parser.add_argument("--explain", action="store_true", help="print the plans of the large side's queries")
    parser.add_argument("--keep", action="store_true", help="keep the two databases")
    parser.add_argument("--rounds", type=int, default=None, help="timed requests per side")
    args = parser.parse_args()

    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        print(
            "bench_dashboard.py measures the overview page on PostgreSQL: set DATABASE_URL, e.g.\n"
            "  DATABASE_URL=postgres://postgres@127.0.0.1:5432/test .venv/bin/python benchmarks/bench_dashboard.py",
            file=sys.stderr,
        )
        return 2
    sizes = QUICK if args.quick else FULL
    rounds = args.rounds or (3 if args.quick else 15)
    names = {side_name: f"workers_dash_{os.getpid()}_{side_name}" for side_name in sizes}
    began = time.perf_counter()
    print(
        f"Benchmark 4: the overview page, {sizes['large'].executions:,} executions against "
        f"{sizes['small'].executions:,}"
    )
    print(
        f"Databases: {', '.join(names.values())} (dropped at the end{', unless --keep' if not args.keep else ': --keep'})"
    )
    create_databases(url, list(names.values()))
    try:
        setup_django(url, names)
        return run(sizes, rounds, args)
    finally:
        from django.db import connections

        connections.close_all()
        if not args.keep:
            drop_databases(url, list(names.values()))
        print(f"Total time: {time.perf_counter() - began:.0f} s")


def run(sizes: dict[str, Sizes], rounds: int, args: argparse.Namespace) -> int:
    from django.contrib.auth.models import Permission, User
    from django.core.management import call_command
    from django.test import Client

    print("Filling (INSERT ... SELECT generate_series, then VACUUM ANALYZE):")
    for side_name, side_sizes in sizes.items():
        started = time.perf_counter()
        call_command("migrate", database=f"bench_{side_name}", verbosity=0)
        fill(f"bench_{side_name}", side_sizes)
        print(f"    filled in {time.perf_counter() - started:.1f} s")
    operator = User.objects.create_user(f"bench-{uuid.uuid4().hex[:8]}", is_staff=True)
    operator.user_permissions.add(
        *Permission.objects.filter(codename__in=("view_execution", "view_node", "control_workers"))
    )
    client = Client()
    client.force_login(operator)

    queries: dict[str, int] = {}
    sample: dict[str, Any] = {}
    for side_name in sizes:
        alias = f"bench_{side_name}"
        with side(alias):
            request(client, OVERVIEW)  # warm-up
            queries[side_name], history = count_queries(client, OVERVIEW, alias)
            sample[side_name] = client.get(OVERVIEW).content.decode()
            if args.explain and side_name == "large":
                print("    plans of the large side's queries:")
                explain(alias, history)
    best = {side_name: float("inf") for side_name in sizes}
    for round_number in range(rounds):
        order = ["small", "large"] if round_number % 2 == 0 else ["large", "small"]
        for side_name in order:
            with side(f"bench_{side_name}"):
                best[side_name] = min(best[side_name], request(client, OVERVIEW))
    shown = {
        name: (page.count('<tr class="dw-row'), page.count('<tr class="dw-node-row')) for name, page in sample.items()
    }
    ratio = best["large"] / best["small"]
    passed = queries["small"] == queries["large"] and shown["small"] == shown["large"] and ratio <= TARGET_RATIO
    print(f"\nThe page (best of {rounds} interleaved requests per side, after a warm-up):")
    for side_name in sizes:
        rows, nodes = shown[side_name]
        print(
            f"  {side_name:<5}  queries {queries[side_name]:>2}   {best[side_name] * 1000:7.1f} ms   "
            f"{rows} worker rows on {nodes} nodes"
        )
    print(
        f"\nSummary (target: the same number of queries and rows, and large/small time <= {TARGET_RATIO:.0f}x; "
        f"{sizes['large'].executions:,} vs {sizes['small'].executions:,} executions)"
    )
    print(
        f"   1. overview                       queries {queries['small']} vs {queries['large']}, "
        f"time ratio {ratio:.2f}x  {'PASS' if passed else 'FAIL'}"
    )
    print(f"Result: {'PASS' if passed else 'FAIL'}")
    return 1 if not passed and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
