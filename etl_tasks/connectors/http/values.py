"""Row values as an HTTP API receives them: JSON, each type in one canonical form.

JSON's own types go as they are (a float that is not finite as the string
``"NaN"``, ``"Infinity"`` or ``"-Infinity"``); decimals as strings, so no digit
is lost to a float; dates, times and timestamps in ISO 8601 (a timestamp with
a zone keeps its offset); durations in ISO 8601 (``P1DT2.5S``); bytes in base64;
UUIDs in their usual text; JSON documents as they are; anything else as its text.
"""

from __future__ import annotations

import base64
import math
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import orjson


def json_value(value: Any) -> Any:
    """One value in its canonical JSON form."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else _not_finite(value)
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_value(v) for v in value]
    for kind, spell in _SPELLINGS:
        if isinstance(value, kind):
            return spell(value)
    return str(value)


def _not_finite(value: float | Decimal) -> str:
    if value != value:  # NaN
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def _decimal(value: Decimal) -> str:
    if not value.is_finite():
        return _not_finite(value)
    return format(value, "f")  # never an exponent: 1E+3 is "1000"


def _duration(value: timedelta) -> str:
    sign = "-" if value < timedelta(0) else ""
    value = abs(value)
    seconds = value.seconds + value.microseconds / 1_000_000
    text = f"{seconds:.6f}".rstrip("0").rstrip(".")
    return f"{sign}P{value.days}DT{text}S"


def _base64(value: bytes | bytearray | memoryview) -> str:
    return base64.b64encode(bytes(value)).decode()


_SPELLINGS: tuple[tuple[type | tuple[type, ...], Callable[[Any], Any]], ...] = (
    (Decimal, _decimal),
    ((datetime, date, time), lambda v: v.isoformat()),
    (timedelta, _duration),
    ((bytes, bytearray, memoryview), _base64),
    (uuid.UUID, str),
)


def records(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[dict[str, Any]]:
    """Each row as an object keyed by target column, its values canonical."""
    return [{c: json_value(v) for c, v in zip(columns, row, strict=True)} for row in rows]


def body(columns: Sequence[str], rows: Iterable[Sequence[Any]], rows_field: str | None) -> bytes:
    """A request's body: ``{rows_field: [...]}``, or the bare array without ``rows_field``."""
    objects = records(columns, rows)
    return orjson.dumps(objects if rows_field is None else {rows_field: objects})
