"""The negative control of the fleet tests: settings_fleet, with the holder's trust window disabled.

A holder normally cancels its singleton worker ``LEASE_TTL - MARGIN - STOP_TIMEOUT`` seconds after
the start of its last successful renewal, by its own clock, even when it cannot reach the
database. Here :class:`~django_workers.fleet.keeper.LeaseKeeper`'s ``window`` is made huge: a
holder cut off from the database keeps running its worker while another replica takes the
expired lease, and the oracle must see the overlap.

The patch is applied in ``ready()`` of an app of its own (the keeper imports the models, which
cannot be imported while the settings are).
"""

from django.apps import AppConfig

from tests.scenarios.settings_fleet import *  # noqa: F403
from tests.scenarios.settings_fleet import INSTALLED_APPS

#: Seconds a holder trusts its lease without renewing it: longer than any test.
UNSAFE_WINDOW = 1_000_000.0


class TrustTheLeaseForever(AppConfig):
    name = "tests.scenarios"
    label = "fleet_unsafe"
    verbose_name = "fleet tests: the trust window disabled"

    def ready(self) -> None:
        from django_workers.fleet.keeper import LeaseKeeper  # here: the models are ready now

        initialise = LeaseKeeper.__init__

        def __init__(keeper: LeaseKeeper, *args: object, **kwargs: object) -> None:
            initialise(keeper, *args, **kwargs)  # type: ignore[arg-type]
            keeper.window = UNSAFE_WINDOW

        LeaseKeeper.__init__ = __init__  # type: ignore[method-assign,assignment]


INSTALLED_APPS = [*INSTALLED_APPS, f"{__name__}.TrustTheLeaseForever"]
