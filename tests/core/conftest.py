"""Fixtures of the engine tests: pools that are always stopped, gates that are always opened."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from tests.core.engine_support import Harness, RecordCollector


@pytest.fixture
def harness() -> Iterator[Harness]:
    h = Harness()
    try:
        yield h
    finally:
        h.close()


@pytest.fixture(autouse=True)
def no_supervision_failure() -> Iterator[None]:
    """Fail any test during which the engine's own supervision code crashed.

    The drivers log ``supervision of worker <name> failed`` when the pool itself (not a worker)
    raises: whatever the test asserts, that is a bug.
    """
    logger = logging.getLogger("django_workers")
    handler = RecordCollector()
    handler.setLevel(logging.ERROR)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
    crashes = handler.matching("supervision of worker")
    if crashes:
        pytest.fail(f"the engine's supervision crashed: {[logging.Formatter().format(r) for r in crashes]}")
