"""A pass-through read compiles its COPY select once per shape (RangeQuery.compiled_range)
and spells each part's bounds into it: the very SQL that compiling the part's own select
gives.

Checked against the select compiled afresh with its values (what every part used to
cost), for each shape of bounds, a two-column key, and a stream whose filters include
an expanding ``in`` list and text that needs quoting.
"""

from __future__ import annotations

from typing import Any

import psycopg2
import pytest
from sqlalchemy import Column, Integer, MetaData, Table, Text

from etl_tasks.connectors.sql import pg_native
from etl_tasks.connectors.sql.engines import create_sql_engine
from etl_tasks.connectors.sql.queries import RangeQuery
from etl_tasks.spec import Filter

TABLE = Table("t", MetaData(), Column("a", Integer), Column("b", Text), Column("note", Text))
FILTERS = [
    Filter(column="a", op="in", value=[1, 2, 3]),
    Filter(column="note", op="!=", value='it\'s\\ "quoted"'),
]
BOUNDS: list[tuple[Any, Any]] = [
    (None, None),
    ((5, "x"), None),
    (None, (9, "it's")),
    ((5, "x"), (9, "y'z")),
]


@pytest.mark.parametrize("where", [[], FILTERS], ids=["no-filter", "filters"])
def test_each_part_s_sql_is_the_select_compiled_with_its_own_values(
    pg_url: str, where: list[Filter]
) -> None:
    dialect = create_sql_engine(pg_url).dialect
    query = RangeQuery(TABLE, ["a", "b"], ["a", "b", "note"], where)
    conn = psycopg2.connect(pg_url)
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE IF NOT EXISTS t (a integer, b text, note text)")
            for _ in range(2):  # the second time from what the first compiled
                for bounds in BOUNDS:
                    for limit in (1000, 4000):
                        fresh = query.select_range(*bounds).limit(limit)
                        expected = pg_native._literal_sql(cur, fresh, dialect)
                        got = pg_native._part_sql(cur, query, dialect, bounds, limit)
                        assert got == expected
                        cur.execute(f"EXPLAIN {got}")  # and PostgreSQL takes it
            assert len(query._compiled) == len(BOUNDS)  # each shape compiled once
    finally:
        conn.close()
