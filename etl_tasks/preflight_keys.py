"""Proving a key unique and not null, by what the database guarantees.

A primary key, or a unique constraint or index over NOT NULL columns, counts;
a partial index (``... WHERE active``) or one on expressions does not: it says
nothing about the rows it leaves out. SQLite lets a primary key that is not
``INTEGER PRIMARY KEY`` hold NULLs, so those are counted. With ``write:
insert`` any orderable key will do (a table without a primary key, a view):
rows with equal keys then always share a chunk.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Table, func, inspect, or_, select

from etl_tasks.connectors.sql.queries import raw, split_name
from etl_tasks.connectors.sql.schema import owed_key
from etl_tasks.values.types import ColumnType, Kind

_UNORDERABLE = ("JSON", "JSONB", "ARRAY", "HSTORE", "XML", "GEOMETRY", "GEOGRAPHY", "TSVECTOR")


def key_problem(
    conn: Connection,
    table: Table,
    key: Sequence[str],
    types: dict[str, ColumnType],
    write: str,
    side: str = "source",
) -> str | None:
    """Why ``key`` cannot key ``table``, or ``None`` when it is proved unique."""
    if not key:
        return f"{table.name!r} has no primary key: give 'key'"
    missing = [k for k in key if k not in table.c]
    if missing:
        return f"no column {missing[0]!r} in {table.name!r}"
    for k in key:
        declared = types.get(k)
        name = type(table.c[k].type).__name__.upper()
        if (declared is not None and declared.kind in (Kind.JSON, Kind.ARRAY)) or (
            name in _UNORDERABLE
        ):
            return f"key column {k!r} ({declared.sql if declared else name}) cannot be ordered"
    if write == "insert" and side == "source":
        return None  # any orderable key: equal keys share a chunk
    if not unique_not_null(conn, table, key):
        return (
            f"key {list(key)} is not unique and not null in {table.name!r}"
            + ("" if side == "source" else " (the target)")
            + ": use the primary key or a unique index on NOT NULL columns "
            "(partial and expression indexes do not count)"
            + (", or write: insert" if side == "source" else "")
        )
    return None


def unique_not_null(conn: Connection, table: Table, key: Sequence[str]) -> bool:
    """Whether the database guarantees ``key`` unique and not null in ``table``, or will
    once the table's owed primary key is built (:func:`owed_key`)."""
    pk = [c.name for c in table.primary_key.columns]
    if sorted(pk) == sorted(key):
        return True
    if not pk:  # a table a stream created, its primary key built once its rows are in
        owed = owed_key(conn, table.fullname)
        if owed is not None and sorted(owed.key) == sorted(key):
            return True
    if any(table.c[k].nullable for k in key):
        return False
    schema, name = split_name(table.fullname)
    insp = inspect(conn)
    uniques: list[list[str | None]] = [
        list(u["column_names"]) for u in insp.get_unique_constraints(name, schema=schema)
    ]
    partial = _sqlite_partial_indexes(conn, table) if conn.dialect.name == "sqlite" else set()
    for ix in insp.get_indexes(name, schema=schema):
        if ix["unique"] and not _partial_or_expression(ix) and ix["name"] not in partial:
            uniques.append(list(ix["column_names"]))
    return any(None not in u and sorted(u) == sorted(key) for u in uniques)  # type: ignore[type-var]


def _partial_or_expression(index: Any) -> bool:
    options = index.get("dialect_options") or {}
    if any(k.endswith("_where") and v is not None for k, v in options.items()):
        return True
    return bool(index.get("expressions")) or None in index["column_names"]


def _sqlite_partial_indexes(conn: Connection, table: Table) -> set[str]:
    quoted = table.name.replace('"', '""')
    rows = conn.exec_driver_sql(f'PRAGMA index_list("{quoted}")').all()
    return {str(r[1]) for r in rows if len(r) > 4 and r[4]}


def null_keys(
    conn: Connection, table: Table, key: Sequence[str], types: dict[str, ColumnType]
) -> int:
    """Rows whose key is (partly) NULL, where the catalog does not rule it out."""
    nullable = [k for k in key if k in table.c and (k not in types or types[k].nullable)]
    if not nullable:
        return 0
    cond = or_(*[raw(table.c[k]).is_(None) for k in nullable])
    return int(conn.execute(select(func.count()).select_from(table).where(cond)).scalar() or 0)


def longest_run(conn: Connection, table: Table, key: Sequence[str]) -> int:
    """How many rows share the most frequent key value (1 for a unique key)."""
    cols = [raw(table.c[k]) for k in key]
    counts = select(func.count().label("n")).select_from(table).group_by(*cols).subquery()
    return int(conn.execute(select(func.max(counts.c.n))).scalar() or 0)


def query_key_repeats(conn: Connection, query: Any, key: Sequence[str]) -> int:
    """How many key values of a query's rows repeat (or are NULL): 0 proves it unique."""
    cols = [query.c[k] for k in key]
    repeats = select(*cols).group_by(*cols).having(func.count() > 1).subquery()
    nulls = select(func.count()).select_from(query).where(or_(*[c.is_(None) for c in cols]))
    repeated = conn.execute(select(func.count()).select_from(repeats)).scalar() or 0
    return int(repeated) + int(conn.execute(nulls).scalar() or 0)
