"""The services tests run against: the machine's PostgreSQL and Redis, or an embedded Redis.

Locally a missing service skips the tests that need it; with ``CI=true`` it
fails them. Every test gets its own PostgreSQL database and its own Redis
key prefix, and cleans up only what it created.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import redis
from sqlalchemy.engine import make_url

from etl_tasks.connectors.sql.engines import create_sql_engine
from etl_tasks.state.db import comment_database
from ops.embedded import free_port, start_redis

IN_CI = os.environ.get("CI", "").lower() == "true"
PG_ADMIN_URL = os.environ.get(
    "BATON_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("BATON_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def unavailable(what: str) -> None:
    """Skip locally, fail in CI."""
    if IN_CI:
        pytest.fail(f"{what} is required in CI", pytrace=False)
    pytest.skip(f"{what} is not running")


def _pg_params(url: str) -> dict[str, object]:
    u = make_url(url)
    return {
        "host": u.host or "127.0.0.1",
        "port": u.port or 5432,
        "user": u.username or "postgres",
        "password": u.password,
        "dbname": u.database or "postgres",
        "connect_timeout": 3,
    }


def postgres_answers() -> bool:
    try:
        psycopg2.connect(**_pg_params(PG_ADMIN_URL)).close()
        return True
    except psycopg2.Error:
        return False


@contextmanager
def pg_database(prefix: str = "baton_t", template: str | None = None) -> Iterator[str]:
    """A fresh PostgreSQL database for one test (a copy of ``template``), dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(**_pg_params(PG_ADMIN_URL))
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            copy = f' TEMPLATE "{template}"' if template else ""
            for attempt in range(50):
                try:
                    cur.execute(f'CREATE DATABASE "{name}"{copy}')
                    break
                except psycopg2.errors.ObjectInUse:  # the template's last session is closing
                    if attempt == 49:
                        raise
                    time.sleep(0.1)
        yield make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@contextmanager
def pg_state_database(template: str) -> Iterator[str]:
    """A PostgreSQL state DB for one test, upgraded and marked as ``baton db upgrade``
    leaves it: a copy of ``template`` (an upgraded one), where an Alembic run would cost
    each test a second."""
    with pg_database(template=template) as url:
        engine = create_sql_engine(url, pool_size=1)
        try:
            comment_database(engine)  # a comment is not copied with its database
        finally:
            engine.dispose()
        yield url


def redis_answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=2).ping())
    except redis.RedisError:
        return False


class EmbeddedRedis:
    """A redis-server of the tests' own, on its own port (for tests that break it)."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> EmbeddedRedis:
        self.proc = start_redis(self.port, self.workdir)
        return self

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


def delete_prefix(url: str, prefix: str) -> None:
    """Remove the keys one test created (never FLUSHDB on a shared server)."""
    client = redis.Redis.from_url(url)
    with client:
        batch = list(client.scan_iter(match=f"{prefix}*", count=1000))
        for i in range(0, len(batch), 500):
            client.delete(*batch[i : i + 500])


MARIADB_ADMIN_URL = os.environ.get("BATON_TEST_MARIADB_URL", "mysql://root@127.0.0.1:3306/test")


def _mariadb_connect(url: str, database: str | None = None) -> object:
    import pymysql

    u = make_url(url)
    return pymysql.connect(
        host=u.host or "127.0.0.1",
        port=u.port or 3306,
        user=u.username or "root",
        password=u.password or "",
        database=database,
        connect_timeout=3,
        autocommit=True,
    )


def mariadb_answers() -> bool:
    import pymysql

    try:
        _mariadb_connect(MARIADB_ADMIN_URL).close()  # type: ignore[attr-defined]
        return True
    except pymysql.Error:
        return False


@contextmanager
def mariadb_database() -> Iterator[str]:
    """A fresh MariaDB database for one test, dropped afterwards."""
    name = f"baton_t_{uuid.uuid4().hex[:10]}"
    conn: Any = _mariadb_connect(MARIADB_ADMIN_URL)
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        yield make_url(MARIADB_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        conn.close()
