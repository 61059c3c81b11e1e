"""A source's estimate of a stream's rows, behind the progress and ETA a migration shows:
where no statistics say it, a count that stops at ``COUNT_CAP`` (a table of a hundred
million rows must not hold up a migration's start), carried on by the key's spread when
the count reached the cap."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import MetaData, Table, create_engine

from etl_tasks.connectors.sql import source as source_module
from etl_tasks.connectors.sql.queries import RangeQuery
from etl_tasks.connectors.sql.source import SqlSource


def _table(tmp_path: Path, name: str, ddl: str, rows: list[tuple[Any, ...]]) -> str:
    path = tmp_path / f"{name}.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute(ddl)
        marks = ", ".join("?" for _ in rows[0])
        conn.executemany(f"INSERT INTO {name} VALUES ({marks})", rows)
    return f"sqlite:///{path}"


def _estimate(url: str, name: str, key: list[str]) -> int | None:
    engine = create_engine(url)
    try:
        table = Table(name, MetaData(), autoload_with=engine)
        query = RangeQuery(table, key, [c.name for c in table.c], [])
        return SqlSource(engine, query, key, {}).estimate_rows()
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("ddl", "rows", "key", "expected"),
    [
        # serial keys with every seventh deleted: 8,572 rows
        (
            "CREATE TABLE t (id INTEGER PRIMARY KEY, note TEXT)",
            [(i, "n") for i in range(1, 10_001) if i % 7],
            ["id"],
            8572,
        ),
        # an invoice's lines under its number: three to an invoice, 9,000 rows
        (
            "CREATE TABLE t (invoice INTEGER, line INTEGER, PRIMARY KEY (invoice, line))",
            [(i // 3, i % 3) for i in range(9000)],
            ["invoice", "line"],
            9000,
        ),
    ],
)
def test_a_count_that_reaches_its_cap_is_carried_on_by_the_key_s_spread(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    ddl: str,
    rows: list[tuple[Any, ...]],
    key: list[str],
    expected: int,
) -> None:
    # Given a table larger than the count a source estimate stops at
    monkeypatch.setattr(source_module, "COUNT_CAP", 1000)
    url = _table(tmp_path, "t", ddl, rows)
    # When the stream's rows are estimated
    estimate = _estimate(url, "t", key)
    # Then they are as many as the rows before the cap say, not the cap
    assert estimate is not None and abs(estimate - expected) <= expected * 0.02, estimate


def test_a_count_that_reaches_its_cap_on_a_text_key_is_the_cap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a table larger than the cap whose key is text: no spread to go by
    monkeypatch.setattr(source_module, "COUNT_CAP", 1000)
    url = _table(
        tmp_path, "t", "CREATE TABLE t (sku TEXT PRIMARY KEY)", [(f"s{i:05}",) for i in range(3000)]
    )
    # Then the estimate is the cap: at least that many (planning finds the rest)
    assert _estimate(url, "t", ["sku"]) == 1000
    # And a table under the cap is counted exactly
    monkeypatch.setattr(source_module, "COUNT_CAP", 5000)
    assert _estimate(url, "t", ["sku"]) == 3000
