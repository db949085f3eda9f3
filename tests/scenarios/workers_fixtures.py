"""Worker classes (and things that are not) referenced by dotted path in the tests' WORKERS."""

from __future__ import annotations

from typing import Any

from django_workers import Worker, WorkerContext

PATH = "tests.scenarios.workers_fixtures"


class ClassicWorker(Worker):
    name = "classic"

    def run(self, ctx: WorkerContext) -> None:
        ctx.logger.info("run")


class SleepyWorker(Worker):
    """Runs until the pool stops it."""

    name = "sleepy"

    def run(self, ctx: WorkerContext) -> None:
        while not ctx.cancelled:
            ctx.sleep(1.0)


class AsyncWorker(Worker):
    name = "async"

    async def run(self, ctx: WorkerContext) -> None:
        while not ctx.cancelled:
            await ctx.asleep(1.0)


class OptionsWorker(Worker):
    """Takes OPTIONS; its name depends on them, so one class can be configured twice."""

    def __init__(self, queue: str = "default", batch_size: int = 10) -> None:
        self.queue = queue
        self.batch_size = batch_size

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"consumer-{self.queue}"

    def run(self, ctx: WorkerContext) -> None:
        while not ctx.cancelled:
            ctx.sleep(1.0)


class SameNameAsClassicWorker(ClassicWorker):
    name = "classic"


class NotAWorker:
    name = "not-a-worker"

    def run(self, ctx: WorkerContext) -> None:
        pass


def not_a_class(ctx: WorkerContext) -> None:
    pass


NOT_A_CLASS_EITHER = 42


class NoRunWorker(Worker):
    name = "no-run"


class GeneratorRunWorker(Worker):
    name = "generator-run"

    def run(self, ctx: WorkerContext) -> Any:
        yield ctx  # a generator: calling run() runs none of this


class AsyncGeneratorRunWorker(Worker):
    name = "async-generator-run"

    async def run(self, ctx: WorkerContext) -> Any:
        yield ctx


class FailingConstructorWorker(Worker):
    name = "failing-constructor"

    def __init__(self) -> None:
        raise RuntimeError("cannot connect to the broker")

    def run(self, ctx: WorkerContext) -> None:
        pass


class EmptyNameWorker(Worker):
    name = "  "

    def run(self, ctx: WorkerContext) -> None:
        pass


class IntNameWorker(Worker):
    name = 42  # type: ignore[assignment]

    def run(self, ctx: WorkerContext) -> None:
        pass


class RaisingNameWorker(Worker):
    @property
    def name(self) -> str:  # type: ignore[override]
        raise KeyError("QUEUE")

    def run(self, ctx: WorkerContext) -> None:
        pass


AN_INSTANCE = ClassicWorker()
