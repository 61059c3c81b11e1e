"""Unit tests for etl_tasks.codec.encode_rows_kept: the rows a step hands on in memory are
exactly what decoding its staged blob gives, value for value and type for type."""

from __future__ import annotations

import enum
import math
import random
import struct
import uuid
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from etl_tasks import codec
from tests.unit.test_codec import BIG_INTS, SAMPLES

PARIS = ZoneInfo("Europe/Paris")


class Text(str):
    """A str subclass (a driver's own string type): JSON gives back a plain str."""


class Level(enum.IntEnum):
    LOW = 1


def assert_identical(want: Any, got: Any, where: str = "") -> None:
    """Same type and same value, recursively; floats, decimals and clocks by their text."""
    assert type(got) is type(want), f"{where}: {got!r} is not a {type(want).__name__}"
    if isinstance(want, list | tuple):
        assert len(got) == len(want), where
        for i, (w, g) in enumerate(zip(want, got, strict=True)):
            assert_identical(w, g, f"{where}[{i}]")
    elif isinstance(want, dict):
        assert list(got) == list(want), where
        for k in want:
            assert_identical(want[k], got[k], f"{where}.{k}")
    elif isinstance(want, float | Decimal):
        assert repr(got) == repr(want), where  # -0.0, NaN, exponents
    elif isinstance(want, datetime | time):
        assert repr(got) == repr(want), where  # tzinfo and fold included
        assert got.tzname() == want.tzname(), where
    else:
        assert got == want, where


def assert_kept_is_decoded(columns: list[str], rows: list[Any], **extra: Any) -> codec.Staged:
    blob, kept = codec.encode_rows_kept(columns, rows, **extra)
    assert blob == codec.encode_rows(columns, rows, **extra)  # the same blob is staged
    assert_identical(codec.decode_rows(blob), kept, "staged")
    return kept


@pytest.mark.parametrize("value", [*SAMPLES, *BIG_INTS])
def test_each_type_in_memory_is_what_its_blob_decodes_to(value: Any) -> None:
    assert_kept_is_decoded(["id", "v"], [(1, value), (2, None), (3, value)])


AWKWARD: list[Any] = [
    pytest.param([datetime(2024, 7, 1, 12, tzinfo=PARIS)], id="datetime-named-zone"),
    pytest.param([datetime(2024, 7, 1, tzinfo=timezone(timedelta(0), "GMT"))], id="named-utc"),
    pytest.param([datetime(2024, 10, 27, 2, 30, fold=1)], id="datetime-fold"),
    pytest.param([datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 1)], id="utc-and-naive"),
    pytest.param([time(12, tzinfo=PARIS)], id="time-named-zone"),
    pytest.param([time(1, 2, fold=1)], id="time-fold"),
    pytest.param([Text("a"), "b"], id="str-subclass"),
    pytest.param([Level.LOW, 2], id="int-enum"),
    pytest.param([True, 1, 1.0], id="bool-int-float"),
    pytest.param([{"a": (1, 2), "n": float("nan"), "t": datetime(2020, 1, 1)}], id="json-nested"),
    pytest.param([[1, (2, 3)], None], id="list-with-tuple"),
    pytest.param([memoryview(b"x"), None], id="memoryview-column"),
    pytest.param([bytearray(b"x")], id="bytearray-column"),
    pytest.param([b"x", memoryview(b"y")], id="bytes-and-memoryview"),
    pytest.param([2**64, 1, None], id="big-int-column"),
    pytest.param([-0.0, 0.0, float("inf"), float("nan")], id="float-specials"),
    pytest.param([Decimal("-0"), Decimal("sNaN"), Decimal("1E+2")], id="decimal-specials"),
]


@pytest.mark.parametrize("column", AWKWARD)
def test_columns_that_do_not_round_trip_are_handed_on_as_decoded(column: list[Any]) -> None:
    # Given a column whose values JSON would not give back as they are
    rows = [(i, v) for i, v in enumerate(column)]
    # When it is encoded and kept, Then the kept rows are the decoded ones, not the originals
    assert_kept_is_decoded(["id", "v"], rows)


def test_rows_that_are_not_tuples_come_back_as_tuples() -> None:
    # Given rows as lists (a driver's row type), of values that round trip
    kept = assert_kept_is_decoded(["a", "b"], [[1, "x"], [2, "y"]])
    # Then the kept rows are tuples, as decoding makes them
    assert kept[1] == [(1, "x"), (2, "y")]


def test_exact_columns_are_handed_on_without_copying_their_values() -> None:
    # Given rows of types that round trip exactly
    value = Decimal("12.340")
    rows = [(1, value, "text", date(2024, 1, 1), b"\x00")]
    _, (_, kept, _) = codec.encode_rows_kept(["a", "b", "c", "d", "e"], rows)
    # Then the very objects are handed on: nothing was decoded
    assert kept[0] is rows[0] and kept[0][1] is value


def test_extra_is_handed_on_as_decoded() -> None:
    extra = {"malformed": [(3, "bad")], "positions": [0, 2], "source_keys": [(1,), [Text("k")]]}
    kept = assert_kept_is_decoded(["a"], [(1,), (2,)], **extra)
    assert kept[2]["malformed"] == [[3, "bad"]]


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param(
            {"positions": [0, 2, 2**64 - 1], "source_keys": [[1, "a"], [2, None]]}, id="exact"
        ),
        pytest.param({"source_keys": [[1.5], [float("nan")]]}, id="nan-key"),
        pytest.param({"source_keys": [[1], [Text("a")]]}, id="str-subclass-key"),
        pytest.param({"source_keys": [[1], [1, 2]]}, id="ragged"),
        pytest.param({"source_keys": [[{"$": "dec", "v": "1.5"}]]}, id="tagged-key"),
        pytest.param({"source_keys": [[(1, 2)]], "quarantine": []}, id="tuple-in-key"),
        pytest.param({"positions": [], "source_keys": [[], []]}, id="empty"),
    ],
)
def test_positions_and_source_keys_are_handed_on_as_decoded(extra: dict[str, Any]) -> None:
    assert_kept_is_decoded(["a"], [(1,), (2,)], **extra)


def test_column_names_of_a_str_subclass_come_back_as_str() -> None:
    kept = assert_kept_is_decoded([Text("a")], [(1,)])
    assert type(kept[0][0]) is str


def test_empty_rows() -> None:
    assert assert_kept_is_decoded(["a", "b"], []) == (["a", "b"], [], {})


def test_random_floats_round_trip_bit_for_bit() -> None:
    # Given finite floats of every magnitude, from random bit patterns
    rnd = random.Random(7)
    floats = [struct.unpack("<d", rnd.randbytes(8))[0] for _ in range(20_000)]
    floats = [f for f in floats if math.isfinite(f)] + [5e-324, -5e-324, 2.2250738585072014e-308]
    # When kept as a raw column, Then they are handed on as they are, equal to the decoded ones
    _, kept = codec.encode_rows_kept(["f"], [(f,) for f in floats])
    assert_kept_is_decoded(["f"], [(f,) for f in floats])
    assert [r[0] for r in kept[1]] == floats


def test_uuid_and_timedelta_columns() -> None:
    rows = [(uuid.uuid4(), timedelta(days=-3, microseconds=7)) for _ in range(3)]
    assert_kept_is_decoded(["u", "td"], rows)
