"""What a database holds, as a spec needs to know it: base tables, keys and references.

Views, SQLite's own tables, Baton's ``baton_*`` tables and PostgreSQL partitions
are left out (a partitioned table's parent is the table to move; a partition's
foreign keys are its parent's).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

from sqlalchemy import Connection, Engine, inspect, text
from sqlalchemy import exc as sa_exc

from etl_tasks.boundary.names import is_reserved_table

_PG_TABLES = text("""
    SELECT c.relname FROM pg_catalog.pg_class c
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = pg_catalog.current_schema() AND c.relkind IN ('r', 'p')
      AND NOT c.relispartition
    ORDER BY c.relname
""")
# A partition's foreign keys belong to its partitioned table.
_PG_PARTITION_REFERENCES = text("""
    SELECT parent.relname, ref.relname
    FROM pg_catalog.pg_constraint con
    JOIN pg_catalog.pg_class child ON child.oid = con.conrelid
    JOIN pg_catalog.pg_namespace n ON n.oid = child.relnamespace
    JOIN pg_catalog.pg_class ref ON ref.oid = con.confrelid
    JOIN pg_catalog.pg_inherits i ON i.inhrelid = child.oid
    JOIN pg_catalog.pg_class parent ON parent.oid = i.inhparent
    WHERE con.contype = 'f' AND n.nspname = pg_catalog.current_schema()
""")
_PG_ESTIMATES = text("""
    SELECT c.relname, c.reltuples::bigint FROM pg_catalog.pg_class c
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = pg_catalog.current_schema()
""")


@dataclass(frozen=True)
class Reference:
    """A foreign key: ``table`` refers to ``referred`` through ``columns``."""

    table: str
    referred: str
    columns: tuple[str, ...]
    nullable: bool  # every referring column may be NULL: the reference can wait


@dataclass
class TableInfo:
    name: str
    key: list[str] = field(default_factory=list)
    unique: bool = True  # the key is a primary key or a unique index on NOT NULL columns
    rows: int | None = None  # an estimate, for the draft's comments


@dataclass
class Schema:
    tables: dict[str, TableInfo]
    references: list[Reference]


def read_schema(engine: Engine, *, estimates: bool = True) -> Schema:
    """The database's base tables with their keys, and the references between them (and, with
    ``estimates``, how many rows each holds)."""
    with engine.connect() as conn, warnings.catch_warnings():
        warnings.simplefilter("ignore", sa_exc.SAWarning)  # types SQLAlchemy does not know
        names = _table_names(conn)
        insp = inspect(conn)
        tables = {name: _table_info(insp, name) for name in names}
        refs = [ref for name in names for ref in _references(insp, name, tables)]
        if conn.dialect.name == "postgresql":
            refs += _partition_references(conn, tables, refs)
        for name, rows in (_estimates(conn, names) if estimates else {}).items():
            tables[name].rows = rows
    return Schema(tables, refs)


def _table_names(conn: Connection) -> list[str]:
    if conn.dialect.name == "postgresql":
        names = [str(r[0]) for r in conn.execute(_PG_TABLES)]
    else:
        names = sorted(inspect(conn).get_table_names())
    return [n for n in names if not n.lower().startswith("sqlite_") and not is_reserved_table(n)]


def _table_info(insp: object, name: str) -> TableInfo:
    pk = list(insp.get_pk_constraint(name)["constrained_columns"])  # type: ignore[attr-defined]
    if pk:
        return TableInfo(name, pk)
    columns = insp.get_columns(name)  # type: ignore[attr-defined]
    not_null = {c["name"] for c in columns if not c["nullable"]}
    for index in insp.get_indexes(name):  # type: ignore[attr-defined]
        cols = [c for c in index["column_names"] if c]
        if index["unique"] and cols and set(cols) <= not_null and not index.get("dialect_options"):
            return TableInfo(name, cols)
    first = next((c["name"] for c in columns if c["name"] in not_null), None)
    first = first or (columns[0]["name"] if columns else None)
    return TableInfo(name, [first] if first else [], unique=False)


def _references(insp: object, name: str, tables: dict[str, TableInfo]) -> list[Reference]:
    columns = {c["name"]: c for c in insp.get_columns(name)}  # type: ignore[attr-defined]
    out: list[Reference] = []
    for fk in insp.get_foreign_keys(name):  # type: ignore[attr-defined]
        referred = fk["referred_table"]
        if referred not in tables:
            continue
        cols = tuple(fk["constrained_columns"])
        nullable = all(columns.get(c, {}).get("nullable", True) for c in cols)
        out.append(Reference(name, referred, cols, nullable))
    return out


def _partition_references(
    conn: Connection, tables: dict[str, TableInfo], known: list[Reference]
) -> list[Reference]:
    have = {(r.table, r.referred) for r in known}
    out: list[Reference] = []
    for parent, referred in conn.execute(_PG_PARTITION_REFERENCES).all():
        if parent in tables and referred in tables and (parent, referred) not in have:
            have.add((parent, referred))
            out.append(Reference(parent, referred, (), nullable=False))
    return out


def _estimates(conn: Connection, names: list[str]) -> dict[str, int]:
    """Row counts, cheaply: PostgreSQL's statistics; elsewhere a count (a draft's comment)."""
    if conn.dialect.name == "postgresql":
        rows: dict[str, int] = {str(n): int(r) for n, r in conn.execute(_PG_ESTIMATES).all()}
        return {n: max(0, int(rows.get(n, 0))) for n in names}
    quote = conn.dialect.identifier_preparer.quote
    out: dict[str, int] = {}
    for name in names:
        try:
            out[name] = int(
                conn.exec_driver_sql(f"SELECT COUNT(*) FROM {quote(name)}").scalar() or 0
            )
        except sa_exc.SQLAlchemyError:
            continue
    return out
