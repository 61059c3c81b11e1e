"""Public sample databases, each made in a database of the test's own.

The samples live in ``tests/data/samples/``; its README says where each one
comes from, its licence, what was changed and which types it holds:

- **Pagila** on PostgreSQL: an enum, domains, arrays, ``tsvector``, ``bytea``,
  ``timestamptz``, a partitioned table, views and a materialized view;
- **Sakila** on MariaDB: unsigned integers, ``ENUM``, ``SET``, ``YEAR``,
  ``BLOB``, ``GEOMETRY``, a ``FULLTEXT`` index, triggers and views;
- **Chinook** and **Northwind** on SQLite, as desktop products leave them.

PostgreSQL samples are restored with ``psql`` once per session into a template
database, and each test gets a ``CREATE DATABASE … TEMPLATE`` copy of it.
MariaDB samples are loaded per test with the ``mariadb`` client (well under a
second). SQLite samples are unpacked into the test's ``tmp_path``.

:func:`sample_spec` drafts the spec a new user would write for a whole
database, and :func:`migration_problems` says what kept a migration from
moving every row (``tests/row_compare.py`` then compares the tables).
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from etl_tasks.connectors.sql.engines import create_sql_engine
from etl_tasks.drafting.draft import draft_spec
from etl_tasks.state.db import StateDB
from etl_tasks.views import list_chunks, list_quarantine, migration_view
from tests import services

SAMPLES_DIR = Path(__file__).resolve().parent / "data" / "samples"


def _read_gz(name: str) -> str:
    with gzip.open(SAMPLES_DIR / name, "rt", encoding="utf-8") as f:
        return f.read()


def _client(*names: str) -> str:
    """The first of ``names`` on the PATH; without one the test is skipped (failed in CI)."""
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    services.unavailable(f"the {names[0]} client")
    raise AssertionError("unreachable")


# --- PostgreSQL --------------------------------------------------------------------------------

_OWNER = re.compile(r"^ALTER [^\n]* OWNER TO [^\n]*;\n", re.MULTILINE)


def restore_postgres(url: str, *dumps: str) -> None:
    """Run gzipped plain-SQL dumps from ``SAMPLES_DIR`` into the database at ``url`` with psql.

    ``ALTER … OWNER TO`` statements are left out, so any role that may create a
    database can restore them; everything else runs as written, and the first
    error stops the restore.
    """
    u = make_url(url)
    env = {**os.environ, "PGCONNECT_TIMEOUT": "5"}
    if u.password:
        env["PGPASSWORD"] = u.password
    argv = [
        _client("psql"),
        "--no-psqlrc",
        "--quiet",
        "--set=ON_ERROR_STOP=1",
        f"--host={u.host or '127.0.0.1'}",
        f"--port={u.port or 5432}",
        f"--username={u.username or 'postgres'}",
        f"--dbname={u.database}",
    ]
    sql = "".join(_OWNER.sub("", _read_gz(d)) for d in dumps)
    done = subprocess.run(argv, input=sql.encode(), env=env, capture_output=True, timeout=300)
    if done.returncode:
        raise RuntimeError(f"psql could not restore {dumps}: {done.stderr.decode()[-2000:]}")


@pytest.fixture(scope="session")
def pagila_template() -> Iterator[str]:
    """Pagila restored once per session; the name of its database, a template for copies."""
    if not services.postgres_answers():
        services.unavailable(f"PostgreSQL at {services.PG_ADMIN_URL}")
    with services.pg_database("baton_tpl") as url:
        restore_postgres(url, "pagila-schema.sql.gz", "pagila-data.sql.gz")
        yield str(make_url(url).database)


@pytest.fixture
def pagila_url(pagila_template: str) -> Iterator[str]:
    """A copy of Pagila of this test's own."""
    with services.pg_database(template=pagila_template) as url:
        yield url


# --- MariaDB -----------------------------------------------------------------------------------

# A statement that would leave the test's own database.
_OTHER_DATABASE = re.compile(r"^\s*(USE|(CREATE|DROP|ALTER)\s+(DATABASE|SCHEMA))\b", re.I | re.M)


def load_mariadb(url: str, *dumps: str) -> None:
    """Run gzipped dumps from ``SAMPLES_DIR`` into the database at ``url`` with the mariadb
    client (the dumps have ``DELIMITER`` blocks, which only a client understands)."""
    sql = "".join(_read_gz(d) for d in dumps)
    other = _OTHER_DATABASE.search(sql)
    if other:
        raise AssertionError(f"{dumps} would reach another database: {other.group(0)!r}")
    u = make_url(url)
    env = dict(os.environ)
    if u.password:
        env["MYSQL_PWD"] = u.password
    argv = [
        _client("mariadb", "mysql"),
        "--no-defaults",
        "--protocol=TCP",
        f"--host={u.host or '127.0.0.1'}",
        f"--port={u.port or 3306}",
        f"--user={u.username or 'root'}",
        "--default-character-set=utf8mb4",
        "--connect-timeout=5",
        str(u.database),
    ]
    done = subprocess.run(argv, input=sql.encode(), env=env, capture_output=True, timeout=300)
    if done.returncode:
        raise RuntimeError(f"mariadb could not load {dumps}: {done.stderr.decode()[-2000:]}")


@pytest.fixture
def sakila_url() -> Iterator[str]:
    """Sakila loaded into a MariaDB database of this test's own."""
    if not services.mariadb_answers():
        services.unavailable(f"MariaDB at {services.MARIADB_ADMIN_URL}")
    with services.mariadb_database() as url:
        load_mariadb(url, "sakila-schema.sql.gz", "sakila-data.sql.gz")
        yield url


# --- SQLite ------------------------------------------------------------------------------------


def unpack_sqlite(name: str, folder: Path) -> str:
    """A copy of the SQLite sample ``name`` in ``folder``; its URL."""
    dest = folder / f"{name}.sqlite"
    with gzip.open(SAMPLES_DIR / f"{name}.sqlite.gz") as src, dest.open("wb") as out:
        shutil.copyfileobj(src, out)
    return f"sqlite:///{dest}"


@pytest.fixture
def chinook_url(tmp_path: Path) -> str:
    return unpack_sqlite("chinook", tmp_path)


@pytest.fixture
def northwind_url(tmp_path: Path) -> str:
    return unpack_sqlite("northwind", tmp_path)


# --- The spec a new user would write -----------------------------------------------------------


def sample_spec(source_url: str, target_url: str, name: str) -> dict[str, Any]:
    """The spec ``baton spec init SOURCE --target TARGET`` drafts for a sample."""
    source, target = create_sql_engine(source_url), create_sql_engine(target_url)
    try:
        drafted = draft_spec(
            source,
            target,
            name=f"sample database {name}",
            source_endpoint={"url": source_url},
            target_endpoint={"url": target_url},
        )
    finally:
        source.dispose()
        target.dispose()
    return drafted.spec


# --- What went wrong in a migration ------------------------------------------------------------


def migration_problems(db: StateDB, migration_id: str) -> list[str]:
    """Why a migration did not move every row: its error, the errors of chunks that did not
    finish, the streams left undone, and each distinct reason rows were quarantined. Empty
    when it succeeded and set nothing aside."""
    view = migration_view(db, migration_id)
    problems = (
        [] if view["state"] == "succeeded" else [f"migration {view['state']}: {view['error']}"]
    )
    errors: dict[str, set[str]] = {}
    for chunk in list_chunks(db, migration_id, limit=100_000):
        if chunk["state"] != "done" and chunk["last_error"]:
            errors.setdefault(chunk["stream"], set()).add(chunk["last_error"])
    problems += [f"stream {name}: {sorted(e)}" for name, e in errors.items()]
    undone = [f"{st['name']} ({st['state']})" for st in view["streams"] if st["state"] != "done"]
    if undone:
        problems.append(f"streams not done: {', '.join(undone)}")
    reasons: dict[str, set[str]] = {}
    for q in list_quarantine(db, migration_id, limit=100_000):
        reasons.setdefault(q["stream"], set()).add(q["reason"])
    problems += [f"stream {name} quarantined rows: {sorted(r)}" for name, r in reasons.items()]
    return problems
