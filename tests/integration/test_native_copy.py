"""PostgreSQL → PostgreSQL pass-through: chunks travel as COPY text, unparsed, and only when
the stream is column for column with identical types; refused rows, deadline cuts and
replays behave exactly as on the parsed path."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import nullcontext
from typing import Any

import psycopg2
import pytest
from sqlalchemy import select

from etl_tasks.connectors.base import Unpaced
from etl_tasks.connectors.sql import ledger, pg_native
from etl_tasks.connectors.sql.engines import create_sql_engine
from etl_tasks.connectors.sql.queries import RangeQuery, reflect_table
from etl_tasks.constants import TASK_LOAD
from etl_tasks.settings import Settings
from etl_tasks.state.models import Chunk, Event, QuarantinedRow
from tests.checks import assert_migrated
from tests.data import submit
from tests.faults import WorkerKilled, expire_leases, killed_after_target_commit, loads_out_of_time
from tests.harness import Driver

ROWS, CHUNK_ROWS, PART_ROWS = 600, 250, 100  # so a chunk is three COPY text parts


@pytest.fixture(autouse=True)
def small_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Parts of ``PART_ROWS`` rows instead of a sub-batch's 1,000: several to a chunk."""
    monkeypatch.setattr(pg_native, "SUB_BATCH_ROWS", PART_ROWS)


COLUMNS = """
    id integer PRIMARY KEY, name text, price numeric(12, 4), ratio double precision,
    seen timestamptz, born timestamp, day date, span interval, blob bytea, doc jsonb,
    tags integer[], uid uuid, ok boolean, qty integer
"""


def _execute(url: str, sql: str, params: Any = None) -> None:
    conn = psycopg2.connect(url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(sql, params)
    conn.close()


def _build(url: str, rows: int = ROWS) -> None:
    """``things``: every kind of value COPY text must carry exactly, NULLs, awkward text."""
    _execute(url, f"CREATE TABLE things ({COLUMNS})")
    _execute(
        url,
        f"""
        INSERT INTO things
        SELECT i,
               CASE WHEN i % 7 = 0 THEN NULL
                    ELSE E'tab\\there, line\\nbreak, back\\\\slash, é ' || i END,
               i * 1.0001, CASE WHEN i % 11 = 0 THEN 'NaN'::float8 ELSE 1.0 / i END,
               timestamptz '2020-03-01 12:00:00.123456+05:30' + i * interval '1 hour',
               timestamp '1999-12-31 23:59:59.999999' + i * interval '1 minute',
               date '0044-03-15' + i, i * interval '1 day 2 hours 3.5 seconds',
               decode(lpad(to_hex(i), 8, '0'), 'hex'), jsonb_build_object('i', i, 's', 'x"y'),
               ARRAY[i, NULL, -i], md5(i::text)::uuid, i % 2 = 0, i
        FROM generate_series(1, {int(rows)}) AS i
        """,
    )


@pytest.fixture
def pg_pair(pg_url_factory: Callable[[], str]) -> tuple[str, str]:
    source = pg_url_factory()
    _build(source)
    return source, pg_url_factory()


def _spec(source: str, target: str, **stream: Any) -> dict[str, Any]:
    return {
        "name": "native-copy",
        "source": {"url": source},
        "target": {"url": target},
        "chunk_rows": CHUNK_ROWS,
        "streams": [{"source_table": "things", "target_table": "things", **stream}],
    }


@pytest.fixture
def driver(make_settings: Callable[..., Settings]) -> Iterator[Driver]:
    """A driver whose steps are never cut at a deadline (these tests count whole chunks:
    a 2 s budget cut an extract after its first part on a loaded machine)."""
    d = Driver(make_settings(step_budget_s=20.0, lease_s=25.0))
    yield d
    d.close()


@pytest.fixture
def staged_kinds(driver: Driver) -> set[str]:
    """The kinds of everything staged while the test runs."""
    return _record_kinds(driver)


def _record_kinds(driver: Driver) -> set[str]:
    """The kinds of everything ``driver`` stages from now on."""
    kinds: set[str] = set()
    put = driver.rt.staging.put

    def recording(
        chunk_id: int, token: int, kind: str, blob: bytes, rows: Any = None, **kw: Any
    ) -> None:
        kinds.add(kind)
        put(chunk_id, token, kind, blob, rows, **kw)

    driver.rt.staging.put = recording  # type: ignore[method-assign]
    return kinds


def test_a_stream_mapped_column_for_column_travels_as_copy_text(
    driver: Driver, pg_pair: tuple[str, str], staged_kinds: set[str]
) -> None:
    # Given a PostgreSQL table of every kind of value, to a table created like it
    source, target = pg_pair
    spec = _spec(source, target, create_target=True)
    # When it migrates
    mid = submit(driver.rt.db, driver.publisher, spec)
    driver.run_to_end(mid)
    # Then every chunk went as COPY text (no row staged as values) and every value arrived
    assert driver.rt.native_copy(mid, "things")
    assert staged_kinds == {"transformed.native"}  # the extract relabelled it: no transform
    assert_migrated(driver.rt.db, mid, spec, expected_bad={"things": 0})


@pytest.fixture
def small_pair(pg_url_factory: Callable[[], str]) -> tuple[str, str]:
    source = pg_url_factory()
    _build(source, rows=120)
    return source, pg_url_factory()


@pytest.mark.parametrize(
    ("case", "native", "relabelled"),
    [
        ("subset", True, True),
        ("transform", False, False),
        ("constant", False, False),
        ("cast", False, False),
        ("turned_off", False, True),  # every value kept by its cast: only relabelled
        ("sqlite_target", False, False),
    ],
)
def test_pass_through_is_chosen_only_for_a_stream_that_asks_nothing_of_its_values(
    make_settings: Callable[..., Settings],
    small_pair: tuple[str, str],
    tmp_path: Any,
    case: str,
    native: bool,
    relabelled: bool,
) -> None:
    # Given a stream that copies columns as they are, or one that asks something of them
    source, target = small_pair
    columns: dict[str, Any] = {"id": "id", "name": "name", "price": "price"}
    stream: dict[str, Any] = {"create_target": True, "columns": columns}
    if case == "transform":
        columns["name"] = {"from": "name", "transform": "upper"}
    elif case == "constant":
        columns["tenant"] = {"value": "acme"}
    elif case == "cast":  # the same values into a column of another type
        _execute(target, "CREATE TABLE things (id integer PRIMARY KEY, name text, price text)")
        stream["create_target"] = False
    elif case == "sqlite_target":
        target = f"sqlite:///{tmp_path / 'cloud.db'}"
    driver = Driver(make_settings(native_copy=case != "turned_off"))
    kinds = _record_kinds(driver)
    spec = _spec(source, target, **stream)
    # When it migrates
    mid = submit(driver.rt.db, driver.publisher, spec)
    driver.run_to_end(mid)
    # Then its chunks went as COPY text exactly when nothing is asked of any value, and
    # skipped the transform (staged by the extract as the load reads them) exactly when it
    # would only have put them under the target's column names
    assert driver.rt.native_copy(mid, "things") is native
    with driver.rt.db.reading() as s:
        paths = list(s.scalars(select(Event.message).where(Event.kind == "stream_path")))
    assert len(paths) == 1 and ("COPY text" in paths[0]) is native, paths
    expected = {"transformed.native"} if native else {"transformed"}
    assert kinds == (expected if relabelled else {"extracted", "transformed"})
    assert_migrated(driver.rt.db, mid, spec, expected_bad={"things": 0})
    driver.close()


def _quarantined(driver: Driver, mid: str) -> dict[str, str]:
    with driver.rt.db.reading() as s:
        rows = s.scalars(select(QuarantinedRow).where(QuarantinedRow.migration_id == mid))
        return {q.key: q.reason for q in rows}


@pytest.mark.parametrize(
    ("write", "cut"),
    [("upsert", False), ("insert", False), ("upsert", True)],
    ids=["upsert", "insert", "upsert-cut-at-deadline"],
)
def test_a_row_the_target_refuses_in_a_copy_text_chunk_is_quarantined_by_its_key(
    driver: Driver,
    pg_pair: tuple[str, str],
    staged_kinds: set[str],
    write: str,
    cut: bool,
) -> None:
    # Given a target table like the source's that refuses every 100th quantity, and (for
    # insert) already holds row 7
    source, target = pg_pair
    _execute(target, f"CREATE TABLE things ({COLUMNS}, CHECK (qty % 100 <> 0))")
    _execute(target, "INSERT INTO things (id, name) VALUES (7, 'already here')")
    spec = _spec(source, target, write=write)
    # When it migrates (every load stopping at its deadline after its first part, or not)
    mid = submit(driver.rt.db, driver.publisher, spec)
    with loads_out_of_time() if cut else nullcontext():
        driver.run_to_end(mid)
    # Then the chunks travelled as COPY text, and each refused row was found by bisecting
    # the parsed part and quarantined once, by its key, with the target's reason
    assert staged_kinds == {"transformed.native"}
    bad = _quarantined(driver, mid)
    refused = {f"[{i}]" for i in range(100, ROWS + 1, 100)}
    if write == "insert":
        refused.add("[7]")
        assert bad.pop("[7]") == "key already in the target (write: insert)"
    assert set(bad) == refused - {"[7]"}
    assert all("check constraint" in why for why in bad.values())
    if write == "upsert":
        assert_migrated(driver.rt.db, mid, spec, expected_bad={"things": len(refused)})
    if cut:  # every load cut after one part: at a part's last key, or a bisected row's
        with driver.rt.db.reading() as s:
            chunks = list(s.scalars(select(Chunk).where(Chunk.migration_id == mid)))
        assert len(chunks) > ROWS // CHUNK_ROWS + 1
        assert max(c.rows_out or 0 for c in chunks) <= PART_ROWS


@pytest.mark.parametrize("staging_lost", [False, True])
def test_a_copy_text_load_killed_after_its_commit_and_replayed_loads_nothing_twice(
    driver: Driver, pg_pair: tuple[str, str], staged_kinds: set[str], staging_lost: bool
) -> None:
    # Given a pass-through load that committed in the target, then its worker died
    source, target = pg_pair
    spec = _spec(source, target, create_target=True)
    mid = submit(driver.rt.db, driver.publisher, spec)
    while (message := driver.publisher.queue.popleft())[0] != TASK_LOAD:
        driver.deliver(*message)
    kwargs = message[1]
    with killed_after_target_commit(), pytest.raises(WorkerKilled):
        driver.deliver(TASK_LOAD, kwargs)
    engine = create_sql_engine(target)
    with engine.connect() as conn:
        record = ledger.read(conn, mid, "things", int(kwargs["chunk_id"]))
    engine.dispose()
    assert record is not None and record.rows_loaded == CHUNK_ROWS
    # When its lease expires and the load is delivered again (its staged rows kept or lost),
    # and every later message is delivered twice
    expire_leases(driver.rt.db, int(kwargs["chunk_id"]))
    if staging_lost:
        from tests.faults import lose_staging

        assert lose_staging(driver.rt, int(kwargs["chunk_id"])) > 0
    outcome = driver.deliver(TASK_LOAD, kwargs)
    driver.run(on_message=lambda task, kw: driver.deliver(task, kw) is not None)
    # Then the chunk was finished from its ledger record and nothing was loaded twice
    assert outcome == ("from_ledger" if staging_lost else "done")
    assert "transformed.native" in staged_kinds
    assert_migrated(driver.rt.db, mid, spec, expected_bad={"things": 0})


def test_an_extract_of_copy_text_stops_at_its_deadline_after_a_part(
    make_settings: Callable[..., Settings], pg_pair: tuple[str, str]
) -> None:
    # Given a step budget too small for even one part
    driver = Driver(make_settings(step_budget_s=0.0001))
    kinds = _record_kinds(driver)
    source, target = pg_pair
    spec = _spec(source, target, create_target=True)
    # When it migrates
    mid = submit(driver.rt.db, driver.publisher, spec)
    driver.run_to_end(mid)
    # Then every extract stopped after its first part, cut at that part's last key, and
    # the rest of each range became a chunk of its own: every row arrived, once
    with driver.rt.db.reading() as s:
        chunks = list(s.scalars(select(Chunk).where(Chunk.migration_id == mid)))
    assert max(c.rows_in or 0 for c in chunks) <= PART_ROWS
    assert len(chunks) >= ROWS // PART_ROWS
    assert kinds == {"transformed.native"}
    assert_migrated(driver.rt.db, mid, spec, expected_bad={"things": 0})
    driver.close()


class _Room:
    """A step's pace with ``room_s`` seconds of work left, never expiring outright."""

    def __init__(self, room_s: float) -> None:
        self.room_s = room_s

    def expired(self, ahead_s: float = 0.0) -> bool:
        return ahead_s >= self.room_s

    def tick(self) -> None:
        return None


def _parts(source: str, ranges: list[tuple[int, int]], pace: Any, sizes: Any) -> list[list[int]]:
    """The rows of each COPY part of each range read, in turn, sharing ``sizes``."""
    engine = create_sql_engine(source)
    try:
        table = reflect_table(engine, "things")
        query = RangeQuery(table, ["id"], [c.name for c in table.c], [])
        out = []
        for lower, upper in ranges:
            with engine.connect() as conn:
                query.begin(conn)
                oids = pg_native.column_oids(conn, query.select_range(None, None))
                casters = pg_native.casters_for(conn.connection.dbapi_connection, oids[:1])
                parts, cut = pg_native.read_parts(
                    conn, query, ((lower,), (upper,)), pace, 1, casters, sizes
                )
            assert cut is None
            out.append([p.rows for p in parts])
        return out
    finally:
        engine.dispose()


def test_a_stream_s_reads_start_at_the_part_size_its_earlier_reads_reached(
    pg_pair: tuple[str, str],
) -> None:
    # Given a stream's reads of 250 rows, in parts that start at 100 and double
    source, _ = pg_pair
    ranges = [(0, 250), (250, 500), (0, 250)]
    # When they read with nothing learned, and then learning as they go
    alone = _parts(source, ranges, Unpaced(), None)
    learning = _parts(source, ranges, Unpaced(), pg_native.PartRows())
    # Then each starts where the reads before it got to: fewer, larger parts
    assert alone == [[100, 150], [100, 150], [100, 150]]
    assert learning == [[100, 150], [200, 50], [250]]


def test_a_learned_part_size_is_used_only_while_its_time_fits_the_step(
    pg_pair: tuple[str, str],
) -> None:
    source, _ = pg_pair
    # Given a size learned from a source that was once fast, now expected to take 5 s
    learned = pg_native.PartRows(first=400, seconds=5.0)
    # When a step with one second left reads
    parts = _parts(source, [(0, 250)], _Room(1.0), learned)
    # Then it starts at the first size again, and learns anew from what this read took
    assert parts == [[100, 150]]
    assert learned.first == 2 * PART_ROWS and learned.seconds < 1.0


def test_a_learned_part_size_stops_growing_where_doubling_would_not_fit(
    pg_pair: tuple[str, str],
) -> None:
    # Given a learned size of 400 rows, and a step with no time to spare for twice a part
    source, _ = pg_pair
    learned = pg_native.PartRows(first=400)
    # When it reads 500 rows
    parts = _parts(source, [(0, 500)], _Room(1e-9), learned)
    # Then it reads them as 400 and the rest, and the size stays 400
    assert parts == [[400, 100]]
    assert learned.first == 400 and learned.seconds > 0
