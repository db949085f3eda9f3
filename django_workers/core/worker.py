"""The ``Worker`` base class that user code subclasses."""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .context import WorkerContext

__all__ = ["Worker", "is_async_worker", "worker_name"]


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
        raise TypeError(f"{type(worker).__qualname__}.name must be a str, got {name!r} ({type(name).__qualname__})")
    if not name.strip():
        raise ValueError(
            f"{type(worker).__qualname__}.name must be a non-empty string; set a class attribute "
            f'such as name = "my-worker"'
        )
    if type(worker).run is Worker.run:
        raise TypeError(f"{type(worker).__qualname__} must implement run(ctx)")
    return name


def is_async_worker(worker: Worker) -> bool:
    """True when ``worker.run`` is a coroutine function (``async def run``)."""
    return inspect.iscoroutinefunction(worker.run)
