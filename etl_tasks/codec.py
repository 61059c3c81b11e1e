"""Typed values through JSON: key bounds in the state DB and rows in the staging store.

JSON knows ints, floats, strings, booleans and null. Keys and rows also hold
``Decimal``, dates, timestamps, UUIDs and bytes, which must come back as the
same type (a NUMERIC key compared as a float would skip or repeat rows).
Staged rows are stored column by column so one tag describes a whole column.
"""

from __future__ import annotations

import base64
import math
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, cast

import orjson

_NATIVE = (str, int, float, bool)

_ENCODE: dict[type, tuple[str, Callable[[Any], Any]]] = {
    Decimal: ("dec", str),
    datetime: ("dt", datetime.isoformat),
    date: ("d", date.isoformat),
    time: ("t", time.isoformat),
    timedelta: ("td", lambda v: v // timedelta(microseconds=1)),  # exact, in microseconds
    int: ("int", str),  # only for integers JSON numbers cannot carry exactly
    dict: ("json", lambda v: v),
    list: ("json", lambda v: v),
    uuid.UUID: ("uuid", str),
    bytes: ("b", lambda v: base64.b64encode(v).decode()),
    float: ("f", repr),  # only for non-finite floats, which JSON cannot hold
}


class NullKeys:
    """The bound of the one chunk holding a stream's rows whose key is NULL (they match no
    key range); set aside with their reason when the stream says ``on_null_key: quarantine``."""

    def __repr__(self) -> str:
        return "NULL_KEYS"


NULL_KEYS = NullKeys()
NULL_KEYS_BOUND: list[Any] = [{"$": "nullkeys", "v": 1}]  # as chunk bounds store it

_DECODE: dict[str, Callable[[Any], Any]] = {
    "nullkeys": lambda _: NULL_KEYS,
    "dec": Decimal,
    "dt": datetime.fromisoformat,
    "d": date.fromisoformat,
    "t": time.fromisoformat,
    "td": lambda us: timedelta(microseconds=us),
    "int": int,
    "json": lambda v: v,
    "uuid": uuid.UUID,
    "b": base64.b64decode,
    "f": float,
}


def _plain(value: Any) -> Any:
    if isinstance(value, memoryview | bytearray):
        return bytes(value)
    return value


_INT_RANGE = (-(2**63), 2**64 - 1)  # what orjson writes as a JSON number


def _is_native(value: Any) -> bool:
    if value is None or isinstance(value, str | bool):
        return True
    if isinstance(value, int):
        return _INT_RANGE[0] <= value <= _INT_RANGE[1]
    return isinstance(value, float) and math.isfinite(value)


def encode_value(value: Any) -> Any:
    """One value as JSON: natives as they are, others as ``{"$": tag, "v": text}``."""
    value = _plain(value)
    if _is_native(value):
        return value
    entry = _ENCODE.get(type(value))
    if entry is None:
        raise TypeError(f"cannot stage a value of type {type(value).__name__}")
    tag, enc = entry
    return {"$": tag, "v": enc(value)}


def decode_value(value: Any) -> Any:
    if isinstance(value, dict):
        return _DECODE[value["$"]](value["v"])
    return value


def encode_key(values: Sequence[Any] | None) -> list[Any] | None:
    """A key (one value per key column) for a JSON column; ``None`` stays ``None``."""
    return None if values is None else [encode_value(v) for v in values]


def encode_keys(keys: Sequence[Sequence[Any]]) -> list[list[Any]]:
    """Many keys, as :func:`encode_key` each; keys of JSON-native values need no call each."""
    if not keys:
        return []
    native = all(_all_native(col, set(map(type, col))) for col in zip(*keys, strict=True))
    return list(map(list, keys)) if native else [[encode_value(v) for v in k] for k in keys]


def decode_key(values: Sequence[Any] | None) -> tuple[Any, ...] | None:
    return None if values is None else tuple(decode_value(v) for v in values)


_NATIVE_EXACT = frozenset({str, bool, type(None)})


def _all_native(values: Sequence[Any], kinds: set[type]) -> bool:
    """:func:`_is_native` for every value, by the column's exact types first (a call per
    value only for what the types alone cannot tell: ints out of range, floats not finite)."""
    if kinds <= _NATIVE_EXACT:
        return True
    if kinds <= _NATIVE_EXACT | {int}:
        ints = values if kinds == {int} else [v for v in values if type(v) is int]
        return _INT_RANGE[0] <= min(ints) and max(ints) <= _INT_RANGE[1]
    return all(map(_is_native, values))


def _encode_column(values: Sequence[Any]) -> tuple[str, list[Any], set[type]]:
    """The column's tag, its encoded values, and the exact types of its values."""
    kinds = set(map(type, values))
    if _all_native(values, kinds):
        return "raw", list(values), kinds
    kinds.discard(type(None))
    if len(kinds) == 1:
        (kind,) = kinds
        if kind in (memoryview, bytearray):
            kind = bytes
        entry = _ENCODE.get(kind)
        if entry is not None and kind not in (float, int):
            tag, enc = entry
            return tag, [None if v is None else enc(_plain(v)) for v in values], kinds
    return "mixed", [encode_value(v) for v in values], kinds


def _decode_column(tag: str, values: list[Any]) -> list[Any]:
    if tag == "raw":
        return values
    if tag == "mixed":
        return [decode_value(v) for v in values]
    dec = _DECODE[tag]
    return [None if v is None else dec(v) for v in values]


Staged = tuple[list[str], list[tuple[Any, ...]], dict[str, Any]]  # decode_rows' answer


def encode_rows(columns: Sequence[str], rows: Sequence[Sequence[Any]], **extra: Any) -> bytes:
    """Rows (tuples in ``columns`` order) as compact JSON, column by column."""
    return orjson.dumps(_payload(columns, rows, extra)[0])


def encode_rows_kept(
    columns: Sequence[str], rows: Sequence[Sequence[Any]], **extra: Any
) -> tuple[bytes, Staged]:
    """:func:`encode_rows`, and what :func:`decode_rows` would make of its blob, without
    decoding it: the next step on this thread takes these rows from memory. A column
    whose values all come back as they are (:func:`_round_trips`) is handed on as it is;
    any other is decoded from its own encoded values, so the two are always equal."""
    payload, data, kinds = _payload(columns, rows, extra)
    blob = orjson.dumps(payload)
    cols: list[Sequence[Any]] = []
    for tag, original, encoded, types in zip(
        payload["tags"], data, payload["data"], kinds, strict=True
    ):
        if _round_trips(tag, original, types):
            cols.append(original)
        else:
            cols.append(_decode_column(tag, orjson.loads(orjson.dumps(encoded))))
    kept: list[tuple[Any, ...]] = []
    same = all(c is o for c, o in zip(cols, data, strict=True))
    if same and set(map(type, rows)) <= {tuple}:
        kept.extend(cast(Sequence[tuple[Any, ...]], rows))
    elif rows:
        kept.extend(zip(*cols, strict=True))
    # Column names (a driver's may be a str subclass) and extra, as JSON gives them back
    names, more = orjson.loads(orjson.dumps([payload["columns"], extra]))
    return blob, (names, kept, more)


def _payload(
    columns: Sequence[str], rows: Sequence[Sequence[Any]], extra: dict[str, Any]
) -> tuple[dict[str, Any], list[Sequence[Any]], list[set[type]]]:
    """The staged JSON document, the rows' values column by column, and their types."""
    data: list[Sequence[Any]] = list(zip(*rows, strict=True)) if rows else [() for _ in columns]
    encoded = [_encode_column(col) for col in data]
    payload = {
        "columns": list(columns),
        "n": len(rows),
        "tags": [tag for tag, _, _ in encoded],
        "data": [vals for _, vals, _ in encoded],
        "extra": extra,
    }
    return payload, data, [kinds for _, _, kinds in encoded]


_JSON_EXACT = frozenset({str, int, float, bool, type(None)})  # as raw, each comes back as is
_SAME_AGAIN = {  # a typed column of one exact type whose text gives back the same value
    "dec": Decimal,  # str() and Decimal() are inverses, exponent and sign of zero included
    "d": date,
    "td": timedelta,  # microseconds, exactly
    "uuid": uuid.UUID,
    "b": bytes,  # not memoryview or bytearray: those come back as bytes
}
_CLOCK = {"dt": datetime, "t": time}


def _round_trips(tag: str, values: Sequence[Any], kinds: set[type]) -> bool:
    """Whether :func:`_decode_column` of this column's encoding gives back these very
    values, of these very types. ``raw`` values are finite floats, ints within orjson's
    range, strings, booleans and None (:func:`_all_native`): JSON gives back each of
    the exact types. A date-time or time comes back with its offset only (a named zone
    becomes a fixed offset; ``fold`` is lost): naive and UTC ones alone round trip.
    ``kinds``: the exact types of ``values`` (None aside, but for a raw column)."""
    if tag == "raw":
        return kinds <= _JSON_EXACT
    kinds = kinds - {type(None)}
    if tag in _SAME_AGAIN:
        return kinds == {_SAME_AGAIN[tag]}
    if tag in _CLOCK and kinds == {_CLOCK[tag]}:
        return all(
            v is None or (not v.fold and (v.tzinfo is None or v.tzinfo is UTC)) for v in values
        )
    return False  # json and mixed: nested values may change (tuples, NaN, datetimes)


def decode_rows(blob: bytes) -> Staged:
    """The inverse of :func:`encode_rows`: ``(columns, rows, extra)``."""
    payload = orjson.loads(blob)
    cols = [_decode_column(t, v) for t, v in zip(payload["tags"], payload["data"], strict=True)]
    rows = list(zip(*cols, strict=True)) if payload["n"] else []
    return payload["columns"], rows, payload["extra"]


def pass_through(blob: bytes, columns: Sequence[str], key_width: int) -> bytes | None:
    """Staged source rows as transformed rows, when every value passes untouched: the same
    payload under the target's column names, with each row's position and source key as
    :func:`encode_rows` would write them, and no value decoded. ``None`` when a row's key
    is NULL or the source refused a row (those need the transform's own path, which sets
    them aside)."""
    found = pass_through_kept(blob, columns, key_width)
    return None if found is None else found[0]


def pass_through_kept(
    blob: bytes, columns: Sequence[str], key_width: int
) -> tuple[bytes, list[str], dict[str, Any]] | None:
    """:func:`pass_through`, with the column names and the extra that :func:`decode_rows`
    would read back from its blob (its rows are the source rows: a caller holding them
    hands them on as they are)."""
    payload = orjson.loads(blob)
    if payload["extra"].get("malformed"):
        return None  # rows the source refused: the transform sets them aside
    key_columns = []
    for tag, values in zip(payload["tags"][:key_width], payload["data"][:key_width], strict=True):
        if None in values:
            return None
        # encode_value's {"$": tag, "v": text} for a typed column; the values themselves else
        typed = tag not in ("raw", "mixed")
        key_columns.append([{"$": tag, "v": v} for v in values] if typed else values)
    n = payload["n"]
    payload["columns"] = list(columns)
    payload["extra"] = {
        "quarantine": [],
        "positions": list(range(n)),
        "source_keys": [list(k) for k in zip(*key_columns, strict=True)] if n else [],
    }
    return orjson.dumps(payload), payload["columns"], payload["extra"]


def dumps(value: Any) -> str:
    """JSON text of plain data, with typed values encoded (for quarantined rows)."""
    return orjson.dumps(value, default=encode_value).decode()


def quarantine_key(values: Sequence[Any]) -> str:
    """How a row set aside is known by its source key: JSON text that :func:`key_of` reads."""
    return dumps(list(values))


def key_of(quarantined: str) -> tuple[Any, ...]:
    """The source key a :func:`quarantine_key` names, to read its row again."""
    return tuple(decode_value(v) for v in orjson.loads(quarantined))


def _iso_duration(microseconds: int) -> str:
    sign, us = ("-", -microseconds) if microseconds < 0 else ("", microseconds)
    seconds, fraction = divmod(us, 1_000_000)
    text = f"{seconds}.{fraction:06d}".rstrip("0").rstrip(".")
    return f"{sign}PT{text}S"


# Each tag's value as plain JSON: what a person or another program reads without
# knowing Baton's tags. Exact numbers stay exact as strings.
_PLAIN: dict[str, Callable[[Any], Any]] = {
    "nullkeys": lambda _: None,
    "dec": str,
    "dt": str,  # already ISO 8601
    "d": str,
    "t": str,
    "td": _iso_duration,  # ISO 8601 duration in seconds: PT90061.5S
    "int": str,  # an integer a JSON number cannot carry exactly
    "json": lambda v: v,
    "uuid": str,
    "b": str,  # already base64
    "f": str,  # inf, -inf, nan
}


def plain_value(value: Any) -> Any:
    """A value as :func:`encode_value` stored it, in plain JSON (no ``{"$": tag}``):
    decimals and large integers as strings, dates and times ISO 8601, bytes base64."""
    if isinstance(value, dict) and set(value) == {"$", "v"} and value["$"] in _PLAIN:
        return _PLAIN[value["$"]](value["v"])
    return value


def plain_key(quarantined: str) -> list[Any]:
    """The key a :func:`quarantine_key` names, as a list of plain JSON values."""
    return [plain_value(v) for v in orjson.loads(quarantined)]
