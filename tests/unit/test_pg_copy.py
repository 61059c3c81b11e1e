"""Unit tests for etl_tasks.connectors.sql.pg_copy: rows as PostgreSQL COPY text format."""

from __future__ import annotations

import io
import re
import uuid
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any

import orjson
import pytest

from etl_tasks.connectors.sql.pg_copy import copy_into, copy_text

# --- helpers -------------------------------------------------------------------------------

_UNESCAPE = {"\\": "\\", "t": "\t", "n": "\n", "r": "\r"}


def copy_lines(rows: list[tuple[Any, ...]]) -> list[str]:
    """The COPY stream split on its record separator (only ``\\n`` ends a record)."""
    text = copy_text(rows).read()
    assert text == "" or text.endswith("\n")
    return text.split("\n")[:-1]


def field(value: Any) -> str:
    """The COPY text of one value in a one-column row."""
    (line,) = copy_lines([(value,)])
    return line


def parse_field(text: str) -> str | None:
    """What PostgreSQL reads back from one field (the escapes copy_text emits)."""
    if text == "\\N":
        return None
    return re.sub(r"\\(.)", lambda m: _UNESCAPE[m.group(1)], text)


def parse_stream(rows: list[tuple[Any, ...]]) -> list[list[str | None]]:
    return [[parse_field(f) for f in line.split("\t")] for line in copy_lines(rows)]


# --- escaping ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("plain", "plain"),
        ("", ""),
        ("back\\slash", "back\\\\slash"),
        ("a\tb", "a\\tb"),
        ("a\nb", "a\\nb"),
        ("a\rb", "a\\rb"),
        ("\r\n", "\\r\\n"),
        ("\\N", "\\\\N"),
        ("\\t", "\\\\t"),
        ("héllo ☃", "héllo ☃"),
    ],
    ids=[
        "plain",
        "empty",
        "backslash",
        "tab",
        "newline",
        "cr",
        "crlf",
        "literal-N",
        "literal-t",
        "unicode",
    ],
)
def test_text_is_escaped(value: str, expected: str) -> None:
    assert field(value) == expected


@pytest.mark.parametrize(
    "value",
    ["", "\\", "\\\\N", "a\tb\nc\rd\\e", "\\N", "trailing\\", "\t\t", "x\x0b\x1c\u2028y"],
)
def test_escaped_text_reads_back_unchanged(value: str) -> None:
    assert parse_stream([(value, "next")]) == [[value, "next"]]


def test_none_is_null_and_distinct_from_empty_text() -> None:
    assert field(None) == "\\N"
    assert parse_stream([(None, "", "\\N")]) == [[None, "", "\\N"]]


# --- formatting of other types -------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, "t"),
        (False, "f"),
        (0, "0"),
        (-7, "-7"),
        (2**70, str(2**70)),
        (1.5, "1.5"),
        (0.1, "0.1"),
        (-0.0, "-0.0"),
        (float("nan"), "NaN"),
        (float("inf"), "Infinity"),
        (float("-inf"), "-Infinity"),
        (Decimal("1.50"), "1.50"),
        (Decimal("-0.00"), "-0.00"),
        (Decimal("1E+30"), "1E+30"),
        (Decimal("NaN"), "NaN"),
        (date(2024, 2, 29), "2024-02-29"),
        (datetime(2024, 1, 2, 3, 4, 5), "2024-01-02T03:04:05"),
        (datetime(2024, 1, 2, 3, 4, 5, 600), "2024-01-02T03:04:05.000600"),
        (datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC), "2024-01-02T03:04:05+00:00"),
        (datetime(2024, 1, 2, tzinfo=timezone(timedelta(hours=-5))), "2024-01-02T00:00:00-05:00"),
        (time(1, 2, 3), "01:02:03"),
        (timedelta(days=1, seconds=1), "1 days 1.000000 seconds"),
        (timedelta(days=-1, microseconds=5), "-1 days 0.000005 seconds"),
        (uuid.UUID(int=1), "00000000-0000-0000-0000-000000000001"),
    ],
    ids=repr,
)
def test_value_formatting(value: Any, expected: str) -> None:
    assert field(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"", "\\\\x"),
        (b"\x00\xff\n", "\\\\x00ff0a"),
        (bytearray(b"\x01\x02"), "\\\\x0102"),
        (memoryview(b"\xab"), "\\\\xab"),
    ],
    ids=["empty", "bytes", "bytearray", "memoryview"],
)
def test_binary_is_bytea_hex(value: Any, expected: str) -> None:
    assert field(value) == expected
    assert parse_field(expected) == "\\x" + bytes(value).hex(), "PostgreSQL reads bytea hex input"


@pytest.mark.parametrize(
    "value", [{"a": "x\ty", "b": [1, None]}, ["\\", "\n", 2]], ids=["dict", "list"]
)
def test_json_values_read_back_as_their_json(value: Any) -> None:
    (row,) = parse_stream([(value,)])

    assert row[0] is not None
    assert orjson.loads(row[0]) == value


def test_unknown_types_use_their_escaped_str() -> None:
    class Label(str):
        pass

    class Thing:
        def __str__(self) -> str:
            return "thing\twith\ntabs"

    assert field(Label("a\tb")) == "a\\tb"
    assert field(Thing()) == "thing\\twith\\ntabs"


# --- rows and lines ------------------------------------------------------------------------


def test_one_line_per_row_with_tab_separated_fields() -> None:
    # Given rows whose text holds every separator COPY knows
    rows = [(1, "a\nb", None), (2, "c\td", True), (3, "e\r\n", False)]

    # When they become one COPY stream
    lines = copy_lines(rows)

    # Then each row is exactly one line of three fields, and reads back as it was
    assert len(lines) == 3
    assert all(line.count("\t") == 2 for line in lines)
    assert parse_stream(rows) == [["1", "a\nb", None], ["2", "c\td", "t"], ["3", "e\r\n", "f"]]


def test_no_rows_is_an_empty_stream() -> None:
    assert copy_text([]).read() == ""


def test_stream_is_rewound_for_reading() -> None:
    buf = copy_text([(1,), (2,)])

    assert buf.tell() == 0
    assert buf.read() == "1\n2\n"


def test_copy_into_sends_the_stream_through_copy_expert() -> None:
    # Given a DB-API connection that records what it is asked to run
    sent: list[tuple[str, str]] = []

    class Cursor:
        def __enter__(self) -> Cursor:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

        def copy_expert(self, sql: str, stream: io.StringIO) -> None:
            sent.append((sql, stream.read()))

    class Connection:
        def cursor(self) -> Cursor:
            return Cursor()

    # When rows are copied into a table
    copy_into(Connection(), '"public"."Customer"', '"Id", "Name"', [(1, "Ann"), (2, None)])

    # Then one COPY statement ran with the rows as its input
    assert sent == [('COPY "public"."Customer" ("Id", "Name") FROM STDIN', "1\tAnn\n2\t\\N\n")]


def test_columns_spelled_at_once_read_as_each_value_spelled_alone() -> None:
    from enum import StrEnum

    from etl_tasks.connectors.sql.pg_copy import copy_text
    from etl_tasks.values.encoders import pg_copy_field

    class Colour(StrEnum):
        RED = "r\ted"

    rows = [
        (1, "a\tb\\c\nd\re", True, None, 2**70, Colour.RED, 1.5),
        (None, None, False, "x", -3, "plain", float("nan")),
        (-(2**63), "", None, 7, None, None, None),
    ]
    expected = "".join("\t".join(pg_copy_field(v) for v in row) + "\n" for row in rows)
    assert copy_text(rows).getvalue() == expected
    assert copy_text([]).getvalue() == ""
