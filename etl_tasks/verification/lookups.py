"""Finding rows by key on either side of a stream, spelled as each database stores keys.

A range is cut by the source's order, which need not be the target's (two
collations, SQLite's text against PostgreSQL's types). So besides reading the
target by the range's bounds, a comparison looks rows up by key: expected rows
the target range did not show, and target rows the source range did not have.
Keys are bound the way the load path binds them (the strict cast into the
column's type, then the dialect's encoder) with no SQLAlchemy type processing, so
a lookup finds exactly the rows the load wrote; values are compared elsewhere, in
canonical form, never here.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Connection, Select, select

from etl_tasks.connectors.sql.queries import RangeQuery, key_expr, key_value
from etl_tasks.errors import BadRowError
from etl_tasks.values.casts import Cast, cast_to
from etl_tasks.values.encoders import ENCODERS
from etl_tasks.values.types import ColumnType

LOOKUP_BATCH = 500  # keys per IN list: far below every driver's parameter limit


class KeySpeller:
    """Key values as one database's key columns hold them, ready to bind."""

    def __init__(self, types: Sequence[ColumnType], dialect: str) -> None:
        self._casts: list[Cast] = [cast_to(t) for t in types]
        self._encode = ENCODERS[dialect]

    def spell(self, values: Sequence[Any], *, cast: bool = True) -> tuple[Any, ...] | None:
        """The key to bind, or ``None`` when these columns cannot hold it. ``cast=False``:
        the values are already cast into these columns' types (a converted row's key)."""
        if not cast:
            return tuple(self._encode(v) for v in values)
        try:
            return tuple(self._encode(c(v)) for c, v in zip(self._casts, values, strict=True))
        except BadRowError:
            return None

    def bound(self, values: Sequence[Any] | None) -> tuple[Any, ...] | None:
        """A range bound: ``None`` (open) when absent, or when these columns cannot hold it
        (the range is then read wider, and lookups sort out the rest)."""
        return None if values is None else self.spell(values)


def batches(items: Sequence[Any], size: int = LOOKUP_BATCH) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _in(cols: Sequence[ColumnElement[Any]], keys: Sequence[tuple[Any, ...]]) -> Any:
    if len(cols) == 1:
        return key_expr(cols).in_([k[0] for k in keys])
    return key_expr(cols).in_([key_value(k) for k in keys])


def rows_with_keys(reader: RangeQuery, keys: Sequence[tuple[Any, ...]]) -> Select[Any]:
    """``reader``'s columns, for the rows whose key is one of ``keys`` (spelled)."""
    return select(*reader.read_columns).where(reader.where, _in(reader.key_cols, keys))


def keys_present(
    conn: Connection, reader: RangeQuery, keys: Sequence[tuple[Any, ...]]
) -> list[Any]:
    """The key values (as stored) of the rows ``reader`` sees among ``keys`` (spelled)."""
    found: list[Any] = []
    for batch in batches(keys):
        stmt = select(*reader.key_cols).where(reader.where, _in(reader.key_cols, batch))
        found += [tuple(row) for row in conn.execute(stmt)]
    return found
