"""A target table compared with its source table, row by row, in a documented canonical form.

Both sides are read with a plain ``SELECT`` through the database driver alone:
no SQLAlchemy column types and none of Baton's load-path conversions. Every
value becomes a :data:`Canonical` pair (kind, text) by :func:`canonical`, and
two values agree when :func:`same` says so. Rows are matched by the text of
their key, so a changed key shows as a key missing in the target and a key
not in the source.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import CHAR, Engine, inspect
from sqlalchemy import exc as sa_exc

from etl_tasks.connectors.sql.engines import create_sql_engine

Canonical = tuple[str, str] | None  # (kind, text); None is NULL
Key = tuple[str | None, ...]


def _number(value: int | float | Decimal) -> str:
    if isinstance(value, float) and value != value:
        return "NaN"
    d = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    if not d.is_finite():
        return "NaN" if d.is_nan() else ("-Infinity" if d < 0 else "Infinity")
    return "0" if d.is_zero() else format(d.normalize(), "f")


def _timestamp(value: datetime) -> str:
    if value.tzinfo is not None:  # an instant, compared in UTC; a naive value stands for UTC
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.isoformat(sep=" ")


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


# (Python types, kind, text); the first match wins: bool before int, datetime before date.
_KINDS: list[tuple[type | tuple[type, ...], str, Callable[[Any], str]]] = [
    (bool, "number", lambda v: "1" if v else "0"),
    ((int, float, Decimal), "number", _number),
    ((bytes, bytearray, memoryview), "bytes", lambda v: bytes(v).hex()),
    (datetime, "timestamp", _timestamp),
    (date, "date", date.isoformat),
    (time, "time", time.isoformat),
    (timedelta, "interval", lambda v: str(v // timedelta(microseconds=1))),
    ((list, tuple), "array", lambda v: _json([canonical(x) for x in v])),
    ((set, frozenset), "set", lambda v: _json(sorted(str(x) for x in v))),
    (dict, "json", _json),
]


def canonical(value: Any, fixed_width: bool = False) -> Canonical:
    """The form a value is compared in, whichever database it was read from.

    - NULL is ``None``;
    - ``number``: integers, decimals, floats and booleans as exact decimals without
      exponent or trailing zeros (``4.990`` and ``4.99`` agree); a float by its shortest
      repr (``0.15``), so a single-precision copy of it (``0.15000000596046448``) differs;
      booleans are ``1`` and ``0``, as MySQL has no boolean;
    - ``text``: itself, except that trailing blanks are padding in a fixed-width ``CHAR(n)``
      column (PostgreSQL keeps them when read, MySQL drops them);
    - ``bytes``: lower-case hex;
    - ``timestamp``: ISO 8601 with a space (``2022-02-15 09:57:20``); one with a time zone
      is converted to UTC and compared as UTC (a MySQL ``DATETIME`` holding a
      ``timestamptz`` holds it in UTC); ``date``, ``time``: ISO 8601; ``interval``:
      microseconds;
    - ``array``: a JSON list of canonical elements; ``set``: the JSON list of its sorted
      members; ``json``: JSON with sorted keys;
    - anything else: its Python type and ``str()``.
    """
    if value is None:
        return None
    if isinstance(value, str):
        return ("text", value.rstrip(" ") if fixed_width else value)
    for types, kind, text in _KINDS:
        if isinstance(value, types):
            return (kind, text(value))
    return (type(value).__name__, str(value))


def _cast_text(kind: str, value: str) -> str | None:
    """``value`` read as a ``kind`` the way a strict cast would, in canonical text; else None."""
    try:
        if kind == "number":
            return _number(Decimal(value.strip()))
        if kind == "timestamp":
            return _timestamp(datetime.fromisoformat(value.strip()))
        if kind == "date":
            return date.fromisoformat(value.strip()).isoformat()
        if kind == "time":
            return time.fromisoformat(value.strip()).isoformat()
    except (ArithmeticError, ValueError):
        return None
    return None


def same(a: Canonical, b: Canonical) -> bool:
    """Equal kinds and texts; or a text on one side that is the other side's number,
    timestamp, date or time written out (decimal notation, ISO 8601; ``2016-07-04`` as a
    timestamp is that day at midnight). SQLite stores such values as text, and a strict cast
    to the target's column makes exactly this of them. Bytes, arrays, sets and JSON equal
    only their own kind: bytes that became text differ."""
    if a == b:
        return True
    if a is None or b is None:
        return False
    if a[0] == "text" and b[0] != "text":
        a, b = b, a
    return b[0] == "text" and _cast_text(a[0], b[1]) == a[1]


@dataclass
class TableDiff:
    """How one target table differs from its source table."""

    table: str
    source_rows: int = 0
    target_rows: int = 0
    missing: list[Key] = field(default_factory=list)
    unexpected: list[Key] = field(default_factory=list)
    different: list[tuple[Key, dict[str, tuple[Canonical, Canonical]]]] = field(
        default_factory=list
    )

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.different)

    def describe(self) -> str:
        """A line per problem; per differing column its count and first example."""
        lines = [f"{self.table}: {self.source_rows} source rows, {self.target_rows} target rows"]
        if self.missing:
            lines.append(
                f"  keys missing in the target: {len(self.missing)}, e.g. {self.missing[:2]}"
            )
        if self.unexpected:
            lines.append(
                f"  keys not in the source: {len(self.unexpected)}, e.g. {self.unexpected[:2]}"
            )
        by_column: dict[str, list[tuple[Key, tuple[Canonical, Canonical]]]] = {}
        for key, cols in self.different:
            for col, pair in cols.items():
                by_column.setdefault(col, []).append((key, pair))
        for col, examples in by_column.items():
            key, (want, got) = examples[0]
            lines.append(
                f"  {col}: {len(examples)} rows differ, e.g. key {key}: "
                f"source {_short(want)} → target {_short(got)}"
            )
        return "\n".join(lines)


def _short(value: Canonical, width: int = 90) -> str:
    shown = repr(value)
    return shown if len(shown) <= width else shown[: width - 1] + "…"


def _columns(engine: Engine, table: str) -> tuple[list[str], set[str]]:
    """The table's columns in order, and those of a fixed-width character type."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sa_exc.SAWarning)  # a type SQLAlchemy does not know
        cols = inspect(engine).get_columns(table)
    return [c["name"] for c in cols], {c["name"] for c in cols if isinstance(c["type"], CHAR)}


def _read(
    engine: Engine,
    table: str,
    columns: list[str],
    key: list[str],
    fixed: set[str],
    as_text: set[str] = frozenset(),  # type: ignore[assignment]
) -> dict[Key, tuple[Canonical, ...]]:
    """Every row of ``table`` by the text of its key (the whole row without a key); the
    ``as_text`` columns (MySQL geometries a spec carries as text) as their WKT."""
    quote = engine.dialect.identifier_preparer.quote
    picked = [f"ST_AsText({quote(c)})" if c in as_text else quote(c) for c in columns]
    sql = f"SELECT {', '.join(picked)} FROM {quote(table)}"
    positions = [columns.index(k) for k in key] or list(range(len(columns)))
    rows: dict[Key, tuple[Canonical, ...]] = {}
    with engine.connect() as conn:
        for raw in conn.exec_driver_sql(sql):
            row = tuple(canonical(v, c in fixed) for c, v in zip(columns, raw, strict=True))
            rows[tuple(None if row[i] is None else row[i][1] for i in positions)] = row
    return rows


def _spatial(engine: Engine, table: str) -> set[str]:
    sql = (
        "SELECT column_name FROM information_schema.columns WHERE table_schema = DATABASE() "
        "AND table_name = %s AND data_type IN ('geometry', 'point', 'linestring', 'polygon')"
    )
    with engine.connect() as conn:
        return {str(r[0]) for r in conn.exec_driver_sql(sql, (table,))}


def compare_table(source: Engine, target: Engine, stream: dict[str, Any]) -> TableDiff:
    """A stream's target table against its source table: every column, or those of the
    stream's ``columns``, which must copy each source column under its own name."""
    table, key = stream["source_table"], stream.get("key", [])
    key = [key] if isinstance(key, str) else list(key)
    columns, fixed = _columns(source, table)
    if "columns" in stream:
        assert all(src == col for col, src in stream["columns"].items()), stream["columns"]
        columns = [c for c in columns if c in stream["columns"]]
    wkt = {
        c
        for c, rep in stream.get("as", {}).items()
        if rep == "text"
        and source.dialect.name in ("mysql", "mariadb")
        and c in _spatial(source, table)
    }
    want = _read(source, table, columns, key, fixed, wkt)
    got = _read(target, stream["target_table"], columns, key, fixed)
    diff = TableDiff(stream["target_table"], source_rows=len(want), target_rows=len(got))
    diff.missing = [k for k in want if k not in got]
    diff.unexpected = [k for k in got if k not in want]
    for k, row in want.items():
        if k in got:
            pairs = zip(columns, row, got[k], strict=True)
            cols = {c: (w, g) for c, w, g in pairs if not same(*_as(stream, c, w, g))}
            if cols:
                diff.different.append((k, cols))
    return diff


def _as(
    stream: dict[str, Any], column: str, want: Canonical, got: Canonical
) -> tuple[Canonical, Canonical]:
    """A column the spec carries ``"as": "json"``: an array or a MySQL SET ('a,b') on one
    side, the JSON list it became on the other."""
    if stream.get("as", {}).get(column) != "json" or want is None or got is None:
        return want, got
    return ("json", json.dumps(_items(want))), ("json", json.dumps(_items(got)))


def _items(value: tuple[str, str]) -> list[Any]:
    """The list an array, a SET ('a,b') or a JSON text holds."""
    kind, text = value
    if kind == "array":  # canonical elements, or a JSON column the driver parsed
        return [item[1] if item else None for item in json.loads(text)]
    if text.startswith("["):
        return list(json.loads(text))
    return [part for part in text.split(",") if part]


def compare_tables(spec: dict[str, Any]) -> list[TableDiff]:
    """Each stream of ``spec`` (source and target given by ``url``): target against source."""
    source = create_sql_engine(spec["source"]["url"])
    target = create_sql_engine(spec["target"]["url"])
    try:
        return [compare_table(source, target, stream) for stream in spec["streams"]]
    finally:
        source.dispose()
        target.dispose()
