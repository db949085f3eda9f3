"""The singleton of benchmarks/bench_fleet.py: notes when it starts, then idles until cancelled."""

from __future__ import annotations

import os
import time

from django_workers import Worker, WorkerContext


class Marker(Worker):
    """Appends ``<pid> <fence> <time.monotonic()>`` to ``$FLEET_BENCH_LOG`` as its attempt starts."""

    name = "marker"

    def run(self, ctx: WorkerContext) -> None:
        line = f"{os.getpid()} {ctx.fence} {time.monotonic()!r}\n"
        with open(os.environ["FLEET_BENCH_LOG"], "a") as log:  # one small O_APPEND write: atomic
            log.write(line)
        ctx.sleep(float("inf"))
