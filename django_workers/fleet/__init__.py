"""Several hosts: singleton workers on a database lease with a fencing token.

- :mod:`~django_workers.fleet.leases`: the lease row of a singleton and the single statements that
  take, renew and release it.
- :mod:`~django_workers.fleet.keeper`: the process service of ``runworkers`` that holds the leases
  of its pool's singleton workers, runs each only while it holds its lease, and hands the fencing
  token to the worker (``ctx.fence``).

docs/fleet.md says when to use a singleton, what it guarantees and what it does not.
"""

from .keeper import FOLLOWER, LEADER, RELEASING, STUCK, LeaseKeeper, SeatState
from .leases import Grant, acquire, current, release, renew

__all__ = [
    "FOLLOWER",
    "LEADER",
    "RELEASING",
    "STUCK",
    "Grant",
    "LeaseKeeper",
    "SeatState",
    "acquire",
    "current",
    "release",
    "renew",
]
