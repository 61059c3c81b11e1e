"""Unit tests for etl_tasks.codec: typed keys and staged rows keep their exact types."""

from __future__ import annotations

import json
import math
import uuid
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any

import orjson
import pytest

from etl_tasks import codec

IST = timezone(timedelta(hours=5, minutes=30))
NEG = timezone(-timedelta(hours=7))

SAMPLES: list[Any] = [
    pytest.param(0, id="int-zero"),
    pytest.param(-42, id="int-neg"),
    pytest.param(2**63 - 1, id="int-i64-max"),
    pytest.param(-(2**63), id="int-i64-min"),
    pytest.param(2**64 - 1, id="int-u64-max"),
    pytest.param(1.5, id="float"),
    pytest.param(0.1, id="float-inexact"),
    pytest.param(-0.0, id="float-neg-zero"),
    pytest.param(5e-324, id="float-denormal"),
    pytest.param(1.7976931348623157e308, id="float-max"),
    pytest.param(float("nan"), id="float-nan"),
    pytest.param(float("inf"), id="float-inf"),
    pytest.param(float("-inf"), id="float-neg-inf"),
    pytest.param("", id="str-empty"),
    pytest.param("héllo ☃ 𝄞 中文", id="str-unicode"),
    pytest.param('tab\tnl\n"q"\\ \x00', id="str-controls"),
    pytest.param("nan", id="str-nan"),
    pytest.param(True, id="bool-true"),
    pytest.param(False, id="bool-false"),
    pytest.param(None, id="none"),
    pytest.param(Decimal("1.500"), id="dec-trailing-zeros"),
    pytest.param(Decimal("-0.00"), id="dec-neg-zero"),
    pytest.param(Decimal("1E+30"), id="dec-neg-scale"),
    pytest.param(Decimal("1.23E-40"), id="dec-huge-scale"),
    pytest.param(Decimal("123456789012345678901234567890.123456789"), id="dec-wide"),
    pytest.param(Decimal("-7"), id="dec-int"),
    pytest.param(Decimal("NaN"), id="dec-nan"),
    pytest.param(Decimal("-Infinity"), id="dec-neg-inf"),
    pytest.param(date(2024, 2, 29), id="date"),
    pytest.param(date(1, 1, 1), id="date-min"),
    pytest.param(datetime(2024, 1, 2, 3, 4, 5, 678901), id="datetime-naive"),
    pytest.param(datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC), id="datetime-utc"),
    pytest.param(datetime(2024, 1, 2, 3, 4, 5, 1, tzinfo=IST), id="datetime-ist"),
    pytest.param(datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=NEG), id="datetime-max-neg"),
    pytest.param(time(0, 0), id="time-midnight"),
    pytest.param(time(1, 2, 3, 4), id="time-micro"),
    pytest.param(time(23, 59, 59, tzinfo=IST), id="time-tz"),
    pytest.param(timedelta(0), id="td-zero"),
    pytest.param(timedelta(days=3, microseconds=1), id="td-micro"),
    pytest.param(timedelta(days=-1, seconds=5), id="td-neg"),
    pytest.param(timedelta(days=36500, hours=5, microseconds=999999), id="td-century"),
    pytest.param(uuid.UUID("12345678-1234-5678-1234-567812345678"), id="uuid"),
    pytest.param(b"", id="bytes-empty"),
    pytest.param(b'\x00\xff\n"{}', id="bytes"),
    pytest.param(bytearray(b"\x01\x02"), id="bytearray"),
    pytest.param(memoryview(b"\x03\x04"), id="memoryview"),
]

BIG_INTS = [
    pytest.param(2**64, id="u64-plus-1"),
    pytest.param(-(2**63) - 1, id="i64-minus-1"),
    pytest.param(10**30, id="1e30"),
]


# --- helpers -------------------------------------------------------------------------------


def expected_of(value: Any) -> Any:
    """What must come back: buffers come back as ``bytes``, everything else unchanged."""
    return bytes(value) if isinstance(value, memoryview | bytearray) else value


def assert_same(original: Any, got: Any) -> None:
    """Same type and same value, as strictly as each type allows."""
    want = expected_of(original)
    assert type(got) is type(want), f"{got!r} is a {type(got).__name__}, not {type(want).__name__}"
    if isinstance(want, float) and math.isnan(want):
        assert math.isnan(got)
    elif isinstance(want, Decimal):
        assert str(got) == str(want), "a Decimal keeps its exact digits and exponent"
    elif isinstance(want, float):
        assert math.copysign(1.0, got) == math.copysign(1.0, want)
        assert got == want
    elif isinstance(want, datetime | time):
        assert got == want
        assert got.utcoffset() == want.utcoffset(), "tz-awareness and offset are kept"
    else:
        assert got == want


def assert_rows_same(original: list[tuple[Any, ...]], got: list[tuple[Any, ...]]) -> None:
    assert len(got) == len(original)
    for want_row, got_row in zip(original, got, strict=True):
        assert isinstance(got_row, tuple)
        assert len(got_row) == len(want_row)
        for want, value in zip(want_row, got_row, strict=True):
            assert_same(want, value)


def key_round_trip(values: list[Any]) -> tuple[Any, ...] | None:
    """Through the state DB: encoded, stored in a JSON column (stdlib json), decoded."""
    stored = json.loads(json.dumps(codec.encode_key(values), allow_nan=False))
    return codec.decode_key(stored)


def rows_round_trip(
    columns: list[str], rows: list[tuple[Any, ...]], **extra: Any
) -> tuple[list[str], list[tuple[Any, ...]], dict[str, Any]]:
    return codec.decode_rows(codec.encode_rows(columns, rows, **extra))


# --- keys ----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", SAMPLES)
def test_key_of_one_value_round_trips(value: Any) -> None:
    got = key_round_trip([value])

    assert got is not None and len(got) == 1
    assert_same(value, got[0])


def test_composite_key_of_every_type_round_trips() -> None:
    values = [p.values[0] for p in SAMPLES]

    got = key_round_trip(values)

    assert isinstance(got, tuple)
    assert_rows_same([tuple(values)], [got])


def test_missing_key_stays_none() -> None:
    assert codec.encode_key(None) is None
    assert codec.decode_key(None) is None


def test_encoded_key_is_plain_json_with_tags_for_typed_values() -> None:
    encoded = codec.encode_key([7, "x", None, True, Decimal("1.50"), date(2024, 1, 2)])

    assert encoded == [7, "x", None, True, {"$": "dec", "v": "1.50"}, {"$": "d", "v": "2024-01-02"}]


def test_decimal_key_never_becomes_a_float() -> None:
    got = key_round_trip([Decimal("0.1"), Decimal("10.10")])

    assert got == (Decimal("0.1"), Decimal("10.10"))
    assert all(type(v) is Decimal for v in got)  # type: ignore[union-attr]


def test_finite_floats_stay_native_and_non_finite_are_tagged() -> None:
    assert codec.encode_value(2.5) == 2.5
    assert codec.encode_value(float("inf")) == {"$": "f", "v": "inf"}
    assert codec.encode_value(float("-inf")) == {"$": "f", "v": "-inf"}
    assert codec.encode_value(float("nan")) == {"$": "f", "v": "nan"}


# --- staged rows ---------------------------------------------------------------------------


@pytest.mark.parametrize("value", SAMPLES)
def test_one_column_of_one_type_round_trips(value: Any) -> None:
    rows = [(value,), (None,), (value,)]

    columns, got, extra = rows_round_trip(["c"], rows)

    assert columns == ["c"]
    assert extra == {}
    assert_rows_same(rows, got)


def test_every_type_in_one_row_set() -> None:
    # Given one column per sample type, each with a None in the middle row
    values = [p.values[0] for p in SAMPLES]
    columns = [f"c{i}" for i in range(len(values))]
    rows = [tuple(values), tuple(None for _ in values), tuple(values)]

    # When the rows are staged and read back
    got_columns, got, _ = rows_round_trip(columns, rows)

    # Then every value comes back with its exact type, row order and column order kept
    assert got_columns == columns
    assert_rows_same(rows, got)


@pytest.mark.parametrize(
    "column",
    [
        pytest.param([1, "a", Decimal("2.0"), None, b"x", float("inf"), True, 2.5], id="anything"),
        pytest.param([Decimal("1.0"), 1, Decimal("1.00")], id="decimal-and-int"),
        pytest.param([datetime(2020, 1, 1), date(2020, 1, 1)], id="datetime-and-date"),
        pytest.param([datetime(2020, 1, 1), datetime(2020, 1, 1, tzinfo=IST)], id="naive-aware"),
        pytest.param([b"a", bytearray(b"b"), memoryview(b"c"), None], id="buffers"),
        pytest.param([float("nan"), float("inf"), 1.0, None], id="non-finite-and-finite"),
        pytest.param([1, 1.5, True, None, "s"], id="natives"),
        pytest.param([uuid.UUID(int=1), "00000000-0000-0000-0000-000000000001"], id="uuid-and-str"),
        pytest.param([time(1), timedelta(hours=1)], id="time-and-timedelta"),
    ],
)
def test_mixed_type_column_round_trips(column: list[Any]) -> None:
    rows = [(i, v) for i, v in enumerate(column)]

    _, got, _ = rows_round_trip(["id", "v"], rows)

    assert_rows_same(rows, got)


def test_a_column_of_one_tagged_type_is_tagged_once() -> None:
    blob = codec.encode_rows(["d"], [(Decimal("1.10"),), (None,), (Decimal("2"),)])

    payload = orjson.loads(blob)

    assert payload["tags"] == ["dec"]
    assert payload["data"] == [["1.10", None, "2"]]


def test_a_native_column_is_stored_raw() -> None:
    payload = orjson.loads(codec.encode_rows(["a", "b"], [(1, "x"), (None, True)]))

    assert payload["tags"] == ["raw", "raw"]
    assert payload["data"] == [[1, None], ["x", True]]


@pytest.mark.parametrize("columns", [[], ["a"], ["a", "b", "c"]])
def test_empty_row_list_round_trips(columns: list[str]) -> None:
    got_columns, rows, extra = rows_round_trip(columns, [])

    assert (got_columns, rows, extra) == (columns, [], {})


def test_extra_payload_round_trips_beside_the_rows() -> None:
    quarantine = [{"key": "[1]", "reason": "bad", "row": {"v": {"$": "dec", "v": "1.5"}}}]

    _, rows, extra = rows_round_trip(["id"], [(1,), (2,)], quarantine=quarantine, attempt=3)

    assert rows == [(1,), (2,)]
    assert extra == {"quarantine": quarantine, "attempt": 3}


def test_extra_payload_with_no_rows() -> None:
    assert rows_round_trip(["id"], [], quarantine=[]) == (["id"], [], {"quarantine": []})


def test_rows_of_uneven_width_are_refused() -> None:
    with pytest.raises(ValueError):
        codec.encode_rows(["a", "b"], [(1, 2), (3,)])


# --- unknown types -------------------------------------------------------------------------


class Opaque:
    pass


@pytest.mark.parametrize(
    "value",
    [Opaque(), {1, 2}, complex(1, 2)],
    ids=["object", "set", "complex"],
)
def test_unknown_type_raises_type_error(value: Any) -> None:
    with pytest.raises(TypeError, match=type(value).__name__):
        codec.encode_value(value)
    with pytest.raises(TypeError):
        codec.encode_key([1, value])
    with pytest.raises(TypeError):
        codec.encode_rows(["id", "v"], [(1, value)])
    with pytest.raises(TypeError):
        codec.encode_rows(["id", "v"], [(1, Decimal(1)), (2, value)])


def test_dumps_encodes_typed_values_for_quarantine() -> None:
    text = codec.dumps([1, Decimal("1.50"), b"\x00", None])

    assert json.loads(text) == [1, {"$": "dec", "v": "1.50"}, {"$": "b", "v": "AA=="}, None]
    assert [codec.decode_value(v) for v in json.loads(text)] == [1, Decimal("1.50"), b"\x00", None]


# --- known limits (bugs) -------------------------------------------------------------------


@pytest.mark.parametrize("value", BIG_INTS)
def test_integers_beyond_64_bits_can_be_staged(value: int) -> None:
    _, got, _ = rows_round_trip(["c"], [(value,)])

    assert got == [(value,)]


def test_long_timedelta_keeps_its_microseconds() -> None:
    value = timedelta(days=99_999, microseconds=1)

    _, got, _ = rows_round_trip(["c"], [(value,)])

    assert got == [(value,)]


@pytest.mark.parametrize("value", [{"a": [1, {"b": None}]}, [1, "x", None], {}])
def test_json_documents_round_trip(value: Any) -> None:
    """json/jsonb and array columns: staged as JSON, read back equal."""
    assert codec.decode_value(codec.encode_value(value)) == value
    _, rows, _ = codec.decode_rows(codec.encode_rows(["id", "doc"], [(1, value), (2, None)]))
    assert rows == [(1, value), (2, None)]
    _, mixed, _ = codec.decode_rows(codec.encode_rows(["v"], [(value,), (Decimal("1.5"),)]))
    assert mixed == [(value,), (Decimal("1.5"),)]


def test_columns_of_every_native_mix_round_trip_exactly() -> None:
    from enum import StrEnum

    class Level(StrEnum):
        HIGH = "high"

    columns = ["ints", "big", "floats", "mixed", "text"]
    rows = [
        (1, 2**64, 1.5, True, Level.HIGH),
        (None, -(2**63) - 1, float("inf"), "x", "y"),
        (-(2**63), 5, float("nan"), None, None),
    ]
    _, back, _ = codec.decode_rows(codec.encode_rows(columns, rows))
    assert [r[:2] for r in back] == [r[:2] for r in rows]
    assert back[0][2] == 1.5 and back[1][2] == float("inf") and back[2][2] != back[2][2]
    assert [r[3:] for r in back] == [r[3:] for r in rows]


def test_many_keys_encode_as_each_key_alone() -> None:
    natives = [(1, "a"), (2, "b")]
    typed = [(Decimal("1.10"), date(2024, 2, 29)), (None, date(2000, 1, 1))]
    for keys in (natives, typed, [(2**64 + 1,), (3,)]):
        assert codec.encode_keys(keys) == [codec.encode_key(k) for k in keys]
    assert codec.encode_keys([]) == []


def test_passing_rows_through_stages_what_the_full_path_would() -> None:
    columns = ["id", "day", "amount", "note"]
    rows = [
        (Decimal("1.10"), date(2024, 2, 29), 3, "a\tb"),
        (Decimal("2"), date(2000, 1, 1), None, None),
    ]
    blob = codec.encode_rows(columns, rows)
    passed = codec.pass_through(blob, ["Id", "Day", "Amount", "Note"], key_width=2)
    assert passed is not None
    full = codec.encode_rows(
        ["Id", "Day", "Amount", "Note"],
        rows,
        quarantine=[],
        positions=[0, 1],
        source_keys=codec.encode_keys([r[:2] for r in rows]),
    )
    assert orjson.loads(passed) == orjson.loads(full)
    assert codec.decode_rows(passed)[1] == rows
    # a NULL key needs the transform's own path, which sets the row aside
    assert (
        codec.pass_through(codec.encode_rows(columns, [(None, *rows[0][1:])]), columns, 1) is None
    )
    assert codec.pass_through(codec.encode_rows(columns, []), columns, 1) is not None
    # rows the source refused (a malformed record) are set aside by the transform's own path
    refused = codec.encode_rows(columns, rows, malformed=[[1, "line 3: a stray quote"]])
    assert codec.pass_through(refused, columns, 1) is None
