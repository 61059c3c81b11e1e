"""Reading each column's declared type from the database's own catalog."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, text

from etl_tasks.values.types import ColumnType, Kind

Columns = dict[str, ColumnType]

_PG_COLUMNS = text("""
    SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod), NOT a.attnotnull,
           t.typname, t.typtype, t.typcategory, bt.typname, et.typname, tn.nspname,
           CASE WHEN t.typtype = 'd' THEN pg_catalog.format_type(t.typbasetype, t.typtypmod) END,
           a.atttypid,
           (SELECT string_agg(pg_catalog.pg_get_constraintdef(k.oid), ' ' ORDER BY k.conname)
            FROM pg_catalog.pg_constraint k WHERE k.contypid = t.oid)
    FROM pg_catalog.pg_attribute a
    JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
    JOIN pg_catalog.pg_namespace tn ON tn.oid = t.typnamespace
    LEFT JOIN pg_catalog.pg_type bt ON bt.oid = t.typbasetype
    LEFT JOIN pg_catalog.pg_type et ON et.oid = t.typelem AND t.typcategory = 'A'
    WHERE c.relname = :name AND n.nspname = COALESCE(:schema, pg_catalog.current_schema())
      AND a.attnum > 0 AND NOT a.attisdropped
    ORDER BY a.attnum
""")
_PG_ENUM_LABELS = text(
    "SELECT enumlabel FROM pg_catalog.pg_enum WHERE enumtypid = :oid ORDER BY enumsortorder"
)
_PG_KINDS: dict[str, tuple[Kind, int | None]] = {
    "int2": (Kind.INTEGER, 16),
    "int4": (Kind.INTEGER, 32),
    "int8": (Kind.INTEGER, 64),
    "numeric": (Kind.DECIMAL, None),
    "float4": (Kind.FLOAT, 24),
    "float8": (Kind.FLOAT, 53),
    "bool": (Kind.BOOLEAN, None),
    "text": (Kind.TEXT, None),
    "varchar": (Kind.TEXT, None),
    "bpchar": (Kind.TEXT, None),
    "citext": (Kind.TEXT, None),
    "name": (Kind.TEXT, None),
    "bytea": (Kind.BINARY, None),
    "date": (Kind.DATE, None),
    "time": (Kind.TIME, None),
    "timestamp": (Kind.TIMESTAMP, None),
    "timestamptz": (Kind.TIMESTAMPTZ, None),
    "interval": (Kind.INTERVAL, None),
    "json": (Kind.JSON, None),
    "jsonb": (Kind.JSON, None),
    "uuid": (Kind.UUID, None),
}
_NUMBERS = re.compile(r"\((\d+)(?:\s*,\s*(\d+))?\)")


def _args(sql: str) -> tuple[int | None, int | None]:
    m = _NUMBERS.search(sql)
    if not m:
        return None, None
    return int(m.group(1)), (int(m.group(2)) if m.group(2) is not None else None)


def describe_postgresql(conn: Connection, schema: str | None, name: str) -> Columns:
    rows = conn.execute(_PG_COLUMNS, {"name": name, "schema": schema}).all()
    return {row[0]: _pg_column(conn, tuple(row)) for row in rows}


def _pg_column(conn: Connection, row: tuple[Any, ...]) -> ColumnType:
    _, sql, nullable, typname, typtype, category, base, elem, typschema, base_sql, oid, checks = row
    user_type = f"{typschema}.{typname}" if typtype in ("e", "d") else None
    if typtype == "e":
        labels = tuple(conn.execute(_PG_ENUM_LABELS, {"oid": oid}).scalars())
        return ColumnType(
            "postgresql", Kind.ENUM, sql, nullable, labels=labels, user_type=user_type
        )
    if category == "A":
        return ColumnType("postgresql", Kind.ARRAY, sql, nullable, element=elem)
    domain = typtype == "d"
    kind, bits = _PG_KINDS.get(base if domain else typname, (Kind.NATIVE, None))
    first, second = _args(base_sql if domain else sql)
    definition = f"{base_sql} {checks or ''}".strip() if domain else None
    return _sized("postgresql", kind, sql, nullable, bits, first, second).with_(
        fixed=typname == "bpchar", jsonb=typname == "jsonb", user_type=user_type, base=definition
    )


def _sized(
    dialect: str,
    kind: Kind,
    sql: str,
    nullable: bool,
    bits: int | None,
    first: int | None,
    second: int | None,
) -> ColumnType:
    if kind == Kind.DECIMAL:
        return ColumnType(dialect, kind, sql, nullable, precision=first, scale=second)
    if kind in (Kind.TEXT, Kind.BINARY):
        return ColumnType(dialect, kind, sql, nullable, length=first)
    if kind in (Kind.TIME, Kind.TIMESTAMP, Kind.TIMESTAMPTZ):
        return ColumnType(dialect, kind, sql, nullable, scale=first)
    return ColumnType(dialect, kind, sql, nullable, precision=bits)


_MYSQL_COLUMNS = text("""
    SELECT column_name, data_type, column_type, is_nullable = 'YES', collation_name,
           numeric_precision, numeric_scale, character_maximum_length, datetime_precision
    FROM information_schema.columns
    WHERE table_schema = COALESCE(:schema, DATABASE()) AND table_name = :name
    ORDER BY ordinal_position
""")
_MYSQL_JSON_CHECKS = text("""
    SELECT check_clause FROM information_schema.check_constraints
    WHERE constraint_schema = COALESCE(:schema, DATABASE()) AND table_name = :name
""")
_MYSQL_INT_BITS = {"tinyint": 8, "smallint": 16, "mediumint": 24, "int": 32, "bigint": 64}
_MYSQL_KINDS: dict[str, Kind] = {
    **{k: Kind.INTEGER for k in _MYSQL_INT_BITS},
    "year": Kind.INTEGER,
    "decimal": Kind.DECIMAL,
    "float": Kind.FLOAT,
    "double": Kind.FLOAT,
    **{k: Kind.TEXT for k in ("char", "varchar", "tinytext", "text", "mediumtext", "longtext")},
    **{
        k: Kind.BINARY
        for k in ("binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob")
    },
    "date": Kind.DATE,
    "time": Kind.TIME,
    "datetime": Kind.TIMESTAMP,
    "timestamp": Kind.TIMESTAMPTZ,  # an instant: read in UTC (the session's time zone)
    "json": Kind.JSON,
    "enum": Kind.ENUM,
    "set": Kind.SET,
}
_LABEL = re.compile(r"'((?:[^']|'')*)'")
_MYSQL_SPATIAL = {
    "geometry",
    "point",
    "linestring",
    "polygon",
    "multipoint",
    "multilinestring",
    "multipolygon",
    "geometrycollection",
}


def describe_mysql(conn: Connection, schema: str | None, name: str) -> Columns:
    dialect = conn.dialect.name
    checks = " ".join(
        str(c) for c in conn.execute(_MYSQL_JSON_CHECKS, {"schema": schema, "name": name}).scalars()
    )
    out: Columns = {}
    params = {"schema": schema, "name": name}
    for row in conn.execute(_MYSQL_COLUMNS, params).all():
        col, data_type, sql, nullable, collation, precision, scale, length, fsp = row
        kind = _MYSQL_KINDS.get(str(data_type), Kind.NATIVE)
        if kind == Kind.TEXT and re.search(rf"json_valid\(`?{re.escape(col)}`?\)", checks):
            kind = Kind.JSON
        out[col] = _mysql_column(
            dialect,
            kind,
            str(data_type),
            str(sql),
            bool(nullable),
            collation,
            precision,
            scale,
            length,
            fsp,
        )
    return out


def _mysql_column(
    dialect: str,
    kind: Kind,
    data_type: str,
    sql: str,
    nullable: bool,
    collation: str | None,
    precision: Any,
    scale: Any,
    length: Any,
    fsp: Any,
) -> ColumnType:
    unsigned = "unsigned" in sql
    if kind == Kind.INTEGER:
        bits = _MYSQL_INT_BITS.get(data_type, 16)
        return ColumnType(dialect, kind, sql, nullable, precision=bits, unsigned=unsigned)
    if kind == Kind.DECIMAL:
        return ColumnType(
            dialect, kind, sql, nullable, precision=precision, scale=scale, unsigned=unsigned
        )
    if kind == Kind.FLOAT:
        return ColumnType(
            dialect, kind, sql, nullable, precision=24 if data_type == "float" else 53
        )
    if kind in (Kind.ENUM, Kind.SET):
        labels = tuple(m.replace("''", "'") for m in _LABEL.findall(sql))
        return ColumnType(dialect, kind, sql, nullable, labels=labels, collation=collation)
    if kind in (Kind.TEXT, Kind.BINARY):
        size = int(length) if length is not None and int(length) < 65536 else None
        fixed = data_type in ("char", "binary")
        return ColumnType(
            dialect, kind, sql, nullable, length=size, fixed=fixed, collation=collation
        )
    if kind in (Kind.TIME, Kind.TIMESTAMP, Kind.TIMESTAMPTZ):
        return ColumnType(dialect, kind, sql, nullable, scale=int(fsp or 0))
    spatial = "ST_AsText" if data_type in _MYSQL_SPATIAL else None
    return ColumnType(dialect, kind, sql, nullable, text_function=spatial)


_SQLITE_RULES: list[tuple[str, Kind]] = [
    ("INT", Kind.INTEGER),
    ("BOOL", Kind.BOOLEAN),
    ("TIMESTAMP", Kind.TIMESTAMP),
    ("DATETIME", Kind.TIMESTAMP),
    ("DATE", Kind.DATE),
    ("TIME", Kind.TIME),
    ("DEC", Kind.DECIMAL),
    ("NUMERIC", Kind.DECIMAL),
    ("MONEY", Kind.DECIMAL),
    ("REAL", Kind.FLOAT),
    ("FLOA", Kind.FLOAT),
    ("DOUB", Kind.FLOAT),
    ("JSON", Kind.JSON),
    ("CHAR", Kind.TEXT),
    ("CLOB", Kind.TEXT),
    ("TEXT", Kind.TEXT),
    ("BLOB", Kind.BINARY),
    ("UUID", Kind.TEXT),
]


def sqlite_kind(declared: str) -> Kind:
    """What a SQLite declaration means (its values may still be of any storage class)."""
    upper = declared.upper()
    if not upper.strip():
        return Kind.UNTYPED
    for needle, kind in _SQLITE_RULES:
        if needle in upper:
            return kind
    return Kind.DECIMAL  # SQLite's NUMERIC affinity


def describe_sqlite(conn: Connection, schema: str | None, name: str) -> Columns:
    prefix = f'"{schema}".' if schema else ""
    quoted = name.replace('"', '""')
    out: Columns = {}
    for row in conn.exec_driver_sql(f'PRAGMA {prefix}table_info("{quoted}")').all():
        _, col, declared, notnull, _, _ = row
        first, second = _args(str(declared or ""))
        kind = sqlite_kind(str(declared or ""))
        nullable = not notnull
        bits = 64 if kind == Kind.INTEGER else None
        out[col] = _sized("sqlite", kind, str(declared or ""), nullable, bits, first, second)
    return out


_DESCRIBERS: dict[str, Callable[[Connection, str | None, str], Columns]] = {
    "postgresql": describe_postgresql,
    "mysql": describe_mysql,
    "mariadb": describe_mysql,
    "sqlite": describe_sqlite,
}


def describe(conn: Connection, table_name: str) -> Columns:
    """Every column of ``table_name`` (``schema.table`` or ``table``), by its declared type."""
    schema, _, name = table_name.rpartition(".")
    return _DESCRIBERS[conn.dialect.name](conn, schema or None, name)


# --- a query's columns: what the driver says of a result -------------------------------------

_PG_TYPES = text(
    "SELECT oid, typname, pg_catalog.format_type(oid, NULL), typtype, typcategory "
    "FROM pg_catalog.pg_type WHERE oid = ANY(:oids)"
)
_MYSQL_CODES: dict[int, tuple[Kind, int | None]] = {
    0: (Kind.DECIMAL, None), 246: (Kind.DECIMAL, None), 1: (Kind.INTEGER, 8),
    2: (Kind.INTEGER, 16), 9: (Kind.INTEGER, 24), 3: (Kind.INTEGER, 32), 8: (Kind.INTEGER, 64),
    13: (Kind.INTEGER, 16), 4: (Kind.FLOAT, 24), 5: (Kind.FLOAT, 53), 10: (Kind.DATE, None),
    14: (Kind.DATE, None), 11: (Kind.TIME, None), 12: (Kind.TIMESTAMP, None),
    7: (Kind.TIMESTAMPTZ, None), 245: (Kind.JSON, None), 247: (Kind.TEXT, None),
    248: (Kind.SET, None), 15: (Kind.TEXT, None), 253: (Kind.TEXT, None),
    254: (Kind.TEXT, None), 249: (Kind.TEXT, None), 250: (Kind.TEXT, None),
    251: (Kind.TEXT, None), 252: (Kind.TEXT, None),
}  # fmt: skip
_MYSQL_BINARY_CHARSET = 63


def query_types(conn: Connection, names: list[str], cursor: Any) -> Columns:
    """Each column of a query's result, as well as the driver can say (no table declares
    them): PostgreSQL's type by OID, MySQL's by field type, SQLite's not at all."""
    dialect = conn.dialect.name
    if dialect == "postgresql":
        return _pg_query_types(conn, names, cursor.description)
    if dialect in ("mysql", "mariadb"):
        fields = getattr(getattr(cursor, "_result", None), "fields", None)
        return _mysql_query_types(conn, names, cursor.description, fields)
    return {n: ColumnType("sqlite", Kind.UNTYPED, "") for n in names}


def _pg_query_types(conn: Connection, names: list[str], description: Any) -> Columns:
    oids = [int(d[1]) for d in description]
    known = {int(r[0]): r[1:] for r in conn.execute(_PG_TYPES, {"oids": oids}).all()}
    out: Columns = {}
    for name, oid in zip(names, oids, strict=True):
        typname, sql, typtype, category = known.get(oid, ("", "text", "b", "S"))
        if category == "A":
            out[name] = ColumnType("postgresql", Kind.ARRAY, sql)
        elif typtype == "e":
            labels = tuple(conn.execute(_PG_ENUM_LABELS, {"oid": oid}).scalars())
            out[name] = ColumnType("postgresql", Kind.ENUM, sql, labels=labels)
        else:
            kind, bits = _PG_KINDS.get(typname, (Kind.NATIVE, None))
            out[name] = ColumnType(
                "postgresql", kind, sql, precision=bits, jsonb=typname == "jsonb"
            )
    return out


def _mysql_query_types(
    conn: Connection, names: list[str], description: Any, fields: Any
) -> Columns:
    out: Columns = {}
    dialect = conn.dialect.name
    for i, (name, entry) in enumerate(zip(names, description, strict=True)):
        code = int(entry[1])
        kind, bits = _MYSQL_CODES.get(code, (Kind.NATIVE, None))
        charset = getattr(fields[i], "charsetnr", None) if fields else None
        if kind == Kind.TEXT and charset == _MYSQL_BINARY_CHARSET:
            kind = Kind.BINARY
        if kind == Kind.DECIMAL:
            out[name] = ColumnType(dialect, kind, "decimal", precision=entry[4], scale=entry[5])
        else:
            out[name] = ColumnType(dialect, kind, kind.value, precision=bits)
    return out
