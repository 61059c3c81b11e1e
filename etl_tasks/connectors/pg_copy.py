"""PostgreSQL's COPY in text format: the fast way to put rows into a table."""

from __future__ import annotations

import io
import uuid
from collections.abc import Callable, Sequence
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import orjson

_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _text(value: str) -> str:
    return value.translate(_ESCAPES)


def _float(value: float) -> str:
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "Infinity" if value > 0 else "-Infinity"
    return repr(value)


_FORMAT: dict[type, Callable[[Any], str]] = {
    str: _text,
    int: str,
    bool: lambda v: "t" if v else "f",
    float: _float,
    Decimal: str,
    datetime: datetime.isoformat,
    date: date.isoformat,
    time: time.isoformat,
    timedelta: lambda v: f"{v.total_seconds()} seconds",
    uuid.UUID: str,
    bytes: lambda v: "\\\\x" + v.hex(),
    memoryview: lambda v: "\\\\x" + bytes(v).hex(),
    bytearray: lambda v: "\\\\x" + bytes(v).hex(),
    dict: lambda v: _text(orjson.dumps(v).decode()),
    list: lambda v: _text(orjson.dumps(v).decode()),
}


def _field(value: Any) -> str:
    if value is None:
        return "\\N"
    fmt = _FORMAT.get(type(value))
    if fmt is None:
        return _text(str(value))
    return fmt(value)


def copy_text(rows: Sequence[Sequence[Any]]) -> io.StringIO:
    """Rows as one COPY text-format stream."""
    buf = io.StringIO()
    write = buf.write
    for row in rows:
        write("\t".join([_field(v) for v in row]))
        write("\n")
    buf.seek(0)
    return buf


def copy_into(
    dbapi_conn: Any, table_sql: str, columns_sql: str, rows: Sequence[Sequence[Any]]
) -> None:
    """``COPY table (columns) FROM STDIN`` on a psycopg2 connection."""
    with dbapi_conn.cursor() as cur:
        cur.copy_expert(f"COPY {table_sql} ({columns_sql}) FROM STDIN", copy_text(rows))
