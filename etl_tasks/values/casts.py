"""The one strict conversion of a value into a target column's type.

It runs after the spec's transforms, for every column whose value is not
already what the target column holds. It converts only where nothing can be
lost or guessed (``'2019-03-14'`` into a date, ``0``/``1`` into a boolean,
``2.5`` into ``numeric(10,2)``); anything else is a bad row with the reason, so
the operator can add the transform that says what the value means (``'no'``
into a boolean needs ``bool``, ``'14/03/2019'`` a ``date`` with its format).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import uuid
from collections.abc import Callable, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from etl_tasks.errors import BadRowError
from etl_tasks.values.types import ColumnType, Kind

Cast = Callable[[Any], Any]
_NULL = type(None)

_INT = re.compile(r"[+-]?[0-9]+")
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_TRUE = {"t", "true", "1"}
_NO_NEGATIVE_ZERO = ("mysql", "mariadb", "sqlite")  # a float column there turns -0.0 into 0
_FALSE = {"f", "false", "0"}


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def bad(value: Any, target: ColumnType, why: str = "") -> BadRowError:
    return BadRowError(f"{_show(value)} is not {_describe(target)}{why}")


def _describe(target: ColumnType) -> str:
    return f"a valid {target.sql or target.kind.value}"


def _int_range(target: ColumnType) -> tuple[int, int]:
    bits = target.precision or 64
    return (0, 2**bits - 1) if target.unsigned else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)


def _integer(target: ColumnType) -> Cast:
    low, high = _int_range(target)

    def cast(value: Any) -> int:
        if isinstance(value, int):  # True is 1 (a MySQL BOOLEAN is a TINYINT(1))
            number = int(value)
        elif isinstance(value, float) and value.is_integer():
            number = int(value)
        elif isinstance(value, Decimal) and value.is_finite() and value == value.to_integral():
            number = int(value)
        elif isinstance(value, str) and _INT.fullmatch(value.strip()):
            number = int(value.strip())
        else:
            raise bad(value, target)
        if not low <= number <= high:
            raise bad(value, target, f": outside {low}..{high}")
        return number

    return cast


def _as_decimal(value: Any) -> Decimal | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, Decimal):
        return value
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value)) if math.isfinite(value) else Decimal(str(value))
    if isinstance(value, str) and _DECIMAL.fullmatch(value.strip()):
        try:
            return Decimal(value.strip())
        except InvalidOperation:
            return None
    return None


def _decimal(target: ColumnType) -> Cast:
    special_ok = target.dialect == "postgresql"

    def cast(value: Any) -> Decimal:
        number = _as_decimal(value)
        if number is None or (not number.is_finite() and not special_ok) or number.is_snan():
            raise bad(value, target)
        if target.precision is not None and number.is_finite():
            _fits(number, target.precision, target.scale or 0, value, target)
        return number

    return cast


def _fits(number: Decimal, precision: int, scale: int, value: Any, target: ColumnType) -> None:
    """Within ``numeric(precision, scale)`` without rounding."""
    _, digits, exponent = number.normalize().as_tuple()
    assert isinstance(exponent, int)
    decimals = max(0, -exponent)
    whole = max(0, len(digits) + exponent)
    if decimals > scale or whole > precision - scale:
        raise bad(value, target, ": it would be rounded or does not fit")


def _float(target: ColumnType) -> Cast:
    special_ok = target.dialect == "postgresql"
    infinity_ok = special_ok or target.dialect == "sqlite"  # SQLite stores NaN as NULL

    def cast(value: Any) -> float:
        if isinstance(value, float):
            number = value
        elif isinstance(value, int) and not isinstance(value, bool) and abs(value) <= 2**53:
            number = float(value)
        else:
            exact = _as_decimal(value)
            if exact is None:
                raise bad(value, target)
            number = float(exact)
            if exact.is_finite() and exact not in (Decimal(repr(number)), Decimal(number)):
                raise bad(value, target, ": a float cannot hold it exactly")
        if not (special_ok or (infinity_ok and math.isinf(number)) or math.isfinite(number)):
            raise bad(value, target, ": the target cannot store it")
        if number == 0 and math.copysign(1, number) < 0 and target.dialect in _NO_NEGATIVE_ZERO:
            raise bad(value, target, ": the target stores -0.0 as 0")
        return number

    return cast


def _boolean(target: ColumnType) -> Cast:
    def cast(value: Any) -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise bad(value, target, " (give the column the 'bool' transform)")

    return cast


def _text(target: ColumnType) -> Cast:
    def cast(value: Any) -> str:
        if isinstance(value, str):
            text = value
        elif isinstance(value, int | Decimal | uuid.UUID) and not isinstance(value, bool):
            text = str(value)
        elif isinstance(value, float):
            text = repr(value)
        elif isinstance(value, dt.date | dt.time):
            text = value.isoformat()
        else:
            raise bad(value, target)
        if target.dialect == "postgresql" and "\x00" in text:
            raise bad(value, target, ": PostgreSQL text cannot hold a NUL character")
        if target.length is not None and len(text) > target.length:
            raise bad(value, target, f": longer than {target.length} characters")
        return text

    return cast


def _binary(target: ColumnType) -> Cast:
    def cast(value: Any) -> bytes:
        if isinstance(value, bytes | bytearray | memoryview):
            return bytes(value)
        raise bad(value, target)

    return cast


def _date(target: ColumnType) -> Cast:
    def cast(value: Any) -> dt.date:
        if isinstance(value, dt.datetime):
            if value.time() != dt.time(0) or value.tzinfo is not None:
                raise bad(value, target, ": it has a time of day")
            return value.date()
        if isinstance(value, dt.date):
            return value
        if isinstance(value, str) and _DATE.fullmatch(value.strip()):
            try:
                return dt.date.fromisoformat(value.strip())
            except ValueError:
                pass
        raise bad(value, target, " (ISO 8601; give other formats the 'date' transform)")

    return cast


def _fsp(value: Any, parsed: dt.datetime | dt.time, target: ColumnType) -> None:
    """Fractional seconds the column would round away are a bad row, not a rounding."""
    digits = 6 if target.scale is None else target.scale
    if digits < 6 and parsed.microsecond % 10 ** (6 - digits):
        raise bad(value, target, f": the column keeps {digits} fractional digits")


def _time(target: ColumnType) -> Cast:
    def parse(value: Any) -> dt.time:
        if isinstance(value, dt.time):
            return value
        if isinstance(value, dt.timedelta) and dt.timedelta(0) <= value < dt.timedelta(days=1):
            return (dt.datetime.min + value).time()
        if isinstance(value, str):
            try:
                return dt.time.fromisoformat(value.strip())
            except ValueError:
                pass
        raise bad(value, target)

    def cast(value: Any) -> dt.time:
        parsed = parse(value)
        _fsp(value, parsed, target)
        return parsed

    return cast


def _parse_datetime(value: Any) -> dt.datetime | None:
    if isinstance(value, dt.datetime):
        return value
    if isinstance(value, dt.date):
        return dt.datetime.combine(value, dt.time(0))
    if isinstance(value, str) and len(value.strip()) >= 10 and _DATE.match(value.strip()):
        try:
            return dt.datetime.fromisoformat(value.strip())
        except ValueError:
            return None
    return None


def _timestamp(target: ColumnType) -> Cast:
    # MySQL's DATETIME is where an instant goes on MySQL (TIMESTAMP ends in 2038): in UTC.
    instants_in_utc = target.dialect in ("mysql", "mariadb")

    def cast(value: Any) -> dt.datetime:
        parsed = _parse_datetime(value)
        if parsed is None:
            raise bad(value, target, " (ISO 8601; give other formats the 'datetime' transform)")
        if parsed.tzinfo is not None and instants_in_utc:
            parsed = parsed.astimezone(dt.UTC).replace(tzinfo=None)
        elif parsed.tzinfo is not None:
            raise bad(value, target, ": it has a UTC offset and the column has no time zone")
        _fsp(value, parsed, target)
        return parsed

    return cast


def _timestamptz(target: ColumnType) -> Cast:
    naive_target = target.dialect != "postgresql"  # MySQL DATETIME, SQLite text: kept in UTC

    def cast(value: Any) -> dt.datetime:
        parsed = _parse_datetime(value)
        if parsed is None:
            raise bad(value, target, " (ISO 8601; give other formats the 'datetime' transform)")
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=dt.UTC)  # no offset given: UTC (docs/spec.md)
        _fsp(value, parsed, target)
        if naive_target:
            return parsed.astimezone(dt.UTC).replace(tzinfo=None)
        return parsed

    return cast


def _interval(target: ColumnType) -> Cast:
    def cast(value: Any) -> Any:
        if isinstance(value, dt.timedelta):
            return value
        if isinstance(value, str) and target.dialect == "postgresql":
            return value  # PostgreSQL's own interval text: parsed by the target, exactly
        raise bad(value, target)

    return cast


def _json(target: ColumnType) -> Cast:
    def cast(value: Any) -> str:
        if isinstance(value, str):
            if not json_text(value):
                raise bad(value, target, ": not JSON text")
            return value
        if isinstance(value, dict | list | int | float | bool) and not _nan(value):
            return orjson.dumps(value).decode()
        raise bad(value, target)

    return cast


def json_text(value: str) -> bool:
    """Whether ``value`` is JSON, numbers beyond a double's range (``1e400``) included."""
    try:
        orjson.loads(value)
    except orjson.JSONDecodeError:
        try:  # orjson refuses numbers a double cannot hold; JSON itself does not
            json.loads(value, parse_constant=_not_json)
        except ValueError:
            return False
    return True


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


def _nan(value: Any) -> bool:
    return isinstance(value, float) and not math.isfinite(value)


def _uuid(target: ColumnType) -> Cast:
    def cast(value: Any) -> str:
        try:
            return str(value if isinstance(value, uuid.UUID) else uuid.UUID(str(value)))
        except ValueError:
            raise bad(value, target) from None

    return cast


def _labelled(target: ColumnType) -> Cast:
    labels = set(target.labels)

    def cast(value: Any) -> str:
        if not isinstance(value, str):
            raise bad(value, target)
        if target.kind == Kind.SET:
            known = not value or set(value.split(",")) <= labels
        else:
            known = value in labels
        if not known:
            raise bad(value, target, f": not one of {sorted(labels)}")
        return value

    return cast


def _native_text(target: ColumnType) -> Cast:
    def cast(value: Any) -> Any:
        if isinstance(value, str):
            return value  # the target parses its own text form
        raise bad(value, target)

    return cast


def _untyped(target: ColumnType) -> Cast:
    def cast(value: Any) -> Any:
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, int | float | str | bytes):
            return value
        if isinstance(value, Decimal):
            return str(value)
        return value.isoformat() if isinstance(value, dt.date | dt.time) else str(value)

    return cast


_BY_KIND: dict[Kind, Callable[[ColumnType], Cast]] = {
    Kind.INTEGER: _integer,
    Kind.DECIMAL: _decimal,
    Kind.FLOAT: _float,
    Kind.BOOLEAN: _boolean,
    Kind.TEXT: _text,
    Kind.BINARY: _binary,
    Kind.DATE: _date,
    Kind.TIME: _time,
    Kind.TIMESTAMP: _timestamp,
    Kind.TIMESTAMPTZ: _timestamptz,
    Kind.INTERVAL: _interval,
    Kind.JSON: _json,
    Kind.UUID: _uuid,
    Kind.ENUM: _labelled,
    Kind.SET: _labelled,
    Kind.ARRAY: _native_text,
    Kind.NATIVE: _native_text,
    Kind.UNTYPED: _untyped,
}


def _present(values: Sequence[Any], kinds: set[type]) -> Sequence[Any]:
    return [v for v in values if v is not None] if _NULL in kinds else values


def _ints_unchanged(target: ColumnType, values: Sequence[Any]) -> bool:
    """Plain ints (not bools, not subclasses) within the column's range: each is its cast."""
    kinds = set(map(type, values))
    if not kinds <= {int, _NULL}:
        return False
    present = _present(values, kinds)
    low, high = _int_range(target)
    return not present or (low <= min(present) and max(present) <= high)


def _texts_unchanged(target: ColumnType, values: Sequence[Any]) -> bool:
    """Plain strs that the column holds as they are (length, PostgreSQL's NUL)."""
    kinds = set(map(type, values))
    if not kinds <= {str, _NULL}:
        return False
    present = _present(values, kinds)
    if not present:
        return True
    if target.dialect == "postgresql" and "\x00" in "".join(present):
        return False
    return target.length is None or max(map(len, present)) <= target.length


_UNCHANGED: dict[Kind, Callable[[ColumnType, Sequence[Any]], bool]] = {
    Kind.INTEGER: _ints_unchanged,
    Kind.TEXT: _texts_unchanged,
}


class ColumnCast:
    """A cast over a whole column. When the values' exact types show that each would come
    back from :func:`cast_to` as it is (plain ints in range, plain text that fits), the
    values themselves, checked without a call per value; otherwise each value cast (a
    refused one raises)."""

    def __init__(self, cast: Cast, target: ColumnType | None = None) -> None:
        self.cast = cast
        self.target = target
        self._unchanged = None if target is None else _UNCHANGED.get(target.kind)

    def keeps(self, values: Sequence[Any]) -> bool:
        """Whether every value would come back as it is (told without casting any)."""
        return (
            self.target is not None
            and self._unchanged is not None
            and self._unchanged(self.target, values)
        )

    def __call__(self, values: Sequence[Any]) -> Sequence[Any]:
        if self.keeps(values):
            return values
        return list(map(self.cast, values))


def cast_column(target: ColumnType) -> ColumnCast:
    """:func:`cast_to` over a column (:class:`ColumnCast`)."""
    return ColumnCast(cast_to(target), target)


def over_column(cast: Cast) -> ColumnCast:
    """Any cast, value by value, over a column."""
    return ColumnCast(cast)


def cast_to(target: ColumnType) -> Cast:
    """The strict conversion into ``target``; ``None`` always passes through."""
    inner = _BY_KIND[target.kind](target)

    def cast(value: Any) -> Any:
        return None if value is None else inner(value)

    return cast
