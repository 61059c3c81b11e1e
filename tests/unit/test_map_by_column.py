"""Unit tests for the transform of an identity mapping, cast column by column
(etl_tasks/steps/transform._map_columns): the same target rows, positions, source keys
and quarantine as the row-by-row path, which it leaves every refused row to."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from etl_tasks.steps import transform
from etl_tasks.transforms.mapper import RowMapper
from etl_tasks.values.casts import cast_column, cast_to
from etl_tasks.values.path import ValuePath
from etl_tasks.values.types import ColumnType, Kind

COLUMNS = ["id", "n", "amount", "note"]
TYPES = [
    ColumnType("postgresql", Kind.INTEGER, "integer", precision=32),
    ColumnType("postgresql", Kind.INTEGER, "bigint", precision=64),
    ColumnType("postgresql", Kind.DECIMAL, "numeric(12,2)", precision=12, scale=2),
    ColumnType("postgresql", Kind.TEXT, "varchar(5)", length=5),
]


def _path(identity: bool) -> ValuePath:
    casts = tuple(None if i == 1 else cast_to(t) for i, t in enumerate(TYPES))  # n: same type
    columns = tuple(None if i == 1 else cast_column(t) for i, t in enumerate(TYPES))
    return ValuePath(RowMapper(tuple(COLUMNS), tuple, identity=identity), casts, columns)


def _rows(n: int = 200) -> list[tuple[Any, ...]]:
    return [(i, i * 7, Decimal(i) / 4, f"r{i}") for i in range(n)]


def _both(rows: list[tuple[Any, ...]], key_width: int = 1, **kw: Any) -> transform.Mapped:
    by_column = transform.map_rows(_path(True), COLUMNS, rows, key_width, **kw)
    by_row = transform.map_rows(_path(False), COLUMNS, rows, key_width, **kw)
    assert by_column.good == by_row.good
    assert [type(v) for r in by_column.good for v in r] == [type(v) for r in by_row.good for v in r]
    assert by_column.positions == by_row.positions
    assert by_column.source_keys == by_row.source_keys
    assert [(p, q.key, q.reason, q.row) for p, q in by_column.bad] == [
        (p, q.key, q.reason, q.row) for p, q in by_row.bad
    ]
    return by_column


def test_an_identity_mapping_of_good_rows_is_cast_by_column() -> None:
    # Given rows every cast accepts
    rows = _rows()
    # Then they are mapped column by column, as the row-by-row path maps them
    assert transform._map_columns(_path(True), rows, 1, lambda: None) is not None
    mapped = _both(rows)
    assert mapped.good[3] == (3, 21, Decimal("0.75"), "r3") and not mapped.bad


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param((5, 1, Decimal(1), "far too long"), id="refused-value"),
        pytest.param((None, 1, Decimal(1), "k"), id="null-key"),
        pytest.param((7, None, None, None), id="nulls-beside-the-key"),
    ],
)
def test_rows_a_cast_refuses_or_with_a_null_key_are_set_aside_as_row_by_row(
    bad: tuple[Any, ...],
) -> None:
    rows = _rows()
    rows[50] = bad
    _both(rows)


def test_rows_the_source_refused_and_a_composite_or_no_key() -> None:
    _both(_rows(), malformed={3: "unreadable"})
    _both(_rows(), key_width=2)
    assert _both(_rows(5), key_width=0).source_keys == [[]] * 5
    assert _both([]).good == []


def test_the_lease_is_looked_after_while_columns_are_cast() -> None:
    calls: list[int] = []
    transform.map_rows(_path(True), COLUMNS, _rows(), 1, lambda: calls.append(1))
    assert len(calls) == len(COLUMNS)
