"""A cast over a whole column gives what casting each value gives, or refuses the same.

Its fast path hands back the column's own values when their exact types show that every
value would come back unchanged: a value that would not (a bool in an integer column, an
int out of range, text too long or holding a NUL for PostgreSQL, a subclass) must take the
value-by-value path.
"""

from __future__ import annotations

import enum
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from etl_tasks.errors import BadRowError
from etl_tasks.values.casts import cast_column, cast_to
from etl_tasks.values.types import ColumnType, Kind

INT32 = ColumnType("postgresql", Kind.INTEGER, "integer", precision=32)
UINT8 = ColumnType("mysql", Kind.INTEGER, "tinyint unsigned", precision=8, unsigned=True)
CHAR3 = ColumnType("postgresql", Kind.TEXT, "char(3)", length=3, fixed=True)
MYSQL_TEXT = ColumnType("mysql", Kind.TEXT, "text")


class Colour(enum.IntEnum):
    RED = 1


class Label(str):
    pass


def _each(target: ColumnType, values: list[Any]) -> list[Any] | str:
    try:
        return list(map(cast_to(target), values))
    except BadRowError as exc:
        return exc.reason


def _whole(target: ColumnType, values: list[Any]) -> list[Any] | str:
    try:
        return list(cast_column(target)(values))
    except BadRowError as exc:
        return exc.reason


def _same(target: ColumnType, values: list[Any]) -> None:
    each, whole = _each(target, values), _whole(target, values)
    assert whole == each
    if isinstance(each, list):
        assert [type(v) for v in whole] == [type(v) for v in each]


@pytest.mark.parametrize(
    ("target", "values"),
    [
        (INT32, [1, None, -(2**31), 2**31 - 1]),
        (INT32, [1, True, None]),  # a bool becomes 1, an int
        (INT32, [1, Colour.RED]),  # an int subclass becomes a plain int
        (INT32, [1, 2**31]),  # out of range: refused
        (UINT8, [0, 255, -1]),
        (INT32, [1, "7", 2.0]),  # other kinds take the per-value path
        (INT32, [None, None]),
        (INT32, []),
        (CHAR3, ["abc", None, ""]),
        (CHAR3, ["abcd"]),  # too long
        (CHAR3, ["a\x00"]),  # PostgreSQL text cannot hold a NUL
        (MYSQL_TEXT, ["a\x00"]),  # MariaDB's can
        (CHAR3, [Label("ab")]),  # a subclass becomes a plain str
        (CHAR3, [12, "x"]),
    ],
)
def test_a_column_casts_as_its_values_do(target: ColumnType, values: list[Any]) -> None:
    _same(target, values)


def test_a_column_that_passes_whole_is_handed_back_without_a_copy() -> None:
    values = [1, 2, None]
    assert cast_column(INT32)(values) is values


_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.text(max_size=5),
    st.floats(allow_nan=False),
)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([INT32, UINT8, CHAR3, MYSQL_TEXT]),
    st.lists(_VALUES, max_size=12),
)
def test_any_column_casts_as_its_values_do(target: ColumnType, values: list[Any]) -> None:
    _same(target, values)
