"""The Django application configuration of django_workers."""

from django.apps import AppConfig


class DjangoWorkersConfig(AppConfig):
    """Registers django_workers with Django."""

    name = "django_workers"
    verbose_name = "Workers"
    default_auto_field = "django.db.models.BigAutoField"
