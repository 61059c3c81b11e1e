"""A SQLite source reads a range on the driver's own cursor: the very rows SQLAlchemy
would give, and SQLAlchemy's path wherever a bound value needs it.

Every column a read selects is untyped, so the driver's rows are the values as stored;
its select is compiled once per shape of bounds, a spec's filters (an ``in`` list
rendered one parameter per value) included, and a read that fails is judged like any
other.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Column, DateTime, Integer, MetaData, Table, create_engine

from etl_tasks.connectors.base import Unpaced
from etl_tasks.connectors.sql import source as source_module
from etl_tasks.connectors.sql.queries import RangeQuery
from etl_tasks.connectors.sql.source import SqlSource
from etl_tasks.errors import PermanentError
from etl_tasks.spec import Filter

ROWS: list[tuple[Any, ...]] = [
    (1, "a", 1.5, b"\x00\xff", None),
    (2, "ß\t\n", -0.0, None, "2024-02-29 12:00:00"),
    (3, None, 1e300, b"", "2024-03-01 00:00:00"),
    (4, "x" * 300, None, b"z", None),
    (5, "17", 2**62, None, "1999-12-31 23:59:59"),  # stored as a float: REAL affinity
]


def _file(tmp_path: Path) -> str:
    path = tmp_path / "legacy.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, w REAL, b BLOB, at TEXT)"
        )
        conn.executemany("INSERT INTO items VALUES (?, ?, ?, ?, ?)", ROWS)
    return f"sqlite:///{path}"


def _source(url: str, where: list[Filter] | None = None, typed_at: bool = False) -> SqlSource:
    at = Column("at", DateTime) if typed_at else Column("at")
    table = Table("items", MetaData(), Column("id", Integer, primary_key=True),
                  Column("name"), Column("w"), Column("b"), at)  # fmt: skip
    names = ["id", "name", "w", "b", "at"]
    return SqlSource(create_engine(url), RangeQuery(table, ["id"], names, where or []), ["id"], {})


def _read(source: SqlSource, lower: Any = None, upper: Any = None) -> list[tuple[Any, ...]]:
    batch, cut = source.read_range(lower, upper, Unpaced())
    assert cut is None
    return batch.rows


def _by_driver(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Records, for each read, whether it ran on the driver's cursor."""
    seen: list[bool] = []
    real = source_module._driver_cursor

    def spy(conn: Any, *args: Any) -> Any:
        cursor = real(conn, *args)
        seen.append(cursor is not None)
        return cursor

    monkeypatch.setattr(source_module, "_driver_cursor", spy)
    return seen


def test_the_driver_gives_every_value_and_its_type_as_sqlalchemy_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = _file(tmp_path)
    seen = _by_driver(monkeypatch)
    by_driver = [_read(_source(url)), _read(_source(url), (2,), (4,))]
    assert seen == [True, True]
    monkeypatch.setattr(source_module, "_driver_cursor", lambda *_: None)
    by_sqlalchemy = [_read(_source(url)), _read(_source(url), (2,), (4,))]
    assert by_driver == by_sqlalchemy
    types = [[type(v) for r in rows for v in r] for rows in by_driver]
    assert types == [[type(v) for r in rows for v in r] for rows in by_sqlalchemy]
    assert [r[0] for r in by_driver[0]] == [1, 2, 3, 4, 5]
    assert [r[0] for r in by_driver[1]] == [3, 4]  # lower exclusive, upper inclusive
    assert by_driver[0][1][1:4] == ("ß\t\n", -0.0, None) and by_driver[0][0][3] == b"\x00\xff"


@pytest.mark.parametrize(
    ("where", "typed_at", "expected"),
    [
        ([Filter(column="id", op="in", value=[1, 3, 5])], False, [ROWS[0], ROWS[2], ROWS[4]]),
        ([Filter(column="at", op=">=", value="2024-03-01")], True, [ROWS[2]]),  # bound raw
        ([Filter(column="name", op="=", value="17")], False, [ROWS[4]]),
    ],
    ids=["in-list", "typed-column", "plain-filter"],
)
def test_filters_read_the_same_rows_on_either_path(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    where: list[Filter],
    typed_at: bool,
    expected: list[tuple[Any, ...]],
) -> None:
    url = _file(tmp_path)
    seen = _by_driver(monkeypatch)
    assert _read(_source(url, where, typed_at)) == expected
    assert seen == [True]
    monkeypatch.setattr(source_module, "_driver_cursor", lambda *_: None)
    assert _read(_source(url, where, typed_at)) == expected  # as SQLAlchemy reads them


def test_a_read_the_driver_refuses_is_judged_like_any_other(tmp_path: Path) -> None:
    url = _file(tmp_path)
    with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
        conn.execute("DROP TABLE items")
    with pytest.raises(PermanentError):
        _read(_source(url))
