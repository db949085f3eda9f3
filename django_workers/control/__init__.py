"""Control of running workers: restart, pause and resume, on one node or on every node.

An operator's request is a row of :class:`~django_workers.models.ControlRequest` (the table is the
log of requests): :func:`submit` validates and records it (the admin, ``manage.py
controlworkers`` and project code call it). Every ``runworkers`` process with history enabled runs
a :class:`ControlPickup` beside its pool: it reads the rows addressed to its node or to every node
at least every heartbeat interval (on PostgreSQL a ``LISTEN`` wakes it as soon as a request is
committed) and applies them to the pool, which records them as events of the worker's execution.

- ``requests``: :func:`submit`, :class:`ControlError`, the NOTIFY channel;
- ``pickup``: the process service of ``runworkers``; ``listen``: its PostgreSQL ``LISTEN`` thread.

What persists: a pause addressed to *every* node is a worker's standing state until a resume or a
restart addressed to every node; a ``runworkers`` started later (a restart, a deploy) obeys it
before it starts its workers. A pause addressed to one node holds for that process's life only.
See ``docs/control.md``.

Importing this package imports the models: only once the app registry is ready.
"""

from .pickup import ControlPickup
from .requests import CHANNEL, PERMISSION, ControlError, database_problem, describe_request, process_identity, submit

__all__ = [
    "CHANNEL",
    "PERMISSION",
    "ControlError",
    "ControlPickup",
    "database_problem",
    "describe_request",
    "process_identity",
    "submit",
]
