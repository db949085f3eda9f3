"""Take a lease once and print its fence (``none`` when another holder has it): ``lease_probe.py NAME HOLDER TTL``.

Run by tests/fleet/test_fleet_servers.py around a crash of a PostgreSQL server of its own, with the
settings of the fleet scenario (``DJANGO_SETTINGS_MODULE``, ``DATABASE_URL``).
"""

import sys
import uuid

import django

django.setup()

from django_workers.fleet import leases  # noqa: E402 - after django.setup()

grant = leases.acquire(sys.argv[1], uuid.UUID(sys.argv[2]), float(sys.argv[3]))
print("none" if grant is None else grant.fence)
