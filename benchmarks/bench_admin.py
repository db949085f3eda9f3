#!/usr/bin/env python
"""Benchmark 3: the history admin with a million rows against the same pages with a thousand.

Run from the project root, with a PostgreSQL server::

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/test .venv/bin/python benchmarks/bench_admin.py
    ... benchmarks/bench_admin.py --quick     # smoke mode: 20,000 rows against 300, 3 rounds
    ... benchmarks/bench_admin.py --strict    # exit 1 when a target is missed
    ... benchmarks/bench_admin.py --explain   # also print the plans of the large side's queries

It creates two databases on the server of ``DATABASE_URL`` (``workers_bench_<pid>_small`` and
``..._large``), migrates both and fills them with ``INSERT ... SELECT generate_series``:

- small: 1,000 executions and 1,000 events; large: 1,000,000 executions and 1,000,000 events;
- 20 nodes, each owning a contiguous period of executions (a ``runworkers`` process lives for a
  while), 12 worker names, 80 % success / 15 % error / 5 % running;
- one failed execution (the "big" one) holds 10 % of the events (at least 150: more than a page);
  the 3,000 or 300,000 newest other executions have 3 events each.

Then ``VACUUM ANALYZE``. The admin runs in this process through Django's test client, logged in as
staff with the view permissions; the history is read from the database that
``WORKERS["HISTORY"]["DATABASE"]`` names, which the bench switches between the two sides (users
and sessions stay in the small database, so both sides pay the same for them).

For every page: the number of queries on each side (they must be equal), and the best time of
``rounds`` requests per side, interleaved (small first in even rounds, large first in odd ones)
after one warm-up request each. Target: the large side's queries equal the small side's and its
best time is at most 2x the small side's. The databases are dropped at the end (``--keep`` keeps
them). The whole run takes about a minute (filling the million rows is most of it).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
NODES = 8
WORKERS = 8
TARGET_QUERIES_EQUAL = True
TARGET_RATIO = 2.0


@dataclass(frozen=True)
class Sizes:
    executions: int
    events: int
    rounds: int


FULL = {"small": Sizes(1_000, 1_000, 0), "large": Sizes(1_000_000, 1_000_000, 0)}
QUICK = {"small": Sizes(1_000, 1_000, 0), "large": Sizes(20_000, 20_000, 0)}


def database_url(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def admin_connection(url: str) -> Any:
    import psycopg

    return psycopg.connect(url, autocommit=True, connect_timeout=10)


def create_databases(url: str, names: list[str]) -> None:
    with admin_connection(url) as conn:
        for name in names:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')


def drop_databases(url: str, names: list[str]) -> None:
    with admin_connection(url) as conn:
        for name in names:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def setup_django(url: str, names: dict[str, str]) -> None:
    """Django with ``default`` on the small database and one alias per side."""
    os.environ["DATABASE_URL"] = database_url(url, names["small"])
    os.environ["DJANGO_DEBUG"] = "0"  # no query log outside the counting runs
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testproject.settings")
    sys.path[:0] = [str(ROOT / "testproject"), str(ROOT)]
    from django.conf import settings

    for side, name in names.items():
        settings.DATABASES[f"bench_{side}"] = {**settings.DATABASES["default"], "NAME": name}
    import django

    django.setup()


# -- fill ------------------------------------------------------------------------------------------


def fill(alias: str, sizes: Sizes) -> dict[str, str]:
    """Rows for one side, with SQL only; returns ids the pages need."""
    from django.db import connections

    n = sizes.executions
    target_events = max(150, sizes.events // 10)
    per_execution = 3
    others = (sizes.events - target_events) // per_execution
    target_events = sizes.events - others * per_execution
    with connections[alias].cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO django_workers_node (id, hostname, pid, started_at, last_heartbeat, stopped_at, version, workers, dropped_events)
            SELECT gen_random_uuid(), 'host-' || (k %% 5), 1000 + k,
                   now() - ((k + 1) * %(n)s / %(nodes)s) * interval '1 second',
                   now() - (k * %(n)s / %(nodes)s) * interval '1 second',
                   CASE WHEN k > 0 THEN now() - (k * %(n)s / %(nodes)s) * interval '1 second' END,
                   '0.1.0', '[]'::jsonb, 0
            FROM generate_series(0, %(nodes)s - 1) AS k
            """,
            {"n": n, "nodes": NODES},
        )
        cursor.execute(
            """
            WITH nodes AS (SELECT id, (row_number() OVER (ORDER BY started_at DESC) - 1)::int AS k FROM django_workers_node)
            INSERT INTO django_workers_execution
                (id, node_id, worker, attempt, max_attempts, status, started_at, finished_at, duration, error, traceback, created_at)
            SELECT gen_random_uuid(), nodes.id, 'worker-' || (i %% %(workers)s), 1 + i %% 3, 3,
                   CASE WHEN i %% 20 < 16 THEN 'success' WHEN i %% 20 < 19 THEN 'error' ELSE 'running' END,
                   now() - i * interval '1 second',
                   CASE WHEN i %% 20 < 19 THEN now() - i * interval '1 second' + interval '250 milliseconds' END,
                   CASE WHEN i %% 20 < 19 THEN 0.25 END,
                   CASE WHEN i %% 20 BETWEEN 16 AND 18 THEN 'ValueError: boom ' || i ELSE '' END,
                   CASE WHEN i %% 20 BETWEEN 16 AND 18
                        THEN E'Traceback (most recent call last):\\n  File "w.py", line 3, in run\\nValueError: boom ' || i
                        ELSE '' END,
                   now() - i * interval '1 second'
            FROM generate_series(0, %(n)s - 1) AS i
            JOIN nodes ON nodes.k = (i::bigint * %(nodes)s / %(n)s)
            """,
            {"n": n, "nodes": NODES, "workers": WORKERS},
        )
        cursor.execute(
            "SELECT id, node_id FROM django_workers_execution WHERE status = 'error' ORDER BY created_at DESC LIMIT 1"
        )
        target, _ = cursor.fetchone()
        cursor.execute(
            """
            INSERT INTO django_workers_executionevent (node_id, execution_id, timestamp, level, message)
            SELECT e.node_id, e.id, e.created_at + k * interval '1 millisecond',
                   CASE WHEN k %% 50 = 0 THEN 'WARNING' ELSE 'INFO' END, 'step ' || k || ' of ' || e.worker
            FROM django_workers_execution AS e CROSS JOIN generate_series(1, %(count)s) AS k
            WHERE e.id = %(target)s
            """,
            {"count": target_events, "target": target},
        )
        cursor.execute(
            """
            INSERT INTO django_workers_executionevent (node_id, execution_id, timestamp, level, message)
            SELECT e.node_id, e.id, e.created_at + k * interval '1 millisecond',
                   CASE WHEN k = 3 AND e.status = 'error' THEN 'ERROR' ELSE 'INFO' END, 'step ' || k || ' of ' || e.worker
            FROM (SELECT id, node_id, created_at, worker, status FROM django_workers_execution
                  WHERE id <> %(target)s ORDER BY created_at DESC LIMIT %(others)s) AS e
            CROSS JOIN generate_series(1, %(per)s) AS k
            """,
            {"others": others, "per": per_execution, "target": target},
        )
        cursor.execute(
            "SELECT id FROM django_workers_execution WHERE id <> %s AND status = 'error' ORDER BY created_at DESC LIMIT 1",
            [target],
        )
        (small_execution,) = cursor.fetchone()
        cursor.execute("SELECT id FROM django_workers_node ORDER BY started_at DESC OFFSET %s LIMIT 1", [NODES // 2])
        (middle_node,) = cursor.fetchone()
        for table in ("django_workers_node", "django_workers_execution", "django_workers_executionevent"):
            cursor.execute(f"VACUUM ANALYZE {table}")
        cursor.execute("SELECT count(*) FROM django_workers_execution")
        (executions,) = cursor.fetchone()
        cursor.execute("SELECT count(*) FROM django_workers_executionevent")
        (events,) = cursor.fetchone()
    print(f"  {alias}: {executions:,} executions, {events:,} events ({target_events:,} in the big execution)")
    return {"big": str(target), "small": str(small_execution), "node": str(middle_node)}


# -- pages -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Page:
    name: str
    url: Callable[[dict[str, str]], str]


EXECUTIONS = "/admin/django_workers/execution/"
PAGES = [
    Page("executions", lambda ids: EXECUTIONS),
    Page("executions, page 2", lambda ids: f"{EXECUTIONS}?p=2"),
    Page("executions, status=error", lambda ids: f"{EXECUTIONS}?status__exact=error"),
    Page("executions, worker", lambda ids: f"{EXECUTIONS}?worker=worker-7"),
    Page("executions, node (older)", lambda ids: f"{EXECUTIONS}?node__id__exact={ids['node']}"),
    Page("executions, today", lambda ids: f"{EXECUTIONS}?created_at__gte={today()}"),
    Page("executions, search name", lambda ids: f"{EXECUTIONS}?q=worker-1"),
    Page("executions, search id", lambda ids: f"{EXECUTIONS}?q={ids['small']}"),
    Page("execution detail (big)", lambda ids: f"{EXECUTIONS}{ids['big']}/change/"),
    Page("execution detail (3 events)", lambda ids: f"{EXECUTIONS}{ids['small']}/change/"),
    Page("nodes", lambda ids: "/admin/django_workers/node/"),
]


def today() -> str:
    from urllib.parse import quote

    from django.utils import timezone

    midnight = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)
    return quote(str(midnight))


@contextmanager
def side(alias: str) -> Iterator[None]:
    """The admin reads the history from ``alias``."""
    from django.test import override_settings

    with override_settings(WORKERS={"HISTORY": {"DATABASE": alias}}):
        yield


def request(client: Any, url: str) -> float:
    started = time.perf_counter()
    response = client.get(url)
    elapsed = time.perf_counter() - started
    if response.status_code != 200:
        raise SystemExit(f"GET {url} answered {response.status_code}")
    return elapsed


def count_queries(client: Any, url: str, alias: str) -> tuple[int, list[str]]:
    from django.db import connections
    from django.test.utils import CaptureQueriesContext

    with ExitStack() as stack:
        captured = [stack.enter_context(CaptureQueriesContext(connections[name])) for name in ("default", alias)]
        client.get(url)
    history = [query["sql"] for query in captured[1].captured_queries]
    return sum(len(context) for context in captured), history


def explain(alias: str, queries: list[str]) -> None:
    from django.db import connections

    with connections[alias].cursor() as cursor:
        for sql in queries:
            cursor.execute(f"EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY ON) {sql}")
            plan = [row[0] for row in cursor.fetchall()]
            print(f"      {sql[:140]}{'...' if len(sql) > 140 else ''}")
            for line in plan:
                print(f"        {line}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="smoke mode: 20,000 rows against 300, 3 rounds")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--explain", action="store_true", help="print the plans of the large side's queries")
    parser.add_argument("--keep", action="store_true", help="keep the two databases")
    parser.add_argument("--rounds", type=int, default=None, help="timed requests per page and side")
    args = parser.parse_args()

    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        print(
            "bench_admin.py measures the admin on PostgreSQL: set DATABASE_URL, e.g.\n"
            "  DATABASE_URL=postgres://postgres@127.0.0.1:5432/test .venv/bin/python benchmarks/bench_admin.py",
            file=sys.stderr,
        )
        return 2
    sizes = QUICK if args.quick else FULL
    rounds = args.rounds or (3 if args.quick else 9)
    names = {side_name: f"workers_bench_{os.getpid()}_{side_name}" for side_name in sizes}
    began = time.perf_counter()
    print(f"Benchmark 3: admin pages, {sizes['large'].executions:,} rows against {sizes['small'].executions:,}")
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
    ids: dict[str, dict[str, str]] = {}
    for side_name, side_sizes in sizes.items():
        started = time.perf_counter()
        call_command("migrate", database=f"bench_{side_name}", verbosity=0)
        ids[side_name] = fill(f"bench_{side_name}", side_sizes)
        print(f"    filled in {time.perf_counter() - started:.1f} s")
    viewer = User.objects.create_user(f"bench-{uuid.uuid4().hex[:8]}", is_staff=True)
    viewer.user_permissions.add(*Permission.objects.filter(codename__in=("view_execution", "view_node")))
    client = Client()
    client.force_login(viewer)

    print(f"\nPages (best of {rounds} interleaved requests per side, after a warm-up):")
    results = []
    for page in PAGES:
        urls = {side_name: page.url(ids[side_name]) for side_name in sizes}
        queries: dict[str, int] = {}
        for side_name in sizes:
            alias = f"bench_{side_name}"
            with side(alias):
                request(client, urls[side_name])  # warm-up
                queries[side_name], history = count_queries(client, urls[side_name], alias)
                if args.explain and side_name == "large":
                    print(f"    plans of {page.name!r} on the large side:")
                    explain(alias, history)
        best = {side_name: float("inf") for side_name in sizes}
        for round_number in range(rounds):
            order = ["small", "large"] if round_number % 2 == 0 else ["large", "small"]
            for side_name in order:
                with side(f"bench_{side_name}"):
                    best[side_name] = min(best[side_name], request(client, urls[side_name]))
        ratio = best["large"] / best["small"]
        passed = queries["small"] == queries["large"] and ratio <= TARGET_RATIO
        results.append((page.name, queries, best, ratio, passed))
        print(
            f"  {page.name:<30} queries {queries['small']:>2} / {queries['large']:>2}   "
            f"small {best['small'] * 1000:7.1f} ms   large {best['large'] * 1000:7.1f} ms   "
            f"ratio {ratio:5.2f}x   {'PASS' if passed else 'FAIL'}"
        )

    print(
        f"\nSummary (target: the same number of queries, and large/small time <= {TARGET_RATIO:.0f}x; "
        f"{sizes['large'].executions:,} vs {sizes['small'].executions:,} executions, "
        f"{sizes['large'].events:,} vs {sizes['small'].events:,} events)"
    )
    for number, (name, queries, best, ratio, passed) in enumerate(results, 1):
        print(
            f"  {number:>2}. {name:<30} queries {queries['small']} vs {queries['large']}, "
            f"time ratio {ratio:.2f}x  {'PASS' if passed else 'FAIL'}"
        )
    failed = [name for name, *_, passed in results if not passed]
    print(f"Result: {'PASS' if not failed else 'FAIL (' + ', '.join(failed) + ')'}")
    return 1 if failed and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
