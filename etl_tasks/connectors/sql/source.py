"""A SQL table (or an admin's query) as a :class:`~etl_tasks.connectors.base.Source`.

Keyset reads only: a range is ``lower < key <= upper`` in the source's own key
order, boundaries come from index scans, and every bound is a value the source
returned, bound back untouched (see :mod:`etl_tasks.connectors.sql.queries`).
"""

from __future__ import annotations

import contextlib
import decimal
import numbers
from collections.abc import Callable, Sequence
from typing import Any, cast

from sqlalchemy import Connection, Engine, func, select, text
from sqlalchemy import exc as sa_exc

from etl_tasks.budget import SUB_BATCH_ROWS
from etl_tasks.codec import NULL_KEYS
from etl_tasks.connectors.base import Batch, Key, Pace, Range, Shape
from etl_tasks.connectors.sql import pg_native
from etl_tasks.connectors.sql.errors import as_baton_errors
from etl_tasks.connectors.sql.queries import RangeQuery, key_expr, key_value
from etl_tasks.values.types import ColumnType

#: A count on SQLite or MariaDB reads at most this many rows (it only feeds progress).
COUNT_CAP = 1_000_000


class SqlSource:
    """One stream's source table, read chunk by chunk in key order."""

    kind = "sql"

    def __init__(
        self,
        engine: Engine,
        query: RangeQuery,
        key: Sequence[str],
        types: dict[str, ColumnType],
        native: Callable[[], bool] = lambda: False,
    ) -> None:
        self.engine = engine
        self.query = query
        self.key = list(key)
        self.types = types
        # Whether this stream's chunks travel as COPY text (asked once per read: the
        # runtime decides it once, and it needs the target, which a plan does not)
        self.native = native
        self._oids: list[int] | None = None
        self._part_rows = pg_native.PartRows()  # shared by this process's threads

    @property
    def key_width(self) -> int:
        return len(self.key)

    def describe(self) -> Shape:
        return Shape(list(self.query.columns), self.key, dict(self.types))

    def estimate_rows(self) -> int | None:
        """PostgreSQL's planner statistics; elsewhere a count that stops at ``COUNT_CAP``,
        carried on by the key's spread when it stopped there."""
        with as_baton_errors("source unavailable", "cannot estimate the source's rows"):
            with self.engine.connect() as conn:
                self.query.begin(conn)
                return _estimate(conn, self.query)

    def boundaries(self, after: Key | None, rows: int, count: int) -> tuple[list[Range], bool]:
        ranges: list[Range] = []
        lower = after
        with as_baton_errors("source unavailable", "cannot plan the stream"):
            with self.engine.connect() as conn:
                self.query.begin(conn)
                for _ in range(count):
                    upper = self.query.next_boundary(conn, lower, rows)
                    ranges.append((lower, upper))
                    if upper is None:
                        return ranges, True
                    lower = upper
        return ranges, False

    def read_range(
        self, lower: Key | None, upper: Key | None, pace: Pace
    ) -> tuple[Batch, Key | None]:
        with as_baton_errors("source unavailable", "source refused the read"):
            if (lower is None or lower[0] is not NULL_KEYS) and self.native():
                found = self._read_native(lower, upper, pace)
                if found is not None:
                    return found
            rows, cut = self._read(lower, upper, pace)
        return Batch(list(self.query.columns), rows), cut

    def _read_native(
        self, lower: Key | None, upper: Key | None, pace: Pace
    ) -> tuple[Batch, Key | None] | None:
        """The range as COPY text (a pass-through stream), or ``None`` when this connection
        does not speak UTF-8 (the parsed path reads it then)."""
        with self.engine.connect() as conn:
            dbapi_conn = conn.connection.dbapi_connection
            if not pg_native.speaks_utf8(dbapi_conn):
                return None
            self.query.begin(conn)
            if self._oids is None:
                self._oids = pg_native.column_oids(conn, self.query.select_range(None, None))
            casters = pg_native.casters_for(dbapi_conn, self._oids[: self.key_width])
            parts, cut = pg_native.read_parts(
                conn, self.query, (lower, upper), pace, self.key_width, casters, self._part_rows
            )
        native = pg_native.native(parts, self._oids, self.key_width)
        return Batch(list(self.query.columns), [], native=native), cut

    def _read(
        self, lower: Key | None, upper: Key | None, pace: Pace
    ) -> tuple[list[tuple[Any, ...]], Key | None]:
        rows: list[tuple[Any, ...]] = []
        width = self.key_width
        # The rows whose key has a NULL have no order, so no key to cut them at: read whole.
        may_cut = lower is None or lower[0] is not NULL_KEYS
        with self.engine.connect() as conn:
            self.query.begin(conn)
            # (the rows whose key is NULL are selected by another condition: SQLAlchemy's)
            cursor: Any = _driver_cursor(conn, self.query, lower, upper) if may_cut else None
            if cursor is None:
                options = conn.execution_options(stream_results=True, yield_per=SUB_BATCH_ROWS)
                cursor = options.execute(self.query.select_range(lower, upper))
            try:
                while part := cursor.fetchmany(SUB_BATCH_ROWS):
                    rows.extend(map(tuple, part))
                    if may_cut and pace.expired() and self._rest_of_run(cursor, rows):
                        return rows, tuple(rows[-1][:width])
                    pace.tick()
            finally:
                cursor.close()
        return rows, None

    def _rest_of_run(self, cursor: Any, rows: list[tuple[Any, ...]]) -> bool:
        """Read on to the end of the run of rows sharing the last key (a key need not be
        unique with ``write: insert``), so a cut never separates them; whether rows remain
        after it.

        Equal is the source's equality: keys that differ in Python may be one key to its
        collation (``'m'``, ``'M'`` and ``'m '`` under MariaDB's default), and a cut
        between them would lose those after it. The source is asked, on a connection of
        its own (a MariaDB result streams on this one).
        """
        width = self.key_width
        last = rows[-1][:width]
        with contextlib.ExitStack() as stack:
            other: Connection | None = None
            while (row := cursor.fetchone()) is not None:
                key = tuple(row[:width])
                if key != last:
                    if other is None:
                        other = stack.enter_context(self.engine.connect())
                        self.query.begin(other)
                    if not self._same_key(other, key, last):
                        return True
                rows.append(tuple(row))
        return False

    def _same_key(self, conn: Connection, a: Key, b: Key) -> bool:
        """Whether the source holds ``a`` and ``b`` as one key: a row with key ``a`` (one
        was just read) compares equal to ``b`` in the source's own terms."""
        cols = self.query.key_cols
        stmt = (
            select(1)
            .select_from(self.query.table)
            .where(*[c == v for c, v in zip(cols, a, strict=True)])
            .where(*[c == v for c, v in zip(cols, b, strict=True)])
            .limit(1)
        )
        return conn.execute(stmt).first() is not None

    def read_keys(self, keys: Sequence[Key], planned: Sequence[Key] = ()) -> Batch:
        """The rows with these keys, in key order (a replay reads only them)."""
        rows: list[tuple[Any, ...]] = []
        with as_baton_errors("source unavailable", "source refused the read"):
            with self.engine.connect() as conn:
                self.query.begin(conn)
                for start in range(0, len(keys), SUB_BATCH_ROWS):
                    part = [key_value(k) for k in keys[start : start + SUB_BATCH_ROWS]]
                    stmt = (
                        select(*self.query.read_columns)
                        .where(self.query.where, key_expr(self.query.key_cols).in_(part))
                        .order_by(*self.query.key_cols)
                    )
                    rows.extend(tuple(r) for r in conn.execute(stmt))
        return Batch(list(self.query.columns), rows)


def _estimate(conn: Connection, query: RangeQuery) -> int | None:
    table = query.table
    if conn.dialect.name == "postgresql" and not query.query and hasattr(table, "fullname"):
        found = conn.execute(
            text("SELECT reltuples FROM pg_class WHERE oid = to_regclass(:name)"),
            {"name": conn.dialect.identifier_preparer.format_table(table)},
        ).scalar()
        if found is not None and found >= 0:
            return int(found)
    capped = select(1).select_from(table).where(query.where).limit(COUNT_CAP).subquery()
    counted = int(conn.execute(select(func.count()).select_from(capped)).scalar() or 0)
    if counted < COUNT_CAP:
        return counted
    return _beyond_cap(conn, query) or counted


def _beyond_cap(conn: Connection, query: RangeQuery) -> int | None:
    """The rows of a table the capped count stopped in, carried on by its key's spread:
    when the key (its first column, for a key of several) is a number, the rows past the
    ``COUNT_CAP``-th are taken to be as dense as those before it (a legacy table's serial
    keys, a few deleted; an invoice's lines under its number). Three index lookups.
    ``None`` for any other key: the cap is then a lower bound, and the progress a stream
    shows grows with what planning finds."""
    first = query.next_boundary(conn, None, 1)
    at_cap = query.next_boundary(conn, None, COUNT_CAP)
    last = conn.execute(select(func.max(query.key_cols[0])).where(query.where)).scalar()
    low, mid, high = (_number(k) for k in (first and first[0], at_cap and at_cap[0], last))
    if low is None or mid is None or high is None or not low < mid <= high:
        return None
    return max(COUNT_CAP, round(1 + (high - low) * (COUNT_CAP - 1) / (mid - low)))


def _number(value: Any) -> float | None:
    """A key value as a number, if it is one (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real | decimal.Decimal):
        return None
    return float(value)


def _driver_cursor(
    conn: Connection, query: RangeQuery, lower: Key | None, upper: Key | None
) -> _DriverRows | None:
    """SQLite: the range's select, compiled once per shape, run on the driver's own
    cursor. Every column a read selects is untyped, so the driver's rows are what
    SQLAlchemy would hand on, without a Row object per row in between (a tenth of a
    worker's CPU on a SQLite source). ``None``, for SQLAlchemy to run it, on other
    databases (a PostgreSQL or MariaDB read streams through a server-side cursor) and
    where a bound value would go through a type's processing."""
    if conn.dialect.name != "sqlite":
        return None
    compiled = query.compiled_range(conn.dialect, lower is not None, upper is not None)
    if not compiled.plain:
        return None
    return _DriverRows(conn, compiled.sql, compiled.positional(lower, upper))


class _DriverRows:
    """A select run on a driver cursor, its errors turned into SQLAlchemy's kinds (so a
    missing table or a locked file is judged as any other read's)."""

    def __init__(self, conn: Connection, sql: str, params: list[Any]) -> None:
        self.sql, self.params = sql, params
        self.error = conn.dialect.loaded_dbapi.Error
        self.cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        self.call(self.cursor.execute, sql, params)

    def call(self, method: Callable[..., Any], *args: Any) -> Any:
        try:
            return method(*args)
        except self.error as exc:
            raise sa_exc.DBAPIError.instance(self.sql, self.params, exc, self.error) from exc

    def fetchmany(self, n: int) -> list[tuple[Any, ...]]:
        return cast(list[tuple[Any, ...]], self.call(self.cursor.fetchmany, n))

    def fetchone(self) -> tuple[Any, ...] | None:
        return cast(tuple[Any, ...] | None, self.call(self.cursor.fetchone))

    def close(self) -> None:
        self.cursor.close()
