"""The suite's own judgement: both sides read raw, compared in a canonical form per kind.

Nothing here goes through Baton's extraction path, casts or encoders. Each side is read
with its database driver alone (psycopg2, PyMySQL, sqlite3), PostgreSQL's interval and
JSON as their own text (psycopg2 would parse them into lossy Python values), MariaDB in a
``+00:00`` session. Each value becomes one canonical text for the kind of its *source*
column, the kind the test declared, so a value that changed type on the way (bytes that
became text, a JSON string that became a number) differs.

The forms follow docs/spec.md ("Canonical forms"): numbers as exact decimals (a float by
its shortest repr, and ``-0.0`` keeps its sign as a float), single-precision floats to 9
significant digits, timestamps as ISO 8601 with microseconds, instants in UTC (MariaDB's
``DATETIME`` and SQLite's text keep them in UTC, without an offset), a timestamp *with*
an offset compared as the instant it names (a MariaDB ``DATETIME`` keeps it in UTC),
intervals as (months, days, microseconds), JSON parsed with exact numbers and sorted keys.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import sqlite3
import struct
from decimal import Decimal, InvalidOperation
from typing import Any

import psycopg2
import pymysql
from sqlalchemy.engine import make_url

from etl_tasks.values.canonical import interval_parts
from tests.fidelity.strategies import Col

Canon = str | None
_NUMBER_TEXT = re.compile(r"\s*[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\s*")


def _decimal_text(d: Decimal) -> str:
    if d.is_nan():
        return "NaN"
    if not d.is_finite():
        return "-Infinity" if d < 0 else "Infinity"
    return "0" if d.is_zero() else format(d.normalize(), "f")


def _number(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return _decimal_text(Decimal(repr(value)) if value == value else Decimal("NaN"))
    if isinstance(value, int | Decimal):
        return _decimal_text(Decimal(value))
    if isinstance(value, str) and (_NUMBER_TEXT.fullmatch(value) or value.strip() in _SPECIAL):
        return _decimal_text(Decimal(value.strip()))
    raise TypeError(value)


_SPECIAL = {"NaN", "Infinity", "-Infinity", "inf", "-inf"}


def _float(value: Any) -> str:
    return repr(float(value))  # a REAL, a DOUBLE, or their text; -0.0 keeps its sign


def _single(value: Any) -> str:
    number = struct.unpack("f", struct.pack("f", float(value)))[0]
    if number != number:
        return "nan"
    return f"{number:.9g}" if number else ("-0" if str(number).startswith("-") else "0")


def _date(value: Any) -> str:
    if isinstance(value, dt.datetime):
        raise TypeError(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    return dt.date.fromisoformat(str(value)).isoformat()


def _time(value: Any) -> str:
    if isinstance(value, dt.timedelta):  # MariaDB's TIME is a duration
        value = (dt.datetime.min + value).time()
    if isinstance(value, str):
        value = dt.time.fromisoformat(value)
    assert isinstance(value, dt.time) and value.tzinfo is None, value
    return value.isoformat(timespec="microseconds")


def _parse_datetime(value: Any) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value
    if isinstance(value, str):
        text = value.strip()
        if re.search(r"[+-]\d{2}$", text):
            text += ":00"
        return dt.datetime.fromisoformat(text)
    raise TypeError(value)


def _timestamp(value: Any) -> str:
    moment = _parse_datetime(value)
    if moment.tzinfo is not None:  # an offset names an instant: MariaDB keeps it in UTC
        return "instant " + _instant(moment)
    return moment.isoformat(timespec="microseconds")


def _instant(value: Any) -> str:
    moment = _parse_datetime(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC).replace(tzinfo=None).isoformat(timespec="microseconds")


def _interval(value: Any) -> str:
    months, days, micro = interval_parts(value)
    return f"{months}m{days}d{micro}us"


def _json_value(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json_value(v) for k, v in sorted(value.items())}
    if isinstance(value, list):
        return [_json_value(v) for v in value]
    if isinstance(value, Decimal):
        return {"#": _decimal_text(value)}
    return value


def _json(value: Any) -> str:
    text = value.decode() if isinstance(value, bytes) else str(value)
    parsed = json.loads(text, parse_float=Decimal, parse_int=Decimal)
    return json.dumps(_json_value(parsed), ensure_ascii=False, sort_keys=True)


def _set(value: Any) -> str:
    if isinstance(value, set):
        members = list(value)
    elif str(value).startswith("["):  # carried "as": "json"
        members = json.loads(str(value))
    else:
        members = [m for m in str(value).split(",") if m]
    return ",".join(sorted(members))


def _binary(value: Any) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        return "bytes " + bytes(value).hex()
    raise TypeError(value)


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    raise TypeError(value)


def _untyped(value: Any) -> str:
    """Any storage class; in a target text column a number is its text."""
    if isinstance(value, bytes | memoryview):
        return "bytes " + bytes(value).hex()
    if isinstance(value, int | float):
        return "number " + _number(value)
    if isinstance(value, str) and _NUMBER_TEXT.fullmatch(value):
        return "number " + _number(value)
    return "text " + str(value)


_FORMS = {
    "int": _number,
    "decimal": _number,
    "float": _float,
    "real": _single,
    "bool": _number,
    "text": _text,
    "binary": _binary,
    "date": _date,
    "time": _time,
    "timestamp": _timestamp,
    "instant": _instant,
    "interval": _interval,
    "json": _json,
    "uuid": lambda v: str(v).lower(),
    "enum": _text,
    "set": _set,
    "untyped": _untyped,
}


def canonical(kind: str, value: Any) -> Canon:
    """``value`` in the canonical text of ``kind``; a value that is not one is its repr."""
    if value is None:
        return None
    try:
        return _FORMS[kind](value)
    except (TypeError, ValueError, InvalidOperation, AssertionError, OverflowError):
        return f"not a {kind}: {value!r}"


def key_canonical(key_kind: str, value: Any) -> str:
    if key_kind == "int":
        return _number(value)
    return _text(value)


# --- raw reads --------------------------------------------------------------------------------


def _pg_pick(col: Col) -> str:
    name = f'"{col.name}"'
    return f"{name}::text" if col.kind in ("interval", "json", "enum", "uuid", "set") else name


def _maria_pick(col: Col) -> str:
    # MariaDB writes a FLOAT out with 6 significant digits; as a DOUBLE it is exact
    return f"CAST(`{col.name}` AS DOUBLE)" if col.kind == "real" else f"`{col.name}`"


def read_rows(dialect: str, url: str, table: str, cols: list[Col]) -> list[tuple[Any, ...]]:
    """Every row of ``table`` as the driver returns it: the key first, then ``cols``."""
    if dialect == "postgresql":
        picked = ", ".join(['"k"', *(_pg_pick(c) for c in cols)])
        conn = psycopg2.connect(url)
        try:
            with conn.cursor() as cur:
                cur.execute(f'SELECT {picked} FROM "{table}"')
                return list(cur.fetchall())
        finally:
            conn.close()
    if dialect == "mariadb":
        picked = ", ".join(["`k`", *(_maria_pick(c) for c in cols)])
        conn2 = maria_connect(url)
        try:
            with conn2.cursor() as cur:
                cur.execute(f"SELECT {picked} FROM `{table}`")
                return list(cur.fetchall())
        finally:
            conn2.close()
    picked = ", ".join(['"k"', *(f'"{c.name}"' for c in cols)])
    conn3 = sqlite3.connect(url.removeprefix("sqlite:///"))
    try:
        return conn3.execute(f'SELECT {picked} FROM "{table}"').fetchall()
    finally:
        conn3.close()


def maria_connect(url: str) -> Any:
    u = make_url(url)
    return pymysql.connect(
        host=u.host,
        port=u.port or 3306,
        user=u.username,
        password=u.password or "",
        database=u.database,
        autocommit=True,
        charset="utf8mb4",
        init_command="SET time_zone = '+00:00'",
    )
