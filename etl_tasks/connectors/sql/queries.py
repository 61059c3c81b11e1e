"""Reading a SQL source by key ranges (keyset, never OFFSET paging).

Names are used exactly as written: SQLAlchemy quotes any name that needs it.
Chunk boundaries come from index scans (``ORDER BY key LIMIT 1 OFFSET n``
after the previous boundary), so the API never reads a table's keys.

Values are read as the database stores them: no SQLAlchemy type processing
on the way in (a SQLite column declared BOOLEAN holding ``'no'`` reads
``'no'``, a DATETIME key stored with a ``T`` keeps it), and key bounds are
bound back exactly as they were read, so every boundary sorts where its row
does. Types whose only exact form is their text (PostgreSQL intervals, JSON,
arrays, ranges, enums …) are read as that text.
"""

from __future__ import annotations

import warnings
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    MetaData,
    Select,
    Table,
    Text,
    and_,
    bindparam,
    cast,
    func,
    or_,
    select,
    true,
    tuple_,
    type_coerce,
)
from sqlalchemy.engine import Dialect, Engine
from sqlalchemy.exc import SAWarning
from sqlalchemy.sql import FromClause
from sqlalchemy.sql.elements import BindParameter
from sqlalchemy.types import Double, NullType

from etl_tasks.codec import NULL_KEYS
from etl_tasks.spec import Filter


def split_name(name: str) -> tuple[str | None, str]:
    """``schema.table`` → (schema, table); a plain name has no schema."""
    if "." in name:
        schema, _, table = name.partition(".")
        return schema, table
    return None, name


def reflect_table(engine: Engine | Connection, name: str) -> Table:
    """The table as the database describes it (raises ``NoSuchTableError``).

    Types SQLAlchemy does not know (``xml``, a PostGIS geometry) are left untyped:
    Baton reads the declared types from the catalog itself (:mod:`etl_tasks.values`).
    """
    schema, table = split_name(name)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Did not recognize type", category=SAWarning)
        return Table(table, MetaData(), schema=schema, autoload_with=engine)


def read_only(conn: Connection) -> None:
    """Make the transaction about to start on ``conn`` read-only (a stream's query)."""
    if conn.dialect.name in ("postgresql", "mysql", "mariadb"):
        conn.exec_driver_sql("SET TRANSACTION READ ONLY")
    else:
        conn.exec_driver_sql("PRAGMA query_only = 1")


def raw(col: ColumnElement[Any]) -> ColumnElement[Any]:
    """The column with no SQLAlchemy type processing, for reads and for bound values."""
    return type_coerce(col, NullType())


def key_expr(cols: Sequence[ColumnElement[Any]]) -> ColumnElement[Any]:
    return cols[0] if len(cols) == 1 else tuple_(*cols)


def key_value(values: Sequence[Any]) -> Any:
    return values[0] if len(values) == 1 else tuple_(*values)


def filters(table: FromClause, where: Sequence[Filter]) -> ColumnElement[bool]:
    """The spec's ``where`` list as one SQL condition."""
    conds: list[ColumnElement[bool]] = []
    for f in where:
        col = raw(table.c[f.column])
        match f.op:
            case "=":
                conds.append(col == f.value)
            case "!=":
                conds.append(col != f.value)
            case "<":
                conds.append(col < f.value)
            case "<=":
                conds.append(col <= f.value)
            case ">":
                conds.append(col > f.value)
            case ">=":
                conds.append(col >= f.value)
            case "in":
                conds.append(col.in_(f.value))
            case "is_null":
                conds.append(col.is_(None) if f.value in (None, True) else col.is_not(None))
    return and_(true(), *conds)


def range_condition(
    key_cols: Sequence[ColumnElement[Any]],
    lower: Sequence[Any] | None,
    upper: Sequence[Any] | None,
) -> ColumnElement[bool]:
    """``lower < key <= upper``; a missing bound is open. A key with a NULL in it is in no
    range (see :data:`etl_tasks.codec.NULL_KEYS` for the chunk that holds those rows)."""
    k = key_expr(key_cols)
    conds: list[ColumnElement[bool]] = [c.is_not(None) for c in key_cols]
    if lower is not None:
        conds.append(k > key_value(lower))
    if upper is not None:
        conds.append(k <= key_value(upper))
    return and_(true(), *conds)


Bound = list[BindParameter[Any]] | None


def named_range(width: int, lower: bool, upper: bool) -> tuple[Bound, Bound]:
    """A range's bounds, those it has, as parameters ``baton_{side}_{i}``: a range
    statement built once, for every chunk's bounds (see :func:`bound_values`)."""

    def side(name: str, present: bool) -> Bound:
        if not present:
            return None
        return [bindparam(f"baton_{name}_{i}", value=None) for i in range(width)]

    return side("lower", lower), side("upper", upper)


def bound_values(lower: Sequence[Any] | None, upper: Sequence[Any] | None) -> dict[str, Any]:
    """The values of :func:`named_range`'s parameters for these bounds."""
    values: dict[str, Any] = {}
    for side, bound in (("lower", lower), ("upper", upper)):
        for i, v in enumerate(bound or ()):
            values[f"baton_{side}_{i}"] = v
    return values


@dataclass(frozen=True)
class CompiledRange:
    """A range select compiled for one dialect: its SQL with every parameter named (a
    bound's ``baton_lower_0`` …, ``baton_limit``), and the values of those the stream's
    filters fixed (an ``in`` list rendered one parameter per value)."""

    sql: str
    fixed: Mapping[str, Any]
    order: tuple[str, ...]  # a positional dialect's parameters, in the order it takes them
    plain: bool  # no bound value goes through a type's processing: the driver takes them

    @classmethod
    def of(cls, stmt: Select[Any], dialect: Dialect) -> CompiledRange:
        compiled = stmt.compile(dialect=dialect, compile_kwargs={"render_postcompile": True})
        plain = not compiled.literal_execute_params and all(
            b.type.bind_processor(dialect) is None for b in compiled.binds.values()
        )
        order = tuple(compiled.positiontup or ()) if compiled.positional else ()
        return cls(str(compiled), dict(compiled.params), order, plain)

    def params(
        self, lower: Sequence[Any] | None, upper: Sequence[Any] | None, limit: int | None = None
    ) -> dict[str, Any]:
        values = {**self.fixed, **bound_values(lower, upper)}
        if limit is not None:
            values["baton_limit"] = limit
        return values

    def positional(self, lower: Sequence[Any] | None, upper: Sequence[Any] | None) -> list[Any]:
        values = self.params(lower, upper)
        return [values[name] for name in self.order]


class RangeQuery:
    """One source table of one stream, ready to be read chunk by chunk."""

    def __init__(
        self,
        table: FromClause,
        key: Sequence[str],
        columns: Sequence[str],
        where: Sequence[Filter],
        text_columns: Mapping[str, str | None] | None = None,
        query: bool = False,
        widened: Collection[str] = (),
    ) -> None:
        self.table = table
        self.query = query  # a stream's query: read in a read-only transaction
        self.key_cols = [raw(table.c[k]) for k in key]
        self.columns = list(columns)
        self.where = filters(table, where)
        texts = dict(text_columns or {})
        self._read = [
            self._readable(table.c[c], c in texts, texts.get(c), c in widened) for c in self.columns
        ]
        self._compiled: dict[tuple[str, bool, bool, bool], CompiledRange] = {}
        self._boundary: dict[bool, Select[Any]] = {}  # next_boundary's, by lower bound or not

    @staticmethod
    def _readable(
        col: ColumnElement[Any], as_text: bool, function: str | None, widen: bool = False
    ) -> ColumnElement[Any]:
        """The column as stored, or as its text (a cast, or ``function(col)``), or widened to
        a double (a MySQL ``FLOAT``, see :attr:`ColumnType.widened_read`)."""
        if widen:
            return type_coerce(cast(col, Double()), NullType()).label(col.key)
        if function is not None:
            return type_coerce(getattr(func, function)(col), NullType()).label(col.key)
        if as_text:
            return type_coerce(cast(col, Text), NullType()).label(col.key)
        return raw(col).label(col.key)

    def begin(self, conn: Connection) -> None:
        """Before the first read on ``conn``."""
        if self.query:
            read_only(conn)

    @property
    def read_columns(self) -> list[ColumnElement[Any]]:
        """What a read selects: ``columns``, each as stored or as its text."""
        return list(self._read)

    def select_range(self, lower: Sequence[Any] | None, upper: Sequence[Any] | None) -> Select[Any]:
        cols = self._read
        if lower is not None and lower[0] is NULL_KEYS:  # the rows no key range holds
            return select(*cols).where(self.where, or_(*[k.is_(None) for k in self.key_cols]))
        return (
            select(*cols)
            .where(self.where, range_condition(self.key_cols, lower, upper))
            .order_by(*self.key_cols)
        )

    def compiled_range(
        self, dialect: Dialect, lower: bool, upper: bool, limited: bool = False
    ) -> CompiledRange:
        """:meth:`select_range` compiled once for this shape (which bounds it has, whether
        it is limited), instead of once per chunk or per part: a hot path's statement."""
        shape = (dialect.name, lower, upper, limited)
        found = self._compiled.get(shape)
        if found is None:
            stmt = self.select_range(*named_range(len(self.key_cols), lower, upper))
            if limited:
                stmt = stmt.limit(bindparam("baton_limit", value=0))
            found = self._compiled[shape] = CompiledRange.of(stmt, dialect)
        return found

    def read_range(
        self, conn: Connection, lower: Sequence[Any] | None, upper: Sequence[Any] | None
    ) -> list[tuple[Any, ...]]:
        """Every row of the range, in key order, as tuples in ``columns`` order."""
        self.begin(conn)
        result = conn.execute(self.select_range(lower, upper))
        return [tuple(r) for r in result]

    def next_boundary(
        self, conn: Connection, lower: Sequence[Any] | None, rows: int
    ) -> tuple[Any, ...] | None:
        """The key ``rows`` rows after ``lower``, or ``None`` when fewer remain (an index scan).
        Its statement is built once per shape: planning runs it for every chunk."""
        stmt = self._boundary.get(lower is not None)
        if stmt is None:
            named = named_range(len(self.key_cols), lower is not None, False)
            stmt = self._boundary[lower is not None] = (
                select(*self.key_cols)
                .where(self.where, range_condition(self.key_cols, *named))
                .order_by(*self.key_cols)
                .offset(bindparam("baton_offset"))
                .limit(1)
            )
        row = conn.execute(stmt, {**bound_values(lower, None), "baton_offset": rows - 1}).first()
        return None if row is None else tuple(row)
