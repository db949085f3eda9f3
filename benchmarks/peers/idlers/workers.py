"""The pool's side: the trivial worker as a django_workers ``Worker`` (``manage.py runworkers``)."""

from __future__ import annotations

from django_workers import Worker, WorkerContext
from idlers import body


class IdleWorker(Worker):
    def __init__(self, index: int) -> None:
        self.name = f"idle-{index}"

    def run(self, ctx: WorkerContext) -> None:
        body.run(self.name, ctx.sleep)  # ctx.sleep returns True at once when the pool stops
