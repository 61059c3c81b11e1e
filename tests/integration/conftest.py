"""Fixtures for tests that run steps in this process, and for the API's test client."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from etl_tasks.settings import Settings
from tests.data import build_source, spec_for, sqlite_url
from tests.harness import Driver
from tests.integration.api_support import Api, Spec, make_api


@pytest.fixture
def driver(make_settings: Callable[..., Settings]) -> Iterator[Driver]:
    """An in-process driver on this test's settings, closed afterwards."""
    d = Driver(make_settings())
    yield d
    d.close()


@pytest.fixture
def api(make_settings: Callable[..., Settings]) -> Api:
    """The API with auth off: every caller is the local admin."""
    return make_api(make_settings())


@pytest.fixture
def secured(make_settings: Callable[..., Settings]) -> Api:
    """The API with bearer tokens on."""
    return make_api(make_settings(auth="on"))


@pytest.fixture
def source_db(tmp_path: Path) -> Path:
    path = tmp_path / "legacy.db"
    build_source(sqlite_url(path), customers=40, orders=10)
    return path


@pytest.fixture
def spec(source_db: Path, tmp_path: Path) -> Spec:
    return spec_for(sqlite_url(source_db), sqlite_url(tmp_path / "target.db"))
