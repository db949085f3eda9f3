"""WSGI entry point of the test project (``runserver`` uses it too, through ``WSGI_APPLICATION``).

Requests are traced with the project's tracer provider (testproject/telemetry.py) before the
handler is built, so that DjangoInstrumentor's middleware is in place.
"""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testproject.settings")

from testproject.telemetry import instrument_requests

instrument_requests()
application = get_wsgi_application()
