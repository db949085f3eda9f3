"""Workers of the health tests, steered from the test through trigger files (no sleeps to wait on)."""

from __future__ import annotations

import os

from django_workers import Worker, WorkerContext, ctx_logger


class Steady(Worker):
    """Runs until cancelled, calling ``ctx.heartbeat()`` all the time."""

    name = "steady"

    def run(self, ctx: WorkerContext) -> None:
        ctx_logger(ctx).info("steady is running")
        while not ctx.sleep(0.05):
            ctx.heartbeat()


class FailsOnTrigger(Worker):
    """Runs until the trigger file exists, then fails every attempt."""

    name = "fails-on-trigger"

    def __init__(self, trigger: str) -> None:
        self.trigger = trigger

    def run(self, ctx: WorkerContext) -> None:
        ctx_logger(ctx).info("fails-on-trigger attempt %d is running", ctx.attempt)
        while not ctx.sleep(0.05):
            if os.path.exists(self.trigger):
                raise RuntimeError("the trigger file exists")


class SilentOnTrigger(Worker):
    """Calls ``ctx.heartbeat()`` until the trigger file exists, then keeps running without it."""

    name = "silent-on-trigger"

    def __init__(self, trigger: str) -> None:
        self.trigger = trigger

    def run(self, ctx: WorkerContext) -> None:
        ctx_logger(ctx).info("silent-on-trigger attempt %d is running", ctx.attempt)
        while not ctx.sleep(0.05):
            if not os.path.exists(self.trigger):
                ctx.heartbeat()
