"""The ``Worker`` base class that user code subclasses."""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

from .text import safe_repr

if TYPE_CHECKING:
    from .context import WorkerContext

__all__ = ["Worker", "generator_run_problem", "is_async_worker", "worker_name"]


class Worker:
    """A named, long-running unit of work supervised by a :class:`WorkerPool`.

    Subclasses set ``name`` (a class attribute or a property; unique in a pool) and implement
    ``run(ctx)``, either as a plain method (it runs in a thread of its own) or as
    ``async def run(ctx)`` (it runs as a task on the pool's event loop). Returning normally
    means success; raising means the attempt failed.
    """

    name: str = ""

    def run(self, ctx: WorkerContext) -> Any:
        """Do the work. Loop until ``ctx.cancelled`` for a long-lived worker."""
        raise NotImplementedError(f"{type(self).__qualname__} must implement run(ctx)")

    def __repr__(self) -> str:
        try:
            name = self.name
        except Exception:  # a broken name property must not break repr
            name = "?"
        return f"<{type(self).__qualname__} {name!r}>"


def worker_name(worker: object) -> str:
    """Return a validated worker name, raising ``TypeError``/``ValueError`` with a clear message."""
    if not isinstance(worker, Worker):
        raise TypeError(
            f"expected a django_workers.Worker instance, got {worker!r} "
            f"({type(worker).__qualname__}); subclass Worker and register an instance of it"
        )
    name = worker.name
    if not isinstance(name, str):
        raise TypeError(
            f"{type(worker).__qualname__}.name must be a str, got {safe_repr(name, 200)} ({type(name).__qualname__})"
        )
    if not name.strip():
        raise ValueError(
            f"{type(worker).__qualname__}.name must be a non-empty string; set a class attribute "
            f'such as name = "my-worker"'
        )
    if type(worker).run is Worker.run:
        raise TypeError(f"{type(worker).__qualname__} must implement run(ctx)")
    problem = generator_run_problem(type(worker))
    if problem is not None:
        raise TypeError(problem)
    return name


def generator_run_problem(worker_class: type) -> str | None:
    """Why ``worker_class.run`` cannot be run, when it is a generator or async generator function.

    Calling such a ``run()`` returns a generator and runs none of its body: every attempt would
    "succeed" at once. Returns None for a plain or ``async def`` ``run``.
    """
    run = getattr(worker_class, "run", None)
    if inspect.isasyncgenfunction(run):
        kind, fix = "an async generator function", "remove the `yield` (an `async def run` loops with `await`)"
    elif inspect.isgeneratorfunction(run):
        kind, fix = "a generator function", "remove the `yield` (loop with `while not ctx.cancelled:` instead)"
    else:
        return None
    return (
        f"{worker_class.__qualname__}.run is {kind} (its body contains `yield`): calling it runs none of "
        f"its body, so every attempt would end at once; {fix}"
    )


def is_async_worker(worker: Worker) -> bool:
    """True when ``worker.run`` is a coroutine function (``async def run``)."""
    return inspect.iscoroutinefunction(worker.run)
