"""The baseline's side: ``manage.py idle <name>``, one worker per process, as a Django user writes it
without django-worker-pool (supervisord runs one such process per worker, with autorestart)."""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from idlers import body


class Command(BaseCommand):
    help = "Runs one trivial worker until SIGTERM or SIGINT (the baseline of benchmarks/bench_peers.py)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")

    def handle(self, *args: Any, **options: Any) -> None:
        stop = threading.Event()

        def on_signal(signum: int, frame: FrameType | None) -> None:
            stop.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        body.run(options["name"], stop.wait)  # a crash raises out of handle(): the process exits 1
