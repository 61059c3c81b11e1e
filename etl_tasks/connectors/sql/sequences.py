"""Moving a target table's key generators past the keys a stream loaded.

Rows arrive with their keys, so a serial or identity column's sequence
(PostgreSQL) or a table's AUTO_INCREMENT counter (MariaDB) may still stand where
it stood before the migration, and the application's first INSERT afterwards
would take a key the migration wrote. When a stream finishes, each generator of
its target table is moved past the largest value of its column, and never
backwards: one already further along (rows the application added meanwhile)
keeps its place. SQLite needs nothing: an INTEGER PRIMARY KEY, with or without
AUTOINCREMENT, always continues after the largest key there.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Engine, Table, func, select, text

from etl_tasks.connectors.sql.queries import reflect_table, split_name

# Every column of the table that owns a sequence: serial columns and identity columns.
_PG_OWNED = text(
    "SELECT a.attname, pg_get_serial_sequence(CAST(:t AS text), a.attname) "
    "FROM pg_attribute a "
    "WHERE a.attrelid = CAST(:t AS regclass) AND a.attnum > 0 AND NOT a.attisdropped"
)
# setval only when the sequence would otherwise hand out :m or less (last value + increment,
# or its start when never used); greatest() re-reads it, so a concurrent nextval is kept.
_PG_ADVANCE = text(
    "SELECT setval(s.seqrelid, greatest(CAST(:m AS bigint), "
    "coalesce(pg_sequence_last_value(s.seqrelid), CAST(:m AS bigint))), true) "
    "FROM pg_sequence s "
    "WHERE s.seqrelid = CAST(:seq AS regclass) AND s.seqincrement > 0 "
    "AND CAST(:m AS bigint) >= coalesce(pg_sequence_last_value(s.seqrelid) + s.seqincrement, "
    "s.seqstart)"
)
_MY_AUTO = text(
    "SELECT c.COLUMN_NAME, t.AUTO_INCREMENT FROM information_schema.COLUMNS c "
    "JOIN information_schema.TABLES t "
    "ON t.TABLE_SCHEMA = c.TABLE_SCHEMA AND t.TABLE_NAME = c.TABLE_NAME "
    "WHERE c.TABLE_SCHEMA = coalesce(:schema, DATABASE()) AND c.TABLE_NAME = :t "
    "AND c.EXTRA LIKE '%auto_increment%'"
)


def advance_sequences(engine: Engine, table_name: str) -> list[str]:
    """Move each key generator of the table past its column's largest value; return the
    ones that moved (``sequence`` or ``table.column``)."""
    if engine.dialect.name not in ("postgresql", "mysql", "mariadb"):
        return []
    with engine.begin() as conn:
        table = reflect_table(conn, table_name)
        if conn.dialect.name == "postgresql":
            return _postgresql(conn, table)
        return _mysql(conn, table, table_name)


def _largest(conn: Connection, table: Table, column: str) -> Any:
    return conn.execute(select(func.max(table.c[column]))).scalar()


def _postgresql(conn: Connection, table: Table) -> list[str]:
    name = conn.dialect.identifier_preparer.format_table(table)
    moved: list[str] = []
    for column, sequence in conn.execute(_PG_OWNED, {"t": name}).all():
        if sequence is None:
            continue
        largest = _largest(conn, table, column)
        if largest is None:
            continue
        if conn.execute(_PG_ADVANCE, {"seq": sequence, "m": int(largest)}).first():
            moved.append(str(sequence))
    return moved


def _mysql(conn: Connection, table: Table, table_name: str) -> list[str]:
    schema, bare = split_name(table_name)
    moved: list[str] = []
    for column, counter in conn.execute(_MY_AUTO, {"schema": schema, "t": bare}).all():
        largest = _largest(conn, table, column)
        if largest is None or (counter is not None and int(counter) > int(largest)):
            continue
        name = conn.dialect.identifier_preparer.format_table(table)
        # DDL takes no bind parameters: the value is an int, formatted as one.
        conn.execute(text(f"ALTER TABLE {name} AUTO_INCREMENT = {int(largest) + 1:d}"))
        moved.append(f"{table_name}.{column}")
    return moved
