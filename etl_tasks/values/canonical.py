"""The form verification compares: one canonical text per target column type.

Both sides end up here: the source's values after the spec's transforms and
the strict casts (what the target should hold), and the target's values read
back as the database returns them, without the load path's conversions. So a
conversion bug on the way in cannot hide on the way back. The forms are
listed in docs/spec.md ("Canonical forms").
"""

from __future__ import annotations

import datetime as dt
import json
import re
import struct
import uuid
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from etl_tasks.values.types import ColumnType, Kind

Canon = Callable[[Any], str]

_INTERVAL = re.compile(
    r"^\s*(?:(-?\d+) years?)?\s*(?:(-?\d+) mons?)?\s*(?:(-?\d+) days?)?\s*"
    r"(?:(-?)(\d+):(\d{2}):(\d{2})(?:\.(\d{1,6}))?)?\s*$"
)


def _decimal(value: Any) -> Decimal:
    if isinstance(value, float):
        return Decimal(repr(value))
    return Decimal(str(value).strip())


def _number(value: Any) -> str:
    try:
        d = _decimal(value)
    except InvalidOperation:
        return f"invalid:{value!r}"
    if not d.is_finite():
        return str(d)
    return "0" if d.is_zero() else format(d.normalize(), "f")


def _float(bits: int | None) -> Canon:
    def canon(value: Any) -> str:
        number = float(value)
        if bits == 24:  # compared as the single-precision value the column keeps
            number = struct.unpack("f", struct.pack("f", number))[0]
            return f"{number:.9g}"
        return repr(number)

    return canon


def _boolean(value: Any) -> str:
    if isinstance(value, str):
        return "true" if value.strip().lower() in ("t", "true", "1", "y", "yes") else "false"
    return "true" if value else "false"


def _binary(value: Any) -> str:
    if isinstance(value, str):  # PostgreSQL's \x... text
        return value.removeprefix("\\x").lower()
    return bytes(value).hex()


def _date(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return value.date().isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    return dt.date.fromisoformat(str(value).strip()[:10]).isoformat()


def _time(value: Any) -> str:
    if isinstance(value, dt.timedelta):
        value = (dt.datetime.min + value).time()
    if isinstance(value, str):
        value = dt.time.fromisoformat(value.strip())
    assert isinstance(value, dt.time)
    return value.replace(tzinfo=None).isoformat(timespec="microseconds")


def _datetime(value: Any) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value
    text = str(value).strip()
    if re.search(r"[+-]\d{2}$", text):  # PostgreSQL's short offset: +00
        text += ":00"
    return dt.datetime.fromisoformat(text)


def _timestamp(value: Any) -> str:
    return _datetime(value).isoformat(timespec="microseconds")


def _instant(value: Any) -> str:
    moment = _datetime(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC).isoformat(timespec="microseconds")


def interval_parts(value: Any) -> tuple[int, int, int]:
    """(months, days, microseconds) of a duration or of PostgreSQL's interval text."""
    if isinstance(value, dt.timedelta):
        return 0, value.days, value.seconds * 1_000_000 + value.microseconds
    text = str(value)
    m = _INTERVAL.match(text)
    if not m or not text.strip():
        days = re.match(r"^\s*(-?\d+) days (-?\d+)\.(\d{6}) seconds\s*$", text)
        if days:  # Baton's own spelling (encoders.interval_text)
            micro = int(days.group(2)) * 1_000_000 + int(days.group(3))
            return 0, int(days.group(1)), micro
        raise ValueError(f"not an interval: {text!r}")
    years, months, day, sign, hours, minutes, seconds, fraction = m.groups()
    micro = (int(hours or 0) * 3600 + int(minutes or 0) * 60 + int(seconds or 0)) * 1_000_000
    micro += int((fraction or "0").ljust(6, "0"))
    return int(years or 0) * 12 + int(months or 0), int(day or 0), -micro if sign else micro


def _interval(value: Any) -> str:
    months, days, micro = interval_parts(value)
    return f"{months}m{days}d{micro}us"


def _json(value: Any) -> str:
    parsed = _parse_json(value) if isinstance(value, str | bytes) else value
    return orjson.dumps(_json_numbers(parsed), option=orjson.OPT_SORT_KEYS).decode()


def _parse_json(text: str | bytes) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:  # a number beyond a double (1e400): read it exactly
        return json.loads(text, parse_float=Decimal, parse_constant=_not_json)


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


def _json_numbers(value: Any) -> Any:
    """Numbers as canonical decimal text, so 2.50 and 2.5 compare equal as JSON does."""
    if isinstance(value, dict):
        return {k: _json_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_numbers(v) for v in value]
    if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        return {"#": _number(value)}
    return value


def _set(value: Any) -> str:
    return ",".join(sorted(p for p in str(value).split(",") if p))


def _text(target: ColumnType) -> Canon:
    def canon(value: Any) -> str:
        text = value.decode() if isinstance(value, bytes) else str(value)
        return text.rstrip(" ") if target.fixed else text

    return canon


def _untyped(value: Any) -> str:
    if isinstance(value, bytes | memoryview):
        return "x" + bytes(value).hex()
    return _number(value) if isinstance(value, int | float | Decimal) else str(value)


def canonical_for(target: ColumnType) -> Canon:
    """How values of a ``target`` column are compared; NULL stays ``None``."""
    kind = target.kind
    table: dict[Kind, Canon] = {
        Kind.INTEGER: _number,
        Kind.DECIMAL: _number,
        Kind.FLOAT: _float(target.precision),
        Kind.BOOLEAN: _boolean,
        Kind.TEXT: _text(target),
        Kind.BINARY: _binary,
        Kind.DATE: _date,
        Kind.TIME: _time,
        Kind.TIMESTAMP: _timestamp,
        Kind.TIMESTAMPTZ: _instant,
        Kind.INTERVAL: _interval,
        Kind.JSON: _json,
        Kind.UUID: lambda v: str(uuid.UUID(str(v))),
        Kind.SET: _set,
        Kind.UNTYPED: _untyped,
    }
    inner = table.get(kind, lambda v: str(v))
    if target.dialect != "postgresql" and kind == Kind.TIMESTAMPTZ:
        inner = _instant  # MySQL DATETIME and SQLite text hold the instant in UTC

    def canon(value: Any) -> str | None:
        if value is None:
            return None
        try:
            return inner(value)
        except (ValueError, TypeError, InvalidOperation, orjson.JSONDecodeError):
            return f"invalid:{value!r}"

    return canon  # type: ignore[return-value]
