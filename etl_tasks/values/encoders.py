"""What each target dialect receives for a value: one function per dialect, every load path.

PostgreSQL gets text, the form its own input functions parse (COPY, directly
into the table or into a stage, is its only load path). PyMySQL and sqlite3
get parameters of the kinds their drivers write exactly. A value reaches this
point already cast to its column (:mod:`etl_tasks.values.casts`), so these
functions only spell it.
"""

from __future__ import annotations

import datetime as dt
import math
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import orjson

_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
COPY_ESCAPES = _ESCAPES  # what COPY's text format escapes in a field


def interval_text(value: dt.timedelta) -> str:
    """A duration exactly, in a form PostgreSQL parses (no float in between)."""
    return f"{value.days} days {value.seconds}.{value.microseconds:06d} seconds"


def _pg_float(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return repr(value)


def _json_text(value: Any) -> str:
    return orjson.dumps(value).decode()


_PG_TEXT: dict[type, Callable[[Any], str]] = {
    str: lambda v: v,
    int: str,
    bool: lambda v: "t" if v else "f",
    float: _pg_float,
    Decimal: str,
    dt.datetime: dt.datetime.isoformat,
    dt.date: dt.date.isoformat,
    dt.time: dt.time.isoformat,
    dt.timedelta: interval_text,
    uuid.UUID: str,
    bytes: lambda v: "\\x" + v.hex(),
    memoryview: lambda v: "\\x" + bytes(v).hex(),
    bytearray: lambda v: "\\x" + bytes(v).hex(),
    dict: _json_text,
    list: _json_text,
}


def pg_text(value: Any) -> str | None:
    """The value as PostgreSQL's text input (``None`` for NULL)."""
    if value is None:
        return None
    spell = _PG_TEXT.get(type(value))
    return spell(value) if spell is not None else str(value)


def pg_copy_field(value: Any) -> str:
    """One field of COPY's text format: the text, escaped; ``\\N`` for NULL."""
    text = pg_text(value)
    return "\\N" if text is None else text.translate(_ESCAPES)


def mysql_param(value: Any) -> Any:
    """A parameter PyMySQL writes exactly (it spells Decimal, dates, times and durations)."""
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dict | list):
        return _json_text(value)
    if isinstance(value, memoryview | bytearray):
        return bytes(value)
    return value


def sqlite_param(value: Any) -> Any:
    """A parameter sqlite3 stores exactly: numbers beyond REAL and dates as ISO text."""
    if value is None or isinstance(value, int | float | str | bytes):
        return value
    if isinstance(value, Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return interval_text(value)
    if isinstance(value, memoryview | bytearray):
        return bytes(value)
    return _json_text(value)


ENCODERS: dict[str, Callable[[Any], Any]] = {
    "postgresql": pg_text,
    "mysql": mysql_param,
    "mariadb": mysql_param,
    "sqlite": sqlite_param,
}
