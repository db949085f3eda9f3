"""Rows and users for the admin tests: rows are made with the ORM (not by the recorder)."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.utils import timezone

from django_workers.models import Execution, ExecutionEvent, ExecutionStatus, Node
from tests.support import node_factory

XSS = "<script>alert(1)</script>"
XSS_ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"


@pytest.fixture
def now() -> datetime:
    return timezone.now().replace(microsecond=0)


@pytest.fixture
def make_node(now: datetime) -> Callable[..., Node]:
    return node_factory(now)


@pytest.fixture
def make_execution(now: datetime) -> Callable[..., Execution]:
    seconds = itertools.count()

    def make(node: Node, **fields: Any) -> Execution:
        created = fields.pop("created_at", None) or now - timedelta(seconds=next(seconds))
        values: dict[str, Any] = {
            "id": uuid.uuid4(),
            "node": node,
            "worker": "alpha",
            "attempt": 1,
            "max_attempts": 3,
            "status": ExecutionStatus.SUCCESS,
            "created_at": created,
            "started_at": created,
            "finished_at": created + timedelta(seconds=75),
            "duration": 75.0,
        }
        values.update(fields)
        return Execution.objects.create(**values)

    return make


@pytest.fixture
def make_events(now: datetime) -> Callable[..., list[ExecutionEvent]]:
    def make(
        execution: Execution | None, count: int, *, node: Node | None = None, message: str = "event {i}", **fields: Any
    ) -> list[ExecutionEvent]:
        owner = node if node is not None else execution.node  # type: ignore[union-attr]
        events = [
            ExecutionEvent(
                node=owner,
                execution=execution,
                timestamp=now + timedelta(milliseconds=i),
                level=fields.get("level", "INFO"),
                message=message.format(i=i),
            )
            for i in range(count)
        ]
        return ExecutionEvent.objects.bulk_create(events)

    return make


def _user(username: str, *, staff: bool = True, superuser: bool = False, perms: tuple[str, ...] = ()) -> User:
    user = User.objects.create_user(username, password="pw", is_staff=staff, is_superuser=superuser)
    if perms:
        user.user_permissions.add(
            *Permission.objects.filter(content_type__app_label="django_workers", codename__in=perms)
        )
    return user


@pytest.fixture
def viewer(db: None) -> User:
    """Staff with the view permission of executions and nodes (not of events)."""
    return _user("viewer", perms=("view_execution", "view_node"))


@pytest.fixture
def viewer_client(viewer: User) -> Client:
    client = Client()
    client.force_login(viewer)
    return client


@pytest.fixture
def superuser_client(db: None) -> Client:
    client = Client()
    client.force_login(_user("root", superuser=True))
    return client


@pytest.fixture
def staff_without_permission_client(db: None) -> Client:
    client = Client()
    client.force_login(_user("nobody"))
    return client
