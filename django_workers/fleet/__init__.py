"""Several hosts: singleton workers on a database lease with a fencing token (issue 13, in progress).

So far the lease itself (:mod:`~django_workers.fleet.leases`); the settings, the runtime that
holds leases for a pool's singleton workers and ``ctx.fence`` come next.
"""

from .leases import Grant, acquire, current, release, renew

__all__ = ["Grant", "acquire", "current", "release", "renew"]
