"""Creating target tables and the ledger, once per stream, under a lock.

Types are SQLAlchemy's generic ones so a table read from SQLite can be
created in PostgreSQL or MariaDB; the key becomes the primary key; no foreign
keys are copied (streams load in parallel, in any order).
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    DateTime,
    Engine,
    Float,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    Time,
    inspect,
    text,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.types import NullType, TypeEngine

from etl_tasks.connectors.ledger import LONG_TEXT_COLUMNS, ledger_table
from etl_tasks.connectors.sql_source import split_name
from etl_tasks.errors import TransientError


def portable_type(sa_type: TypeEngine[Any]) -> TypeEngine[Any]:
    """The generic form of a reflected type; untyped SQLite columns become text."""
    if isinstance(sa_type, NullType):
        return Text()
    try:
        generic = sa_type.as_generic()
    except NotImplementedError:
        return Text()
    return Text() if isinstance(generic, NullType) else generic


def _key_safe(sa_type: TypeEngine[Any], dialect: str) -> TypeEngine[Any]:
    """MySQL cannot index unbounded text: a text key column gets a length."""
    if dialect in ("mysql", "mariadb") and isinstance(sa_type, Text | String):
        if getattr(sa_type, "length", None) is None or isinstance(sa_type, Text):
            return String(255)
    return sa_type


def _lossless(sa_type: TypeEngine[Any], dialect: str) -> TypeEngine[Any]:
    """MySQL's defaults lose data (DECIMAL(10,0), DATETIME without fractions): widen them."""
    if dialect not in ("mysql", "mariadb"):
        return sa_type
    if isinstance(sa_type, Numeric) and not isinstance(sa_type, Float):
        if sa_type.precision is None:
            return mysql.DECIMAL(precision=65, scale=20)
        return sa_type
    if isinstance(sa_type, DateTime):
        return mysql.DATETIME(fsp=6)
    if isinstance(sa_type, Time):
        return mysql.TIME(fsp=6)
    if isinstance(sa_type, Float):
        return mysql.DOUBLE()
    return sa_type


@contextlib.contextmanager
def _ddl_lock(engine: Engine, name: str) -> Iterator[Connection]:
    """A transaction holding a lock on ``name``, so DDL runs once even when two workers race.

    PostgreSQL: a transaction-scoped advisory lock (released at commit, never leaked by the
    pool). MySQL/MariaDB: a named lock, released in ``finally`` on the same connection.
    SQLite: ``BEGIN IMMEDIATE`` already serialises writers.
    """
    with engine.begin() as conn:
        dialect = conn.dialect.name
        if dialect == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": zlib.crc32(name.encode())})
        elif dialect in ("mysql", "mariadb"):
            got = conn.execute(text("SELECT GET_LOCK(:n, 60)"), {"n": name[:64]}).scalar()
            if got != 1:
                raise TransientError(f"could not take the DDL lock {name!r}")
        try:
            yield conn
        finally:
            if dialect in ("mysql", "mariadb"):
                conn.execute(text("SELECT RELEASE_LOCK(:n)"), {"n": name[:64]})


def ensure_table(
    engine: Engine,
    name: str,
    columns: Sequence[tuple[str, TypeEngine[Any], bool]],
    key: Sequence[str],
) -> bool:
    """Create the target table if it is missing; return whether it was created."""
    schema, table_name = split_name(name)
    dialect = engine.dialect.name
    cols = [
        Column(
            n,
            _key_safe(_lossless(t, dialect), dialect) if n in key else _lossless(t, dialect),
            primary_key=n in key,
            nullable=(n not in key and nullable),
            autoincrement=False,
        )
        for n, t, nullable in columns
    ]
    with _ddl_lock(engine, f"baton:ddl:{name}") as conn:
        if inspect(conn).has_table(table_name, schema=schema):
            return False
        Table(table_name, MetaData(), *cols, schema=schema).create(conn)
        return True


def ensure_ledger(engine: Engine) -> None:
    """Create the target's ledger table if it is missing; bring an older one up to date."""
    table = ledger_table()
    with _ddl_lock(engine, "baton:ddl:ledger") as conn:
        insp = inspect(conn)
        if not insp.has_table(table.name):
            table.create(conn)
            return
        # Expand, never contract: a ledger made by an older version gains the new columns
        # and its text columns are widened; every version reads and writes either shape.
        have = {c["name"]: c for c in insp.get_columns(table.name)}
        for column in table.columns:
            if column.name not in have:
                _alter(conn, table, column, "ADD COLUMN")
            elif _too_narrow(conn, column, have[column.name]["type"]):
                _alter(conn, table, column, "MODIFY COLUMN")


def _too_narrow(conn: Connection, column: Column[Any], have: TypeEngine[Any]) -> bool:
    """MySQL/MariaDB only: a long-text column of the ledger that is TEXT or smaller."""
    if conn.dialect.name not in ("mysql", "mariadb") or column.name not in LONG_TEXT_COLUMNS:
        return False
    return not isinstance(have, mysql.LONGTEXT)


def _alter(conn: Connection, table: Table, column: Column[Any], action: str) -> None:
    prep = conn.dialect.identifier_preparer
    kind = column.type.compile(dialect=conn.dialect)
    # An added column stays nullable: rows an older version wrote have no value for it.
    null = " NOT NULL" if action == "MODIFY COLUMN" and not column.nullable else ""
    conn.execute(
        text(
            f"ALTER TABLE {prep.quote(table.name)} {action} {prep.quote(column.name)} {kind}{null}"
        )
    )
