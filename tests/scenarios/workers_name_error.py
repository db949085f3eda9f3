"""A worker module with a bug: importing it raises NameError (on the line below)."""

from django_workers import Worker

VALUE = undefined_name + 1  # noqa: F821


class BrokenWorker(Worker):
    name = "broken"
