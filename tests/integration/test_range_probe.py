"""Whether a chunk's key range is empty in a PostgreSQL target (COPY may then go straight
into the table): one statement per shape of range, its bounds bound as parameters, asked
for every chunk's load."""

from __future__ import annotations

import itertools
from typing import Any

from etl_tasks.connectors.sql.engines import create_sql_engine
from etl_tasks.connectors.sql.queries import bound_values
from etl_tasks.connectors.sql.target import SqlTarget
from etl_tasks.values.catalog import describe
from tests.integration.fidelity_support import pg_exec

ROWS = [(1, "x"), (2, "y"), (2, "yy"), (3, "z")]
BOUNDS: list[list[Any] | None] = [
    None,
    [0, "a"],
    [1, "x"],
    [2, "a"],
    [2, "y"],
    [2, "yy"],
    [3, "z"],
    [4, "a"],
]


def _expected(lower: list[Any] | None, upper: list[Any] | None) -> bool:
    return not any(
        (lower is None or tuple(lower) < row) and (upper is None or row <= tuple(upper))
        for row in ROWS
    )


def test_a_range_is_empty_exactly_when_no_key_of_the_table_falls_in_it(pg_url: str) -> None:
    # Given a table with a two-column key
    pg_exec(pg_url, "CREATE TABLE t (a integer, b text, note text, PRIMARY KEY (a, b))")
    for a, b in ROWS:
        pg_exec(pg_url, "INSERT INTO t VALUES (%s, %s, 'n')", (a, b))
    engine = create_sql_engine(pg_url)
    target = SqlTarget(engine, "t", [], "upsert", identity_key=True, describe=_describe)
    try:
        with engine.connect() as conn:
            # Then every range, open or closed on each side, is judged as the keys say
            for lower, upper in itertools.product(BOUNDS, BOUNDS):
                got = target.range_is_empty(conn, (lower, upper))
                assert got == _expected(lower, upper), (lower, upper)
        # and the four shapes of range took four statements, whatever the bounds
        assert len(target._empty_probes) == 4
    finally:
        engine.dispose()


def _describe(engine: Any, name: str) -> Any:
    with engine.connect() as conn:
        return describe(conn, name)


def test_a_bound_the_key_cannot_hold_is_never_called_empty(pg_url: str) -> None:
    # Given a chunk bound the target's integer key cannot hold (a stray text in the source)
    bound = ["not a number", "x"]
    pg_exec(pg_url, "CREATE TABLE t (a integer, b text, PRIMARY KEY (a, b))")
    engine = create_sql_engine(pg_url)
    target = SqlTarget(engine, "t", [], "upsert", identity_key=True, describe=_describe)
    try:
        with engine.connect() as conn:
            # Then the range is not called empty: the staged path decides
            assert not target.range_is_empty(conn, (bound, None))
    finally:
        engine.dispose()


def test_the_probe_is_an_index_lookup_in_a_table_without_statistics(pg_url: str) -> None:
    # Given a table with a two-column key filled since its statistics were taken (a
    # target this migration created: autovacuum has not analyzed it yet)
    pg_exec(
        pg_url,
        "CREATE TABLE lines (invoice integer, line integer, note text, PRIMARY KEY (invoice, line))"
        " WITH (autovacuum_enabled = false)",
    )
    pg_exec(pg_url, "INSERT INTO lines SELECT i / 3, i % 3, 'n' FROM generate_series(1, 50000) i")
    engine = create_sql_engine(pg_url)
    target = SqlTarget(engine, "lines", [], "upsert", identity_key=True, describe=_describe)
    try:
        with engine.connect() as conn:
            for lower, upper in [([20000, 0], [20100, 0]), (None, [0, 0]), ([16666, 2], None)]:
                # When a chunk's load asks whether its range (empty here) holds a key
                assert target.range_is_empty(conn, (lower, upper))
                # Then PostgreSQL goes down the key's index, never through the table
                stmt = target._empty_probes[(lower is not None, upper is not None)]
                compiled = stmt.compile(dialect=conn.dialect)
                params = {**compiled.params, **bound_values(lower, upper)}
                plan = conn.exec_driver_sql(f"EXPLAIN {compiled}", params).scalars().all()
                assert not any("Seq Scan" in line for line in plan), plan
                assert any("Index" in line for line in plan), plan
    finally:
        engine.dispose()
