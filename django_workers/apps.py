"""The Django application configuration of django_workers."""

from __future__ import annotations

import logging
import threading
from types import ModuleType
from typing import TYPE_CHECKING, Any

from django.apps import AppConfig
from django.core.signals import setting_changed

from . import checks
from .core.context import LOGGER_NAME
from .settings.workers import forget_constructed_workers

if TYPE_CHECKING:
    from .core.pool import WorkerPool

logger = logging.getLogger(LOGGER_NAME)


class DjangoWorkersConfig(AppConfig):
    """Registers django_workers with Django and holds the project's pool, built on first use.

    ``ready()`` only registers the system checks and the ``setting_changed`` receiver: it touches
    no database, starts no thread, binds no port and imports no worker module.
    """

    name = "django_workers"
    verbose_name = "Workers"
    default_auto_field = "django.db.models.BigAutoField"

    def __init__(self, app_name: str, app_module: ModuleType | None) -> None:
        super().__init__(app_name, app_module)
        self._pool: WorkerPool | None = None
        self._pool_lock = threading.Lock()

    def ready(self) -> None:
        """Register the system checks and reset the pool when ``WORKERS`` changes.

        Any setting change also drops the worker instances that validating ``WORKERS`` constructed
        for the next pool (a constructor may read any setting): the system checks, the settings and
        this pool share one instance of each worker, never a stale one.
        """
        checks.register()
        setting_changed.connect(self._setting_changed, dispatch_uid="django_workers.apps.setting_changed")

    @property
    def pool(self) -> WorkerPool:
        """The pool configured by ``settings.WORKERS``, built (not started) on first access.

        Thread-safe: concurrent first accesses build one pool. Raises ``ImproperlyConfigured``
        when the settings are invalid (``manage.py check`` tells what is wrong).
        """
        pool = self._pool
        if pool is None:
            with self._pool_lock:
                pool = self._pool
                if pool is None:
                    # An AppConfig's module is imported before the models are ready, and the
                    # composition root imports the history (models).
                    from .runtime import build_pool  # noqa: PLC0415 - Django: models load after apps.py

                    pool = self._pool = build_pool()
        return pool

    def reset_pool(self) -> WorkerPool | None:
        """Forget the cached pool (the next access builds a new one); return the old one, if any.

        A pool that was started is neither stopped nor otherwise touched: whoever started it owns
        it and must stop it.
        """
        with self._pool_lock:
            pool, self._pool = self._pool, None
        return pool

    def _setting_changed(self, *, setting: str, **kwargs: Any) -> None:
        forget_constructed_workers()
        if setting != "WORKERS":
            return
        pool = self.reset_pool()
        if pool is not None and pool.started and not pool.stopping:
            logger.warning(
                "settings.WORKERS changed while the worker pool was running; it keeps running with the "
                "old settings and is no longer the app's pool (stop it, then access the pool again)"
            )
