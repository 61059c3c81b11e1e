"""Exported files as a source: a folder of CSV and JSON Lines files loads exactly.

Every test runs the whole pipeline in this process (plan, extract, transform, load)
on a folder written by :mod:`tests.exports`, and compares the target with the
records as they were written.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text

from etl_tasks.connectors.sql.engines import create_sql_engine
from etl_tasks.settings import Settings
from etl_tasks.state.models import Chunk, Event, QuarantinedRow
from etl_tasks.views import migration_view
from tests.data import slow_table, sqlite_url, submit
from tests.exports import customers_folder, file_spec, write_csv, write_jsonl
from tests.harness import Driver
from tests.integration.api_support import Api, make_api

CUSTOMERS = {
    "source_table": "customers-*.csv",
    "target_table": "customers",
    "key": "id",
    "exclude": ["_file", "_record"],
    "create_target": True,
}


def _rows(url: str, query: str) -> list[tuple[Any, ...]]:
    engine = create_sql_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(query))]
    finally:
        engine.dispose()


def _expected(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return sorted(
        ((r["id"], r["name"], r["city"], r["note"]) for r in rows), key=lambda r: int(r[0])
    )


def _customers(url: str) -> list[tuple[Any, ...]]:
    found = _rows(url, "SELECT id, name, city, note FROM customers")
    return sorted(found, key=lambda r: int(r[0]))


def _events(driver: Driver, mid: str, kind: str) -> list[str]:
    with driver.rt.db.reading() as s:
        found = s.scalars(
            select(Event.message).where(Event.migration_id == mid, Event.kind == kind)
        )
        return list(found)


def _quarantine(driver: Driver, mid: str) -> dict[str, str]:
    with driver.rt.db.reading() as s:
        found = s.execute(
            select(QuarantinedRow.key, QuarantinedRow.reason).where(
                QuarantinedRow.migration_id == mid
            )
        )
        return {k: r for k, r in found}


def test_a_folder_of_windows_1252_csv_and_a_json_lines_file_migrate_equal_into_postgresql(
    driver: Driver, tmp_path: Path, pg_url: str
) -> None:
    # Given three CSV exports in Windows-1252 (";", CRLF, quoted newlines) of 70 rows each
    exports = tmp_path / "exports"
    written = customers_folder(exports, files=3, per_file=70)
    # and a JSON Lines file of orders, for a target table with typed columns
    orders = [
        {"id": i, "customer_id": i % 50 + 1, "amount": f"{i}.{i % 100:02d}", "paid": i % 2 == 0}
        for i in range(1, 121)
    ]
    write_jsonl(exports / "orders.jsonl", orders)
    with create_sql_engine(pg_url).begin() as conn:
        conn.execute(
            text(
                "CREATE TABLE orders (id integer PRIMARY KEY, customer_id integer, "
                "amount numeric(10, 2), paid boolean)"
            )
        )
    # When both migrate (the format is the endpoint's: one migration each)
    csv_spec = file_spec(
        exports, pg_url, [CUSTOMERS], chunk_rows=25, encoding="cp1252", delimiter=";"
    )
    jsonl_spec = file_spec(
        exports,
        pg_url,
        [
            {
                "source_table": "orders.jsonl",
                "target_table": "orders",
                "key": "id",
                "exclude": ["_file", "_record"],
            }
        ],
        chunk_rows=30,
        format="jsonl",
    )
    first = submit(driver.rt.db, driver.publisher, csv_spec)
    second = submit(driver.rt.db, driver.publisher, jsonl_spec)
    driver.run_to_end(first)
    driver.run_to_end(second)
    # Then both succeeded, chunked by file: 70 records make 25 + 25 + 20
    for mid, loaded in ((first, 210), (second, 120)):
        view = migration_view(driver.rt.db, mid)
        assert view["state"] == "succeeded", view
        assert view["streams"][0]["rows_loaded"] == loaded, view
    with driver.rt.db.reading() as s:
        sizes = [
            c.rows_in
            for c in s.scalars(select(Chunk).where(Chunk.migration_id == first).order_by(Chunk.seq))
        ]
    assert sizes == [25, 25, 20] * 3
    # And the target holds every value exactly as written, newlines and all
    assert _customers(pg_url) == _expected(written)
    # And the JSON values were cast strictly into the target's column types
    got = sorted(_rows(pg_url, "SELECT id, customer_id, amount, paid FROM orders"))
    want = [(o["id"], o["customer_id"], Decimal(o["amount"]), o["paid"]) for o in orders]
    assert got == want
    # And each file's planning was recorded, with its encoding
    notes = _events(driver, first, "source_file")
    assert len(notes) == 3 and all("cp1252 (as the spec says)" in n for n in notes), notes


ENCODINGS = [
    # (how the file is written, whether with a BOM, what the spec says)
    ("utf-8", False, "utf-8"),
    ("utf-8", True, "utf-8"),
    ("utf-16-le", True, "utf-16"),
    ("cp1252", False, "windows-1252"),
    ("latin-1", False, "latin1"),
]


@pytest.mark.parametrize("given", ["named", "auto"])
def test_every_encoding_loads_the_same_text(
    make_settings: Callable[..., Settings], tmp_path: Path, given: str
) -> None:
    driver = Driver(make_settings())
    rows = [r for r in (customers_folder(tmp_path / "x", 1, 12))]
    rows = [{**r, "name": r["name"].replace("Œ", "O")} for r in rows]  # Latin-1 has no Œ
    for written, bom, name in ENCODINGS:
        folder = tmp_path / f"{written}-{bom}"
        folder.mkdir()
        write_csv(folder / "customers-1.csv", rows, encoding=written, bom=bom)
        target = sqlite_url(tmp_path / f"{written}-{bom}.db")
        encoding = name if given == "named" else "auto"
        spec = file_spec(
            folder, target, [CUSTOMERS], chunk_rows=5, encoding=encoding, delimiter=";"
        )
        mid = submit(driver.rt.db, driver.publisher, spec)
        driver.run_to_end(mid)
        assert driver.state(mid) == "succeeded", (written, bom, migration_view(driver.rt.db, mid))
        assert _customers(target) == _expected(rows), (written, bom)
        if given == "auto":
            [note] = _events(driver, mid, "source_file")
            assert "guessed" in note, note
            guess = {"utf-16-le": "utf-16-le with BOM", "utf-8": "utf-8"}.get(written, "cp1252")
            assert f"read as {guess}" in note, note
    driver.close()


def test_a_malformed_record_is_quarantined_with_its_line_number(
    driver: Driver, tmp_path: Path
) -> None:
    # Given an export whose 3rd record has a stray quote, whose 5th has a field too many, and
    # whose 7th holds a byte Windows-1252 does not define; the 2nd record spans two lines
    folder = tmp_path / "exports"
    folder.mkdir()
    lines = [
        b"id;name;qty",
        b"1;a;10",
        b'2;"b\r\nb";20',
        b'3;"c"c;30',
        b"4;d;40",
        b"5;e;50;extra",
        b"6;f;60",
        b"7;g\x81;70",
        b"8;h;not a number",
        b"9;i;90",
    ]
    (folder / "items.csv").write_bytes(b"\r\n".join(lines) + b"\r\n")
    target = sqlite_url(tmp_path / "target.db")
    with create_sql_engine(target).begin() as conn:
        conn.execute(text("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, qty INTEGER)"))
    stream = {"source_table": "items.csv", "target_table": "items", "key": "id",
              "exclude": ["_file", "_record"]}  # fmt: skip
    spec = file_spec(folder, target, [stream], chunk_rows=4, encoding="cp1252", delimiter=";")
    # When it migrates
    mid = submit(driver.rt.db, driver.publisher, spec)
    driver.run_to_end(mid)
    # Then the good records loaded, as the target's types
    assert driver.state(mid) == "succeeded"
    got = _rows(target, "SELECT id, name, qty FROM items ORDER BY id")
    assert got == [(1, "a", 10), (2, "b\r\nb", 20), (4, "d", 40), (6, "f", 60), (9, "i", 90)]
    # And each bad one is quarantined by its position, with its line and reason
    bad = _quarantine(driver, mid)
    assert set(bad) == {
        '["items.csv",3]',
        '["items.csv",5]',
        '["items.csv",7]',
        '["items.csv",8]',
    }, bad
    assert bad['["items.csv",3]'].startswith("line 5: ';' expected after '\"'"), bad
    assert bad['["items.csv",5]'] == "line 7: 4 fields where the header has 3", bad
    assert bad['["items.csv",7]'] == "line 9: byte 0x81 is not valid cp1252", bad
    assert bad['["items.csv",8]'] == "qty: 'not a number' is not a valid INTEGER", bad


def test_a_file_changed_during_the_migration_fails_it(driver: Driver, tmp_path: Path) -> None:
    # Given a migration planned on an export of 60 rows, in chunks of 10
    folder = tmp_path / "exports"
    customers_folder(folder, files=1, per_file=60)
    spec = file_spec(folder, sqlite_url(tmp_path / "t.db"), [CUSTOMERS], chunk_rows=10,
                     encoding="cp1252", delimiter=";")  # fmt: skip
    mid = submit(driver.rt.db, driver.publisher, spec)
    driver.run(max_messages=4)  # planned; a few steps done
    # When the file is rewritten meanwhile (same size even: one character changed)
    path = folder / "customers-1.csv"
    data = path.read_bytes()
    path.write_bytes(data[:-3] + b"X" + data[-2:])
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    driver.run_to_end(mid)
    # Then the migration failed, saying which file changed and why it stopped
    view = migration_view(driver.rt.db, mid)
    assert view["state"] == "failed", view
    error = view["error"] or ""
    assert "'customers-1.csv' changed after the migration planned it" in error, error
    assert "mix of two versions" in error, error


def test_preflight_refuses_a_folder_outside_the_allowed_paths_and_names_each_problem(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    customers_folder(allowed, files=1, per_file=3)
    customers_folder(outside, files=1, per_file=3)
    api: Api = make_api(make_settings(allowed_paths=str(allowed)))
    target = sqlite_url(allowed / "t.db")
    # A folder outside BATON_ALLOWED_PATHS
    resp = api.submit(file_spec(outside, target, [CUSTOMERS], delimiter=";", encoding="cp1252"))
    assert resp.status_code == 422, resp.get_data(as_text=True)
    problems = {p["path"]: p["message"] for p in resp.get_json()["errors"]}
    assert "outside the allowed folders" in problems["source/file/path"], problems
    # A file inside it that is a link to a file outside
    (allowed / "customers-9.csv").symlink_to(outside / "customers-1.csv")
    resp = api.submit(file_spec(allowed, target, [CUSTOMERS], delimiter=";", encoding="cp1252"))
    assert resp.status_code == 422, resp.get_data(as_text=True)
    problems = {p["path"]: p["message"] for p in resp.get_json()["errors"]}
    assert "outside the allowed folders" in problems["streams/0/source_table"], problems
    (allowed / "customers-9.csv").unlink()
    # A glob that matches nothing, and a key the files do not have
    streams = [
        {**CUSTOMERS, "source_table": "clients-*.csv"},
        {**CUSTOMERS, "target_table": "other", "key": "customer_id"},
    ]
    resp = api.submit(file_spec(allowed, target, streams, delimiter=";", encoding="cp1252"))
    assert resp.status_code == 422, resp.get_data(as_text=True)
    problems = {p["path"]: p["message"] for p in resp.get_json()["errors"]}
    assert "no file in" in problems["streams/0/source_table"], problems
    assert "no column 'customer_id'" in problems["streams/1/key"], problems
    assert not api.plans()
    # And the folder inside them is accepted
    mid = api.created(file_spec(allowed, target, [CUSTOMERS], delimiter=";", encoding="cp1252"))
    assert api.plans() == [mid]


def test_steps_cut_at_their_deadline_resume_exactly(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    # Given a budget too small for even one sub-batch, and chunks of 2,500 records
    driver = Driver(make_settings(step_budget_s=0.0001))
    folder = tmp_path / "exports"
    written = customers_folder(folder, files=2, per_file=2600)
    spec = file_spec(folder, sqlite_url(tmp_path / "t.db"), [CUSTOMERS], chunk_rows=2500,
                     encoding="cp1252", delimiter=";")  # fmt: skip
    # When it runs
    mid = submit(driver.rt.db, driver.publisher, spec)
    driver.run_to_end(mid)
    # Then the steps stopped after a sub-batch and split their chunks, and every row arrived once
    assert driver.state(mid) == "succeeded", migration_view(driver.rt.db, mid)
    with driver.rt.db.reading() as s:
        chunks = list(s.scalars(select(Chunk).where(Chunk.migration_id == mid)))
    assert max(c.rows_in or 0 for c in chunks) <= 1000
    assert sum(c.rows_out or 0 for c in chunks) == len(written)
    assert len(chunks) > 2 * 2600 // 1000
    assert _customers(sqlite_url(tmp_path / "t.db")) == _expected(written)
    driver.close()


def test_a_load_cut_at_its_deadline_resumes_from_a_row_key(
    make_settings: Callable[..., Settings], tmp_path: Path, pg_url: str
) -> None:
    # Given a target where every write statement takes 0.2 s, and a 0.5 s step budget: a
    # load stops after a sub-batch or two, at a row's key (no byte offset in it)
    slow_table(pg_url, 0.2, "customers", "id text PRIMARY KEY, name text, city text, note text")
    driver = Driver(make_settings(step_budget_s=0.5))
    folder = tmp_path / "exports"
    written = customers_folder(folder, files=1, per_file=3000)
    stream = {**CUSTOMERS, "create_target": False}
    spec = file_spec(folder, pg_url, [stream], chunk_rows=3000, encoding="cp1252", delimiter=";")
    # When it runs
    mid = submit(driver.rt.db, driver.publisher, spec)
    driver.run_to_end(mid)
    # Then a load was cut, its rest read from a bound that is only a row's key, and every
    # row arrived once
    assert driver.state(mid) == "succeeded", migration_view(driver.rt.db, mid)
    with driver.rt.db.reading() as s:
        chunks = list(s.scalars(select(Chunk).where(Chunk.migration_id == mid)))
    assert any(c.lower is not None and len(c.lower) == 2 for c in chunks), "no load was cut"
    assert _customers(pg_url) == _expected(written)
    driver.close()
