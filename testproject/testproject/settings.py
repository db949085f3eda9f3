"""Settings of the test project: SQLite by default, PostgreSQL when DATABASE_URL is set."""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = "test-project-only-not-a-secret"
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "health_check",
    "django_workers",
    "demo",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

ROOT_URLCONF = "testproject.urls"
# Requests are traced by OpenTelemetry there (testproject/telemetry.py).
WSGI_APPLICATION = "testproject.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

if os.environ.get("DATABASE_URL"):
    import dj_database_url

    DATABASES = {"default": dj_database_url.parse(os.environ["DATABASE_URL"], conn_max_age=0)}
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ.get("SQLITE_PATH", str(BASE_DIR / "db.sqlite3")),
        }
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"
STATIC_URL = "static/"

# The demo workers that `make run` starts (testproject/demo/workers.py).
WORKERS = {
    "MAX_EXECUTIONS_ATTEMPTS": 3,  # a failing worker is restarted twice, then given up
    "RESTART_BACKOFF": {"INITIAL": 1.0, "MAXIMUM": 10.0, "MULTIPLIER": 2.0, "JITTER": 0.1},
    "STOP_TIMEOUT": 10.0,
    # Every attempt and event stored (the admin shows them); the node heartbeats every 10 s.
    "HISTORY": {"ENABLED": True, "RETENTION_DAYS": 7},
    # Prometheus: `WORKERS_METRICS_PORT=9100 make run`, then `curl localhost:9100/metrics`.
    "METRICS": {
        "ENABLED": True,
        "PORT": int(os.environ["WORKERS_METRICS_PORT"]) if os.environ.get("WORKERS_METRICS_PORT") else None,
        "ADDRESS": os.environ.get("WORKERS_METRICS_ADDRESS", "127.0.0.1"),
    },
    # OpenTelemetry: one span per attempt; `OTEL_TRACES_EXPORTER=console make run` prints them.
    "TRACING": {"ENABLED": True, "PROVIDER": "testproject.telemetry.tracer_provider"},
    # Health: `WORKERS_HEALTH_PORT=8081 make run`, then `curl localhost:8081/readyz` (docs/health.md).
    "HEALTH": {"PORT": int(os.environ["WORKERS_HEALTH_PORT"]) if os.environ.get("WORKERS_HEALTH_PORT") else None},
    "WORKERS": [
        "demo.workers.ClassicWorker",
        {"CLASS": "demo.workers.CancellableWorker", "OPTIONS": {"interval": 2.0}},
        # Fails twice, succeeds on its third attempt (restarts after ~1 s, then ~2 s).
        {"CLASS": "demo.workers.FlakyWorker", "OPTIONS": {"failures": 2}},
        "demo.workers.AsyncWorker",
        # Starts after 2 seconds; restarted for ever (a database outage must not end it).
        {
            "CLASS": "demo.workers.OrmWorker",
            "DEFERRED_START_THRESHOLD": 2.0,
            "MAX_EXECUTIONS_ATTEMPTS": 0,
            "OPTIONS": {"interval": 5.0},
        },
    ],
}
