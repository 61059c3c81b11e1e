"""Column types as each database declares them, read from its own catalog.

SQLAlchemy's reflected types are a lossy summary (an unknown PostgreSQL type
becomes ``NullType``, a MySQL JSON column ``LONGTEXT``, a SQLite declared type
a guess from its affinity), so the exact declaration comes from the catalog:
``format_type`` on PostgreSQL, ``COLUMN_TYPE`` on MySQL/MariaDB, the declared
type on SQLite. :class:`ColumnType` keeps both the exact text (to recreate the
column within one dialect) and a :class:`Kind` (to carry it to another).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum


class Kind(StrEnum):
    INTEGER = "integer"
    DECIMAL = "decimal"
    FLOAT = "float"
    BOOLEAN = "boolean"
    TEXT = "text"
    BINARY = "binary"
    DATE = "date"
    TIME = "time"
    TIMESTAMP = "timestamp"  # without time zone
    TIMESTAMPTZ = "timestamptz"  # an instant
    INTERVAL = "interval"
    JSON = "json"
    UUID = "uuid"
    ENUM = "enum"
    SET = "set"  # MySQL's SET
    ARRAY = "array"  # PostgreSQL arrays
    NATIVE = "native"  # a type only its own dialect has (range, tsvector, inet, money, …)
    UNTYPED = "untyped"  # a SQLite column declared with no type: any storage class


@dataclass(frozen=True)
class ColumnType:
    """One column's type, exactly as its database declares it."""

    dialect: str  # postgresql, mysql, mariadb, sqlite
    kind: Kind
    sql: str  # the declaration, e.g. "numeric(10,2)", "int(10) unsigned", "zz_mood"
    nullable: bool = True
    precision: int | None = None  # digits (decimal), bits (integer, float: 24 or 53)
    scale: int | None = None
    length: int | None = None  # characters (text) or bytes (binary)
    unsigned: bool = False
    fixed: bool = False  # CHAR(n), not VARCHAR(n)
    collation: str | None = None
    labels: tuple[str, ...] = ()  # enum and set labels, in order
    element: str | None = None  # an array's element type, as declared
    user_type: str | None = None  # PostgreSQL: an enum or domain to create in the target
    base: str | None = None  # a PostgreSQL domain's definition: base type and constraints
    text_function: str | None = None  # SQL function giving its standard text (ST_AsText)
    jsonb: bool = False

    def with_(self, **changes: object) -> ColumnType:
        return replace(self, **changes)  # type: ignore[arg-type]

    @property
    def widened_read(self) -> bool:
        """Read widened to a double: a MySQL/MariaDB ``FLOAT``, which the server writes out
        with 6 significant digits (``0.333333`` for the stored ``0.33333334``), while
        ``CAST(… AS DOUBLE)`` gives the stored single-precision value exactly."""
        return (
            self.dialect in ("mysql", "mariadb")
            and self.kind == Kind.FLOAT
            and (self.precision == 24)
        )

    @property
    def exact_text(self) -> bool:
        """Read as the database's own text: the only lossless form for these kinds
        (PostgreSQL's interval months, JSON's exact text, arrays, ranges …)."""
        if self.dialect != "postgresql":
            return False
        return self.kind in (Kind.INTERVAL, Kind.JSON, Kind.ARRAY, Kind.NATIVE, Kind.ENUM)
