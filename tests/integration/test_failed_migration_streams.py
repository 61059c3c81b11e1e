"""A failed migration leaves no stream running or pending: they fail with it."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from etl_tasks import control
from etl_tasks.connectors.sql.engines import create_sql_engine
from etl_tasks.publisher import publish_plan
from etl_tasks.views import migration_view
from tests.checks import assert_migrated
from tests.data import build_source, spec_for, sqlite_url, submit
from tests.harness import Driver


def _rename(url: str, old: str, new: str) -> None:
    engine = create_sql_engine(url)
    with engine.begin() as conn:
        conn.execute(text(f'ALTER TABLE "{old}" RENAME TO "{new}"'))
    engine.dispose()


def _streams(driver: Driver, mid: str) -> dict[str, str]:
    return {st["name"]: st["state"] for st in migration_view(driver.rt.db, mid)["streams"]}


def test_a_migration_that_fails_while_preparing_fails_its_streams(
    driver: Driver, tmp_path: Path
) -> None:
    # Given two streams: order lines first, then customers, whose source table goes
    # away after the spec was accepted
    source = sqlite_url(tmp_path / "legacy.db")
    build_source(source, customers=300, orders=100)
    spec = spec_for(source, sqlite_url(tmp_path / "cloud.db"), chunk_rows=100)
    spec["streams"].reverse()
    mid = submit(driver.rt.db, driver.publisher, spec)
    _rename(source, "Customer", "Customer_elsewhere")
    # When the migration starts: order lines are prepared, customers fail to prepare
    driver.run_to_end(mid)
    # Then the migration failed, and so did both streams, the one that never started too
    view = migration_view(driver.rt.db, mid)
    assert view["state"] == "failed" and "does not exist" in view["error"]
    assert _streams(driver, mid) == {"order_lines": "failed", "Customers": "failed"}
    # And once the table is back, a retry prepares what was never prepared and finishes
    _rename(source, "Customer_elsewhere", "Customer")
    control.retry(driver.rt.db, mid, "test")
    assert _streams(driver, mid) == {"order_lines": "running", "Customers": "pending"}
    publish_plan(driver.publisher, mid)
    driver.run_to_end(mid)
    assert_migrated(driver.rt.db, mid, spec)


def test_a_migration_failed_by_max_bad_rows_fails_its_unfinished_streams(
    driver: Driver, tmp_path: Path
) -> None:
    # Given order lines with bad rows, beyond max_bad_rows, then customers after them
    source = sqlite_url(tmp_path / "legacy.db")
    build_source(source, customers=300, orders=200, bad_every=7)
    spec = spec_for(source, sqlite_url(tmp_path / "cloud.db"), chunk_rows=100, max_bad_rows=3)
    spec["streams"].reverse()
    spec["streams"][1]["after"] = ["order_lines"]
    mid = submit(driver.rt.db, driver.publisher, spec)
    # When it runs
    driver.run_to_end(mid)
    # Then no stream is left running or pending
    view = migration_view(driver.rt.db, mid)
    assert view["state"] == "failed" and "max_bad_rows" in view["error"]
    assert _streams(driver, mid) == {"order_lines": "failed", "Customers": "failed"}
