"""An identity mapping whose values all come out of their casts unchanged stages the
extract's payload under the target's column names: decoded, exactly what mapping the
rows and encoding them again stages, and what the load is handed in memory."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest

from etl_tasks import codec
from etl_tasks.steps import transform
from etl_tasks.transforms.mapper import RowMapper
from etl_tasks.values.casts import cast_column, cast_to
from etl_tasks.values.path import ValuePath
from etl_tasks.values.types import ColumnType, Kind

SOURCE = ["id", "day", "n", "note"]
TARGET = ("tid", "tday", "tn", "tnote")
TYPES = [
    ColumnType("postgresql", Kind.INTEGER, "integer", precision=32),
    None,  # same type as the source's: no cast
    ColumnType("postgresql", Kind.INTEGER, "bigint", precision=64),
    ColumnType("postgresql", Kind.TEXT, "varchar(6)", length=6),
]


def _path() -> ValuePath:
    casts = tuple(None if t is None else cast_to(t) for t in TYPES)
    columns = tuple(None if t is None else cast_column(t) for t in TYPES)
    return ValuePath(RowMapper(TARGET, tuple, identity=True), casts, columns)


def _rows(n: int = 50) -> list[tuple[Any, ...]]:
    return [(i, dt.date(2024, 1, 1) + dt.timedelta(i), i * 3, f"r{i}") for i in range(n)]


def _mapped_and_encoded(rows: list[tuple[Any, ...]], key_width: int) -> codec.Staged:
    mapped = transform.map_rows(_path(), SOURCE, rows, key_width)
    assert not mapped.bad
    blob = codec.encode_rows(
        TARGET,
        mapped.good,
        quarantine=[],
        positions=mapped.positions,
        source_keys=mapped.source_keys,
    )
    return codec.decode_rows(blob)


@pytest.mark.parametrize("key_width", [1, 2], ids=["int-key", "int-and-date-key"])
def test_relabelled_payload_decodes_as_the_mapped_one_and_is_what_is_kept(key_width: int) -> None:
    rows = _rows()
    rows[3] = (3, dt.date(2024, 1, 4), None, None)  # NULLs beside the key pass too
    blob = codec.encode_rows(SOURCE, rows)
    assert transform._unchanged(_path(), rows)
    found = codec.pass_through_kept(blob, TARGET, key_width)
    assert found is not None
    out, columns, extra = found
    assert codec.decode_rows(out) == _mapped_and_encoded(rows, key_width)
    assert codec.decode_rows(out) == (columns, rows, extra)  # what the load is handed


@pytest.mark.parametrize(
    "changed",
    [
        pytest.param((1, dt.date(2024, 1, 1), True, "r"), id="a-bool-into-bigint"),
        pytest.param((1, dt.date(2024, 1, 1), Decimal(2), "r"), id="a-decimal-cast-to-int"),
        pytest.param((1, dt.date(2024, 1, 1), 2, "far too long"), id="refused"),
        pytest.param((2**40, dt.date(2024, 1, 1), 2, "r"), id="out-of-range"),
    ],
)
def test_a_value_its_cast_would_change_or_refuse_keeps_the_mapped_path(
    changed: tuple[Any, ...],
) -> None:
    rows = _rows()
    rows[7] = changed
    assert not transform._unchanged(_path(), rows)
