"""One behaviour suite run against every SQL target: PostgreSQL, SQLite and MariaDB."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from etl_tasks.connectors.sql.engines import create_sql_engine
from etl_tasks.views import list_chunks, migration_view
from tests.checks import assert_migrated
from tests.data import bad_lines, build_source, spec_for, submit
from tests.harness import Driver


@pytest.fixture(params=["postgresql", "sqlite", "mariadb"])
def target_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'cloud.db'}"
    else:
        yield request.getfixturevalue("pg_url" if request.param == "postgresql" else "mariadb_url")


@pytest.fixture
def source_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'legacy.db'}"
    build_source(url, customers=700, orders=150, bad_every=19)
    return url


def _run(driver: Driver, spec: dict[str, Any]) -> str:
    mid = submit(driver.rt.db, driver.publisher, spec)
    driver.run_to_end(mid)
    return mid


def _run_customers(
    driver: Driver, source_url: str, target_url: str, chunk_rows: int
) -> dict[str, Any]:
    """Migrate the customers stream alone; return its spec, to run again."""
    spec = spec_for(source_url, target_url, chunk_rows=chunk_rows)
    spec["streams"] = spec["streams"][:1]
    _run(driver, spec)
    return spec


def _sql(url: str, *statements: str) -> list[Any]:
    engine = create_sql_engine(url)
    out: list[Any] = []
    with engine.begin() as conn:
        for st in statements:
            result = conn.execute(text(st))
            out.append(result.all() if result.returns_rows else None)
    engine.dispose()
    return out


def _q(url: str, name: str) -> str:
    return f"`{name}`" if url.startswith("mysql") else f'"{name}"'


@pytest.mark.parametrize("chunk_rows", [120, 5000], ids=["many-chunks", "one-open-chunk"])
def test_migrates_every_type_and_key_shape(
    driver: Driver, source_url: str, target_url: str, chunk_rows: int
) -> None:
    spec = spec_for(source_url, target_url, chunk_rows=chunk_rows)
    mid = _run(driver, spec)
    assert_migrated(
        driver.rt.db, mid, spec, expected_bad={"Customers": 0, "order_lines": bad_lines(150, 3, 19)}
    )


def test_rows_the_target_refuses_are_quarantined_by_bisection(
    driver: Driver, source_url: str, target_url: str
) -> None:
    # Given a target table whose constraint refuses some rows the transforms accept
    t = _q(target_url, "Customers")
    ts = "DATETIME(6)" if target_url.startswith("mysql") else "TIMESTAMP"
    _sql(
        target_url,
        f"CREATE TABLE {t} ({_q(target_url, 'CustomerId')} INTEGER PRIMARY KEY, "
        f"full_name TEXT NOT NULL, email VARCHAR(200), {_q(target_url, 'Balance')} "
        f"NUMERIC(14, 4), created_at {ts} NULL, active BOOLEAN, tenant VARCHAR(20), "
        f"CHECK ({_q(target_url, 'Balance')} < 100))",
    )
    spec = spec_for(source_url, target_url, chunk_rows=200)
    spec["streams"][0]["create_target"] = False
    # When it runs
    mid = _run(driver, spec)
    # Then the refused rows are quarantined with the target's reason and the rest loaded
    view = assert_migrated(driver.rt.db, mid, spec)
    refused = sum(1 for i in range(1, 701) if i % 11 and (i * 37 % 100000) / 100 >= 100)
    assert view["streams"][0]["rows_quarantined"] == refused > 0


def test_insert_mode_quarantines_keys_already_there(
    driver: Driver, source_url: str, target_url: str
) -> None:
    spec = spec_for(source_url, target_url, chunk_rows=200)
    spec["streams"] = spec["streams"][:1]
    first = _run(driver, spec)
    assert_migrated(driver.rt.db, first, spec)
    # When the same rows are inserted again with write=insert
    spec["streams"][0]["write"] = "insert"
    second = _run(driver, spec)
    # Then every row is a bad row (its key exists) and the migration stops at max_bad_rows
    view = migration_view(driver.rt.db, second)
    assert view["state"] == "succeeded"
    assert view["rows_quarantined"] == 700 and view["rows_loaded"] == 0


def test_skip_existing_keeps_what_the_target_has(
    driver: Driver, source_url: str, target_url: str
) -> None:
    spec = _run_customers(driver, source_url, target_url, chunk_rows=200)
    t, k = _q(target_url, "Customers"), _q(target_url, "CustomerId")
    _sql(
        target_url,
        f"UPDATE {t} SET full_name = 'kept' WHERE {k} <= 10",
        f"DELETE FROM {t} WHERE {k} > 690",
    )
    spec["streams"][0]["write"] = "skip_existing"
    mid = _run(driver, spec)
    assert migration_view(driver.rt.db, mid)["state"] == "succeeded"
    (kept,), (total,) = _sql(
        target_url,
        f"SELECT count(*) FROM {t} WHERE full_name = 'kept'",
        f"SELECT count(*) FROM {t}",
    )
    assert kept[0] == 10 and total[0] == 700


def test_upsert_overwrites_what_changed(driver: Driver, source_url: str, target_url: str) -> None:
    spec = spec_for(source_url, target_url, chunk_rows=200)
    _run(driver, spec)
    t, k = _q(target_url, "Customers"), _q(target_url, "CustomerId")
    _sql(target_url, f"UPDATE {t} SET full_name = 'stale' WHERE {k} <= 50")
    mid = _run(driver, spec)
    assert_migrated(driver.rt.db, mid, spec)


def test_postgresql_writes_a_small_batch_in_one_statement(
    driver: Driver, source_url: str, pg_url: str
) -> None:
    # Given a PostgreSQL target that already holds the rows, and counts INSERT statements
    spec = _run_customers(driver, source_url, pg_url, chunk_rows=150)
    _sql(
        pg_url,
        "CREATE TABLE insert_statements (n INTEGER)",
        "CREATE FUNCTION count_insert() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN INSERT INTO insert_statements VALUES (1); RETURN NULL; END $$",
        'CREATE TRIGGER count_insert AFTER INSERT ON "Customers" '
        "FOR EACH STATEMENT EXECUTE FUNCTION count_insert()",
    )
    # When the spec runs again: every chunk (under 200 rows) upserts over existing rows
    mid = _run(driver, spec)
    assert_migrated(driver.rt.db, mid, spec)
    # Then each chunk took one statement, not one per row
    chunks = [c for c in list_chunks(driver.rt.db, mid) if c["rows_out"]]
    ((statements,),) = _sql(pg_url, "SELECT count(*) FROM insert_statements")[0]
    assert len(chunks) >= 5
    assert statements == len(chunks)
