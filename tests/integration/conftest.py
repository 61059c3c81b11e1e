"""Fixtures for tests that run steps in this process."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from etl_tasks.settings import Settings
from tests.harness import Driver


@pytest.fixture
def driver(make_settings: Callable[..., Settings]) -> Iterator[Driver]:
    """An in-process driver on this test's settings, closed afterwards."""
    d = Driver(make_settings())
    yield d
    d.close()
