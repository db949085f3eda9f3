"""A worker module importing a library that is not installed (ModuleNotFoundError inside it)."""

import django_workers_missing_dependency  # noqa: F401

from django_workers import Worker


class DependentWorker(Worker):
    name = "dependent"
