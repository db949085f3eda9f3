from django.contrib import admin
from django.urls import path
from health_check.views import HealthCheckView

urlpatterns = [
    path("admin/", admin.site.urls),
    # Liveness: the web process answers (no database, no worker state).
    path("health/live/", HealthCheckView.as_view(checks=[]), name="health-live"),
    # Readiness: the database, and the workers (this process's pool, else the runworkers history).
    path(
        "health/ready/",
        HealthCheckView.as_view(checks=["health_check.Database", "django_workers.health.Workers"]),
        name="health-ready",
    ),
]
