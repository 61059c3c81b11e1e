"""Creating target tables and the ledger, once per stream, under a lock.

Each column's type is what :mod:`etl_tasks.values.ddl` carries it to (the
source's own declaration within one dialect, its exact counterpart across);
the key becomes the primary key; no foreign keys are copied (streams load in
parallel, in any order).
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import Column, Connection, Engine, Index, MetaData, Table, inspect, text
from sqlalchemy.dialects import mysql
from sqlalchemy.types import TypeEngine

from etl_tasks.connectors.sql.ledger import LONG_TEXT_COLUMNS, ledger_table
from etl_tasks.connectors.sql.queries import split_name
from etl_tasks.errors import TransientError
from etl_tasks.values.ddl import DeclaredType, Target, TargetColumn


def target_of(conn: Connection, table_name: str) -> Target:
    """What :func:`etl_tasks.values.ddl.carry` needs to know of a target table's database."""
    mariadb = bool(getattr(conn.dialect, "is_mariadb", False))
    return Target(conn.dialect.name, mariadb, table_name)


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
    columns: Sequence[TargetColumn],
    key: Sequence[str],
    unique: bool = True,
) -> bool:
    """Create the target table if it is missing (its enum types and domains first); return
    whether it was created. A unique key is its primary key; one that is not (``write:
    insert``) gets a plain index, for the loads' range checks."""
    schema, table_name = split_name(name)
    cols = [
        Column(
            c.name,
            DeclaredType(c.carried.sql),
            primary_key=unique and c.name in key,
            nullable=c.nullable,
            autoincrement=False,
        )
        for c in columns
    ]
    extra = [] if unique else [Index(f"{table_name}_baton_key", *key)]
    with _ddl_lock(engine, f"baton:ddl:{name}") as conn:
        if inspect(conn).has_table(table_name, schema=schema):
            return False
        for statement in dict.fromkeys(s for c in columns for s in c.carried.setup):
            conn.exec_driver_sql(statement)
        Table(table_name, MetaData(), *cols, *extra, schema=schema).create(conn)
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
