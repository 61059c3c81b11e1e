"""The step budget holds: steps stop at their deadline, split their chunk, and nothing is lost."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, text

from etl_tasks.budget import (
    CHUNK_BYTES,
    GROWN_CHUNK_ROWS,
    GROWN_NATIVE_CHUNK_ROWS,
    ROW_BYTES,
    TEXT_WEIGHT,
    VALUE_BYTES,
    largest_chunk,
    next_chunk_rows,
    row_bytes,
)
from etl_tasks.connectors.base import Batch, Native, NativePart
from etl_tasks.connectors.sql.engines import create_sql_engine
from etl_tasks.connectors.sql.ledger import LEDGER
from etl_tasks.settings import Settings
from etl_tasks.state.models import Chunk, Stream
from etl_tasks.views import migration_view
from tests.checks import assert_migrated
from tests.data import bad_lines, build_source, slow_table, spec_for, submit
from tests.harness import Driver


def _chunks(driver: Driver, mid: str) -> list[Chunk]:
    with driver.rt.db.session() as s:
        return list(s.scalars(select(Chunk).where(Chunk.migration_id == mid)))


def test_extract_stops_at_its_deadline_and_splits_the_chunk(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    # Given a budget too small for even one sub-batch (reading 1,000 rows takes longer)
    driver = Driver(make_settings(step_budget_s=0.0001))
    source = f"sqlite:///{tmp_path / 'legacy.db'}"
    build_source(source, customers=6000, orders=1500, bad_every=23)
    spec = spec_for(source, f"sqlite:///{tmp_path / 'cloud.db'}", chunk_rows=5000)
    # When it runs
    mid = submit(driver.rt.db, driver.publisher, spec)
    driver.run_to_end(mid)
    # Then extracts stopped after a sub-batch, the chunks were split, and everything arrived
    chunks = _chunks(driver, mid)
    assert max(c.rows_in or 0 for c in chunks) <= 1000
    assert len(chunks) > 6000 // 1000
    assert_migrated(
        driver.rt.db,
        mid,
        spec,
        expected_bad={"Customers": 0, "order_lines": bad_lines(1500, 3, 23)},
    )
    # And the streams' chunk size came down towards the budget
    with driver.rt.db.session() as s:
        assert all(st.chunk_rows < 5000 for st in s.scalars(select(Stream)))
    driver.close()


def _slow_order_lines(pg_url: str, statement_s: float, check: str = "") -> None:
    """The order_lines target table, where every write statement takes ``statement_s``."""
    constraint = f", CHECK ({check})" if check else ""
    columns = (
        '"OrderId" integer, "LineNo" integer, sku text, qty bigint, price numeric, '
        f'PRIMARY KEY ("OrderId", "LineNo"){constraint}'
    )
    slow_table(pg_url, statement_s, "order_lines", columns)


def test_a_slow_target_makes_loads_stop_and_split(
    make_settings: Callable[..., Settings], tmp_path: Path, pg_url: str
) -> None:
    # Given a target where every write statement takes 0.2 s, and a 0.5 s step budget
    _slow_order_lines(pg_url, 0.2)
    driver = Driver(make_settings(step_budget_s=0.5))
    source = f"sqlite:///{tmp_path / 'legacy.db'}"
    build_source(source, customers=10, orders=2500, bad_every=31)
    spec = spec_for(source, pg_url, chunk_rows=5000)
    spec["streams"] = spec["streams"][1:]
    spec["streams"][0]["create_target"] = False
    # When it runs
    mid = submit(driver.rt.db, driver.publisher, spec)
    driver.run_to_end(mid)
    # Then loads were cut at their deadline (the ledger says where), and nothing was lost
    engine = create_sql_engine(pg_url)
    with engine.connect() as c:
        cuts = c.scalar(
            select(func.count()).select_from(LEDGER).where(LEDGER.c.cut_key.is_not(None))
        )
    engine.dispose()
    assert cuts and cuts > 0
    assert all((c.load_ms or 0) < 1500 for c in _chunks(driver, mid))
    assert_migrated(driver.rt.db, mid, spec, expected_bad={"order_lines": bad_lines(2500, 3, 31)})
    driver.close()


def test_a_load_stops_at_its_deadline_inside_a_bisection(
    make_settings: Callable[..., Settings], tmp_path: Path, pg_url: str
) -> None:
    # Given a slow target (0.1 s a statement) that refuses scattered rows: finding each
    # takes about 20 statements of bisection, far beyond a 0.5 s step budget
    _slow_order_lines(pg_url, 0.1, check="sku <> 'SKU-013' OR \"OrderId\" > 200")
    driver = Driver(make_settings(step_budget_s=0.5))
    source = f"sqlite:///{tmp_path / 'legacy.db'}"
    build_source(source, customers=10, orders=400)
    spec = spec_for(source, pg_url, chunk_rows=5000)
    spec["streams"] = spec["streams"][1:]
    spec["streams"][0]["create_target"] = False
    # When it runs
    mid = submit(driver.rt.db, driver.publisher, spec)
    driver.run_to_end(mid)
    # Then no load overran the deploy-latency goal (budget + 1.5 s: a warm shutdown waits
    # for the step in hand), every refused row was quarantined once, and the rest arrived
    loads = [c.load_ms or 0 for c in _chunks(driver, mid)]
    assert max(loads) < 500 + 1500, loads
    refused = sum(1 for o in range(1, 201) for n in range(1, 4) if (o * 10 + n) % 97 == 13)
    assert refused >= 5
    assert_migrated(driver.rt.db, mid, spec, expected_bad={"order_lines": refused})
    driver.close()


def test_next_chunk_rows_moves_towards_the_budget() -> None:
    # 1000 rows took 4 s with a 2 s budget: aim for half the budget, move halfway
    assert next_chunk_rows(1000, 1000, 4000, 2.0, 5000) == (1000 + 250) // 2
    # fast steps grow the size, at most doubling, never above the spec's chunk_rows
    assert next_chunk_rows(1000, 1000, 10, 2.0, 5000) == 2000
    assert next_chunk_rows(4000, 4000, 10, 2.0, 5000) == 5000
    assert next_chunk_rows(1, 1, 100_000, 2.0, 5000) == 1
    assert next_chunk_rows(700, 0, 0, 2.0, 5000) == 700


def test_the_largest_chunk_is_the_spec_s_or_what_the_rows_form_allows() -> None:
    assert largest_chunk(5000, given=True, native=True) == 5000
    assert largest_chunk(5000, given=False, native=False) == GROWN_CHUNK_ROWS
    assert largest_chunk(5000, given=False, native=True) == GROWN_NATIVE_CHUNK_ROWS
    # text held as it is (a pass-through chunk) may grow larger than rows held as values
    assert GROWN_NATIVE_CHUNK_ROWS > GROWN_CHUNK_ROWS > 5000
    # and no chunk, given or grown, weighs more than a chunk may take of a worker's memory
    assert largest_chunk(5000, given=True, native=True, weight=4096) == CHUNK_BYTES // 4096
    assert largest_chunk(5000, given=False, native=True, weight=10) == GROWN_NATIVE_CHUNK_ROWS


def test_a_row_weighs_its_text_twice_and_its_values_as_python_objects() -> None:
    native = Native(
        "pg_copy_text", [NativePart(b"x" * 600, 3, [3]), NativePart(b"y" * 400, 2, [5])], {}
    )
    assert row_bytes(Batch(["id", "s"], [], native=native)) == TEXT_WEIGHT * 1000 / 5
    parsed = Batch(["id", "s", "b"], [(1, "abc", b"xy")] * 500)
    assert row_bytes(parsed) == ROW_BYTES + 3 * VALUE_BYTES + TEXT_WEIGHT * (3 + 2)
    assert row_bytes(Batch(["id"], [])) is None


def test_a_load_cut_never_splits_keys_the_source_finds_equal(
    make_settings: Callable[..., Settings], mariadb_url: str, pg_url: str
) -> None:
    # Given a MariaDB source whose key is not unique and whose collation finds 'm', 'M' and
    # 'm ' one key, in one run of 2400 rows, and a slow target that makes loads overrun
    engine = create_sql_engine(mariadb_url)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE notes (k VARCHAR(10) COLLATE utf8mb4_general_ci NOT NULL, n INT, KEY (k))"
        )
        variants = ["m", "M", "m "]
        rows = [{"k": variants[i % 3], "n": i} for i in range(2400)]
        rows += [{"k": "z", "n": 10_000 + i} for i in range(100)]
        conn.execute(text("INSERT INTO notes (k, n) VALUES (:k, :n)"), rows)
    engine.dispose()
    slow_table(pg_url, 0.2, "notes", "k text, n integer")
    driver = Driver(make_settings(step_budget_s=0.5))
    spec = {
        "name": "runs",
        "source": {"url": mariadb_url},
        "target": {"url": pg_url},
        "streams": [
            {"source_table": "notes", "target_table": "notes", "key": ["k"], "write": "insert"}
        ],
    }
    # When it runs
    mid = submit(driver.rt.db, driver.publisher, spec)
    driver.run_to_end(mid)
    # Then every row arrived: a load that overran did not cut between 'm' and 'M' (the rest
    # of the chunk would start after 'm', where the source puts every 'M' too)
    target = create_sql_engine(pg_url)
    with target.connect() as conn:
        loaded = sorted(n for (n,) in conn.execute(text("SELECT n FROM notes")))
    target.dispose()
    assert migration_view(driver.rt.db, mid)["state"] == "succeeded"
    assert loaded == sorted(r["n"] for r in rows)
    driver.close()


def _generated(url: str, table: str, rows: int, column: str) -> None:
    """A table of ``rows`` rows keyed ``id`` 1…rows, with one more column: ``column``,
    an expression of ``n``."""
    engine = create_sql_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            f"CREATE TABLE {table} AS SELECT n AS id, {column} FROM generate_series(1, {rows}) AS n"
        )
        conn.exec_driver_sql(f"ALTER TABLE {table} ADD PRIMARY KEY (id)")
    engine.dispose()


def _numbers(url: str, rows: int) -> None:
    _generated(url, "numbers", rows, "md5(n::text) AS label")


def test_fast_chunks_grow_past_the_first_size_unless_the_spec_sets_it(
    make_settings: Callable[..., Settings], pg_url: str, tmp_path: Path
) -> None:
    # Given 60,000 rows that move fast, a few chunks planned ahead at a time
    _numbers(pg_url, 60_000)
    driver = Driver(make_settings(plan_ahead=2))
    sizes: dict[str, int] = {}
    for name, extra in (("default", {}), ("given", {"chunk_rows": 5000})):
        spec = {
            "name": name,
            "source": {"url": pg_url},
            "target": {"url": f"sqlite:///{tmp_path / (name + '.db')}"},
            "streams": [{"source_table": "numbers", "target_table": "numbers",
                         "create_target": True}],
            **extra,
        }  # fmt: skip
        # When it runs with chunk_rows left out, and with chunk_rows 5,000 given
        mid = submit(driver.rt.db, driver.publisher, spec)
        assert driver.run_to_end(mid) == "succeeded"
        sizes[name] = max(c.rows_in or 0 for c in _chunks(driver, mid))
        loaded = select(func.sum(Chunk.rows_out)).where(Chunk.migration_id == mid)
        with driver.rt.db.session() as s:
            assert s.scalar(loaded) == 60_000
    driver.close()
    # Then chunks left to Baton grew past the first 5,000 rows (each step stayed far inside
    # its budget), and a size the spec gives is never exceeded
    assert sizes["default"] > 5000
    assert sizes["given"] == 5000


def _wide(url: str, rows: int) -> None:
    """Rows of 2 KB of text each."""
    _generated(url, "wide", rows, "repeat(md5(n::text), 64) AS body")


def test_wide_rows_make_small_chunks_from_the_first_one(
    make_settings: Callable[..., Settings], pg_url: str, pg_url_factory: Callable[[], str]
) -> None:
    # Given 12,000 rows of 2 KB in PostgreSQL, each weighing 4 KB in a worker's memory
    _wide(pg_url, 12_000)
    largest = int(CHUNK_BYTES / (TEXT_WEIGHT * 2048))
    driver = Driver(make_settings())
    for name, columns in (
        ("pass-through", None),
        ("parsed", {"body": {"from": "body", "transform": "upper"}}),
    ):
        stream: dict[str, Any] = {"source_table": "wide", "target_table": "wide",
                                  "create_target": True}  # fmt: skip
        if columns:
            stream["columns"] = {"id": "id", **columns}
        spec = {"name": name, "source": {"url": pg_url}, "target": {"url": pg_url_factory()},
                "streams": [stream]}  # fmt: skip
        # When it migrates with the default chunk size (5,000 rows: 20 MB of these)
        mid = submit(driver.rt.db, driver.publisher, spec)
        assert driver.run_to_end(mid) == "succeeded"
        chunks = sorted(_chunks(driver, mid), key=lambda c: c.seq)
        # Then no chunk, the first ones included, holds more than the memory a chunk may take
        assert max(c.rows_in or 0 for c in chunks) <= largest, name
        assert sum(c.rows_out or 0 for c in chunks) == 12_000
    driver.close()
