"""Fixtures shared by every test: settings, a state DB, Redis, source and target databases."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from etl_tasks.settings import Settings
from etl_tasks.state.db import upgrade
from ops.timings import FAST_TIMINGS
from tests import services
from tests.samples import (  # noqa: F401  (fixtures: the public sample databases)
    chinook_url,
    northwind_url,
    pagila_template,
    pagila_url,
    sakila_url,
)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The machine's Redis when it answers, else an embedded one (CI: must answer)."""
    if services.redis_answers(services.REDIS_URL):
        yield services.REDIS_URL
        return
    if services.IN_CI:
        pytest.fail(f"Redis at {services.REDIS_URL} is required in CI", pytrace=False)
    embedded = services.EmbeddedRedis(tmp_path_factory.mktemp("redis")).start()
    yield embedded.url
    embedded.kill()


@pytest.fixture
def key_prefix(redis_server: str) -> Iterator[str]:
    prefix = f"baton-test-{uuid.uuid4().hex[:10]}:"
    yield prefix
    services.delete_prefix(redis_server, prefix)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL database of this test's own."""
    if not services.postgres_answers():
        services.unavailable(f"PostgreSQL at {services.PG_ADMIN_URL}")
    with services.pg_database() as url:
        yield url


@pytest.fixture(scope="session")
def pg_state_template() -> Iterator[str]:
    """A PostgreSQL state DB at this version's schema, made once per session (per xdist
    process); the name of the template a test's PostgreSQL state DB is copied from."""
    if not services.postgres_answers():
        services.unavailable(f"PostgreSQL at {services.PG_ADMIN_URL}")
    with services.pg_database("baton_tpl") as url:
        upgrade(url)
        yield str(make_url(url).database)


@pytest.fixture
def pg_state_url_factory(pg_state_template: str) -> Iterator[Callable[[], str]]:
    """PostgreSQL state DBs of this test's own, at this version's schema (copies)."""
    with ExitStack() as stack:
        yield lambda: stack.enter_context(services.pg_state_database(pg_state_template))


@pytest.fixture
def pg_state_url(pg_state_url_factory: Callable[[], str]) -> str:
    """A PostgreSQL state DB of this test's own, at this version's schema."""
    return pg_state_url_factory()


@pytest.fixture
def pg_url_factory() -> Iterator[Callable[[], str]]:
    """More PostgreSQL databases for one test (source, target, state DB)."""
    if not services.postgres_answers():
        services.unavailable(f"PostgreSQL at {services.PG_ADMIN_URL}")
    stack: list[Any] = []

    def make() -> str:
        cm = services.pg_database()
        url = cm.__enter__()
        stack.append(cm)
        return url

    yield make
    for cm in reversed(stack):
        cm.__exit__(None, None, None)


@pytest.fixture(scope="session")
def state_db_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite state DB at this version's schema, made once per session (per xdist
    process): a test's new SQLite state DB is a copy of it, where running every Alembic
    revision again would cost each test a few tenths of a second."""
    path = tmp_path_factory.mktemp("state-template") / "state.db"
    upgrade(f"sqlite:///{path}")
    return path


def _ready_state_db(url: str, template: Path) -> None:
    """A SQLite state DB not there yet becomes a copy of the template; any other (a
    PostgreSQL one, or a file that exists) is upgraded in place, as before."""
    u = make_url(url)
    if u.get_backend_name() == "sqlite" and u.database and u.database != ":memory:":
        path = Path(u.database)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            spare = path.with_name(f"{path.name}.copy")
            shutil.copyfile(template, spare)
            os.replace(spare, path)  # appears whole: nobody reads half a copy
            return
    upgrade(url)


@pytest.fixture
def make_settings(
    redis_server: str, key_prefix: str, tmp_path: Path, state_db_template: Path
) -> Callable[..., Settings]:
    """Settings for one test: its own key prefix, fast timings; a SQLite state DB by default."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "broker_url": redis_server,
            "database_url": f"sqlite:///{tmp_path / 'state.db'}",
            "key_prefix": key_prefix,
            "auth": "off",
            **FAST_TIMINGS,
        }
        values.update(overrides)
        settings = Settings(**values)
        _ready_state_db(settings.database_url, state_db_template)
        return settings

    return make


@pytest.fixture(params=["sqlite", "postgresql"])
def each_state_db(
    request: pytest.FixtureRequest, make_settings: Callable[..., Settings]
) -> Callable[..., Settings]:
    """:func:`make_settings` on each kind of state DB in turn (the test runs once per kind):
    SQLite, then a PostgreSQL state DB of the test's own."""
    if request.param == "sqlite":
        return make_settings
    url = request.getfixturevalue("pg_state_url")
    return lambda **overrides: make_settings(**{"database_url": url, **overrides})


@pytest.fixture
def mariadb_url() -> Iterator[str]:
    """A MariaDB database of this test's own."""
    if not services.mariadb_answers():
        services.unavailable(f"MariaDB at {services.MARIADB_ADMIN_URL}")
    with services.mariadb_database() as url:
        yield url
