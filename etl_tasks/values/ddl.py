"""What a created target column becomes, per dialect: carried exactly, or refused by name.

Within one dialect the source's own declaration is reused (PostgreSQL →
PostgreSQL keeps arrays, enums — created in the target —, domains, ranges,
``jsonb``, ``interval``; MySQL → MySQL keeps ``unsigned``, ``ENUM``, ``SET``; SQLite →
SQLite keeps each declaration, and with it the column's affinity).
Across dialects each kind has one exact counterpart (the table in
docs/spec.md); a kind with none is refused at preflight, naming the column and
the option that would carry it (``"as": "text"`` or ``"as": "json"``).
Collations are never copied into another dialect's DDL; text keys on
MySQL/MariaDB get a binary, no-pad collation so keys differing only by case,
accent or a trailing space stay distinct.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy.types import UserDefinedType

from etl_tasks.values.types import ColumnType, Kind

Representation = Literal["text", "json"]
KEY_TEXT_CHARS = 768  # MySQL indexes at most 3072 bytes: 768 four-byte characters


class Uncarriable(Exception):
    """Raised when a column's type has no exact counterpart in the target dialect."""

    def __init__(self, reason: str, option: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.option = option


class DeclaredType(UserDefinedType[Any]):
    """A column type given as the target database's own SQL text."""

    cache_ok = True

    def __init__(self, sql: str) -> None:
        self.sql = sql

    def get_col_spec(self, **_: Any) -> str:
        return self.sql


@dataclass(frozen=True)
class Carried:
    sql: str  # the target column's type
    setup: tuple[str, ...] = field(default_factory=tuple)  # run first (enum types, domains)


@dataclass(frozen=True)
class TargetColumn:
    """A column of a target table Baton creates."""

    name: str
    carried: Carried
    nullable: bool


@dataclass(frozen=True)
class Target:
    dialect: str  # postgresql, mysql, sqlite
    mariadb: bool = False
    table: str = ""  # the target table (schema.table), to name the enum types made for it


def carry(
    src: ColumnType,
    to: Target,
    column: str,
    *,
    key: bool,
    rep: Representation | None,
    key_columns: int = 1,
) -> Carried:
    """The target column type for ``src``; raises :class:`Uncarriable`.

    ``key_columns`` is how many columns the key has: on MySQL/MariaDB they share the
    3072 bytes an index may hold.
    """
    if rep is not None:
        return _represented(src, to, rep)
    if src.dialect in ("mysql", "mariadb") and any("?" in label for label in src.labels):
        # MariaDB's catalog spells ENUM and SET labels in 3-byte UTF-8: '😀' reads as '?'
        raise Uncarriable(
            f"{src.sql} ({src.dialect}): a '?' in a label may stand for a character beyond "
            "3 bytes, which the catalog does not show, so the labels cannot be recreated exactly",
            '"as": "text"',
        )
    same = src.dialect == to.dialect or {src.dialect, to.dialect} == {"mysql", "mariadb"}
    if same and to.dialect == "postgresql":
        return _pg_native(src)
    if same and to.dialect in ("mysql", "mariadb") and not (key and src.kind == Kind.TEXT):
        if src.kind in (Kind.ENUM, Kind.SET) and src.collation:  # labels 'a' and 'A' stay apart
            charset = src.collation.split("_")[0]
            return Carried(f"{src.sql} CHARACTER SET {charset} COLLATE {src.collation}")
        return Carried(src.sql)
    if same and to.dialect == "sqlite":  # the same affinity stores each value as the source did
        return Carried(src.sql)
    return _CROSS[_family(to.dialect)](src, to, column, key_columns if key else 0)


def _family(dialect: str) -> str:
    return "mysql" if dialect in ("mysql", "mariadb") else dialect


def _represented(src: ColumnType, to: Target, rep: Representation) -> Carried:
    if rep == "json":
        return Carried(
            {"postgresql": "json", "mysql": "JSON", "sqlite": "TEXT"}[_family(to.dialect)]
        )
    return Carried(
        {"postgresql": "text", "mysql": "LONGTEXT", "sqlite": "TEXT"}[_family(to.dialect)]
    )


def _pg_native(src: ColumnType) -> Carried:
    setup: tuple[str, ...] = ()
    if src.kind == Kind.ENUM and src.user_type:
        setup = (_pg_enum(src.user_type, src.labels),)
    elif src.user_type and src.base:  # a domain: its base type and its constraints
        setup = (_pg_domain(src.user_type, src.base),)
    return Carried(src.sql, setup)


def _quote_pg(name: str) -> str:
    return ".".join('"' + part.replace('"', '""') + '"' for part in name.split("."))


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _pg_enum(name: str, labels: tuple[str, ...]) -> str:
    values = ", ".join(_literal(label) for label in labels)
    return (
        "DO $$ BEGIN CREATE TYPE " + _quote_pg(name) + f" AS ENUM ({values}); "
        "EXCEPTION WHEN duplicate_object THEN NULL; END $$"
    )


def _pg_domain(name: str, definition: str) -> str:
    return (
        "DO $$ BEGIN CREATE DOMAIN " + _quote_pg(name) + " AS " + definition + "; "
        "EXCEPTION WHEN duplicate_object THEN NULL; END $$"
    )


def _pg_integer(src: ColumnType) -> str:
    bits = (src.precision or 64) + (1 if src.unsigned else 0)
    if bits <= 16:
        return "smallint"
    if bits <= 32:
        return "integer"
    return "bigint" if bits <= 64 else "numeric(20,0)"


def _decimal(src: ColumnType, name: str) -> str:
    if src.precision is None:
        return name
    return f"{name}({src.precision},{src.scale or 0})"


def _to_postgresql(src: ColumnType, to: Target, column: str, key: int) -> Carried:
    kind = src.kind
    simple = {
        Kind.BOOLEAN: "boolean",
        Kind.BINARY: "bytea",
        Kind.DATE: "date",
        Kind.INTERVAL: "interval",
        Kind.JSON: "json",
        Kind.UUID: "uuid",
        Kind.UNTYPED: "text",
        Kind.TIMESTAMPTZ: "timestamp with time zone",
    }
    if kind in simple:
        return Carried(simple[kind])
    if kind == Kind.INTEGER:
        return Carried(_pg_integer(src))
    if kind == Kind.DECIMAL:
        return Carried(_decimal(src, "numeric"))
    if kind == Kind.FLOAT:
        return Carried("real" if src.precision == 24 else "double precision")
    if kind == Kind.TEXT:
        size = f"({src.length})" if src.length else ""
        return Carried(
            ("character" if src.fixed else "character varying") + size if size else "text"
        )
    if kind in (Kind.TIME, Kind.TIMESTAMP):
        name = "time" if kind == Kind.TIME else "timestamp"
        return Carried(f"{name}({src.scale})" if src.scale is not None else name)
    if kind == Kind.ENUM:
        schema, _, table = to.table.rpartition(".")
        name = (f"{schema}." if schema else "") + f"{table}_{column}_enum"
        return Carried(_quote_pg(name), (_pg_enum(name, src.labels),))
    raise _refusal(src, "PostgreSQL")


def _binary_collation(to: Target) -> str:
    """Compares code points, and no trailing spaces are padding: 'x' and 'x ' differ."""
    return "utf8mb4_nopad_bin" if to.mariadb else "utf8mb4_0900_bin"


def _mysql_text(src: ColumnType, to: Target, key: int) -> str:
    if key:
        collation = _binary_collation(to)
        share = KEY_TEXT_CHARS // key
        size = min(src.length or share, share)
        return f"VARCHAR({size}) CHARACTER SET utf8mb4 COLLATE {collation}"
    if src.length and src.length <= 16383:
        return f"{'CHAR' if src.fixed and src.length <= 255 else 'VARCHAR'}({src.length})"
    return "LONGTEXT"


def _to_mysql(src: ColumnType, to: Target, column: str, key: int) -> Carried:
    kind = src.kind
    if kind == Kind.INTEGER:
        bits = (src.precision or 64) + (1 if src.unsigned else 0)
        names = ((8, "TINYINT"), (16, "SMALLINT"), (24, "MEDIUMINT"), (32, "INT"), (64, "BIGINT"))
        return Carried(next((n for b, n in names if bits <= b), "DECIMAL(20,0)"))
    if kind == Kind.DECIMAL:
        return Carried(_decimal(src, "DECIMAL") if src.precision else "DECIMAL(65,30)")
    if kind == Kind.TEXT or kind == Kind.UNTYPED:
        return Carried(_mysql_text(src, to, key))
    if kind in (Kind.TIME, Kind.TIMESTAMP, Kind.TIMESTAMPTZ):
        name = "TIME" if kind == Kind.TIME else "DATETIME"
        return Carried(f"{name}({6 if src.scale is None else min(src.scale, 6)})")
    if kind == Kind.ENUM:  # binary: labels differing by case or accent are distinct
        labels = ", ".join(_literal(label) for label in src.labels)
        return Carried(f"ENUM({labels}) CHARACTER SET utf8mb4 COLLATE {_binary_collation(to)}")
    simple = {
        Kind.FLOAT: "FLOAT" if src.precision == 24 else "DOUBLE",
        Kind.BOOLEAN: "BOOLEAN",
        Kind.BINARY: f"VARBINARY({3072 // key})" if key else "LONGBLOB",
        Kind.DATE: "DATE",
        Kind.JSON: "JSON",
        Kind.UUID: "CHAR(36)",
    }
    if kind in simple:
        return Carried(simple[kind])
    raise _refusal(src, "MySQL/MariaDB")


def _to_sqlite(src: ColumnType, to: Target, column: str, key: int) -> Carried:
    simple = {
        Kind.INTEGER: "INTEGER",
        Kind.DECIMAL: "TEXT",  # NUMERIC affinity would round what REAL cannot hold
        Kind.FLOAT: "REAL",
        Kind.BOOLEAN: "BOOLEAN",
        Kind.TEXT: "TEXT",
        Kind.BINARY: "BLOB",
        Kind.DATE: "DATE",
        Kind.TIME: "TIME",
        Kind.TIMESTAMP: "DATETIME",
        Kind.TIMESTAMPTZ: "TEXT",
        Kind.INTERVAL: "TEXT",
        Kind.JSON: "TEXT",
        Kind.UUID: "TEXT",
        Kind.ENUM: "TEXT",
        Kind.UNTYPED: "",
    }
    if src.kind in simple:
        return Carried(simple[src.kind])
    raise _refusal(src, "SQLite")


def _refusal(src: ColumnType, where: str) -> Uncarriable:
    option = {
        Kind.ARRAY: '"as": "json" (or "text")',
        Kind.SET: '"as": "json" (or "text")',
        Kind.INTERVAL: '"as": "text"',
    }.get(src.kind, '"as": "text"')
    return Uncarriable(f"{src.sql} ({src.dialect}) has no exact counterpart in {where}", option)


_CROSS = {"postgresql": _to_postgresql, "mysql": _to_mysql, "sqlite": _to_sqlite}
