"""Imported only when the WORKERS setting is validated or the pool built, never by ready()."""

from django_workers import Worker, WorkerContext


class ProbeWorker(Worker):
    name = "probe"

    def run(self, ctx: WorkerContext) -> None:
        pass
