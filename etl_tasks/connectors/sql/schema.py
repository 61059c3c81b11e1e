"""Creating target tables and the ledger, once per stream, under a lock.

Each column's type is what :mod:`etl_tasks.values.ddl` carries it to (the
source's own declaration within one dialect, its exact counterpart across);
the key becomes the primary key; no foreign keys are copied (streams load in
parallel, in any order). On PostgreSQL the primary key of a table whose key is unique
in the source is built once the stream's rows are in (:func:`build_deferred_key`), as a
bulk load builds its indexes after the data: chunks loaded side by side each inserting
into the middle of one B-tree cost the server a third more CPU than the same rows
without it, and one sorted build afterwards costs a fraction of that.
"""

from __future__ import annotations

import contextlib
import json
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
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


#: How the comment of a table created without its primary key begins, until the key is
#: built: whichever process finishes the stream, or needs the key sooner, can tell it is
#: owed, on which columns, and which stream's chunks alone write into the table meanwhile.
DEFERRED_KEY = "baton: primary key built when the load ends "


@dataclass(frozen=True)
class OwedKey:
    """A table's primary key, owed since the stream that created it began loading it."""

    key: list[str]
    migration: str
    stream: str

    @property
    def owner(self) -> tuple[str, str]:
        """The migration and stream that may load the table before the key is built."""
        return (self.migration, self.stream)

    def comment(self) -> str:
        return DEFERRED_KEY + json.dumps(
            {"key": self.key, "migration": self.migration, "stream": self.stream}
        )


def ensure_table(
    engine: Engine,
    name: str,
    columns: Sequence[TargetColumn],
    key: Sequence[str],
    unique: bool = True,
    defer_for: tuple[str, str] | None = None,
) -> bool:
    """Create the target table if it is missing (its enum types and domains first); return
    whether it was created. A unique key is its primary key; one that is not (``write:
    insert``) gets a plain index, for the loads' range checks. ``defer_for`` (a migration
    and stream): on PostgreSQL a unique key's primary key is left for
    :func:`build_deferred_key`, and the table says so (:class:`OwedKey`)."""
    schema, table_name = split_name(name)
    owed = None
    if defer_for is not None and unique and engine.dialect.name == "postgresql":
        owed = OwedKey(list(key), *defer_for)
    cols = [
        Column(
            c.name,
            DeclaredType(c.carried.sql),
            primary_key=unique and owed is None and c.name in key,
            nullable=c.nullable and not (owed is not None and c.name in key),
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
        table = Table(table_name, MetaData(), *cols, *extra, schema=schema)
        table.create(conn)
        if owed is not None:
            quoted = _quoted(conn, name)  # the driver quotes the comment (no bind in COMMENT)
            conn.exec_driver_sql(f"COMMENT ON TABLE {quoted} IS %(c)s", {"c": owed.comment()})
        return True


#: The table's owed key from its comment, while it has no primary key. Naming the table
#: takes its ACCESS SHARE lock until the transaction ends: a key build (ACCESS EXCLUSIVE)
#: waits for a load that found the key owed.
_OWED = (
    "SELECT obj_description(c.oid, 'pg_class') FROM pg_class c "
    "WHERE c.oid = to_regclass(%(table)s) AND NOT EXISTS "
    "(SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary) "
    "AND NOT EXISTS (SELECT FROM {table} WHERE false)"
)


def owed_key(conn: Connection, name: str) -> OwedKey | None:
    """The primary key the table was created without and is still owed, if any
    (PostgreSQL; elsewhere never). Locks the table against a key build for the rest of
    ``conn``'s transaction."""
    if conn.dialect.name != "postgresql":
        return None
    quoted = _quoted(conn, name)
    sql = _OWED.format(table=quoted.replace("%", "%%"))
    found = conn.exec_driver_sql(sql, {"table": quoted}).scalar()
    if not isinstance(found, str) or not found.startswith(DEFERRED_KEY):
        return None
    fields = json.loads(found[len(DEFERRED_KEY) :])
    return OwedKey(list(fields["key"]), str(fields["migration"]), str(fields["stream"]))


def build_deferred_key(engine: Engine, name: str, unless: tuple[str, str] | None = None) -> bool:
    """Build the primary key a table was created without (:func:`ensure_table`), once,
    under the table's DDL lock: one sorted index build over the loaded rows; not while
    the stream ``unless`` (a migration and stream) owes it. Returns whether it was built
    here. Idempotent: the table's comment says whether it is owed."""
    if engine.dialect.name != "postgresql":
        return False
    with _ddl_lock(engine, f"baton:ddl:{name}") as conn:
        owed = owed_key(conn, name)
        if owed is None or owed.owner == unless:
            return False
        _build_key(conn, name, owed)
        return True


def _build_key(conn: Connection, name: str, owed: OwedKey) -> None:
    table = _quoted(conn, name)
    columns = ", ".join(conn.dialect.identifier_preparer.quote(k) for k in owed.key)
    conn.exec_driver_sql(f"ALTER TABLE {table} ADD PRIMARY KEY ({columns})")
    conn.exec_driver_sql(f"COMMENT ON TABLE {table} IS NULL")


def _quoted(conn: Connection, name: str) -> str:
    schema, table_name = split_name(name)
    table = Table(table_name, MetaData(), schema=schema)
    return conn.dialect.identifier_preparer.format_table(table)


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
