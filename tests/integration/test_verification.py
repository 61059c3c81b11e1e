"""Verification as tasks, driven in this process against real PostgreSQL and SQLite.

A migration runs to success, then the target is changed behind Baton's back and
a verification, planned over the migration's chunks and compared range by range
by ``baton.verify`` tasks, must say exactly what differs, where.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, func, insert, select, text, update

from etl_tasks.connectors.sql.engines import create_sql_engine
from etl_tasks.connectors.sql.queries import reflect_table
from etl_tasks.constants import TASK_VERIFY
from etl_tasks.errors import LeaseLost
from etl_tasks.publisher import publish_plan
from etl_tasks.settings import Settings
from etl_tasks.state.models import Chunk, Migration, VerificationRange
from etl_tasks.sweeper import sweep
from etl_tasks.verification.lease import claim, record, renew
from etl_tasks.verification.report import latest_report
from etl_tasks.verification.requests import request_verification
from etl_tasks.views import migration_view
from tests.data import bad_lines, build_source, spec_for, sqlite_url, submit
from tests.harness import Driver

Spec = dict[str, Any]


def migrate(driver: Driver, tmp_path: Path, target: str, **extra: Any) -> tuple[str, Spec]:
    """A succeeded migration: 1200 customers and 300 orders (every 37th line bad)."""
    source = sqlite_url(tmp_path / "legacy.db")
    build_source(source, customers=1200, orders=300, bad_every=37)
    spec = spec_for(source, target, chunk_rows=250, **extra)
    mid = submit(driver.rt.db, driver.publisher, spec)
    driver.run_to_end(mid)
    assert driver.state(mid) == "succeeded"
    return mid, spec


def verify_now(driver: Driver, migration_id: str, masked: bool = False) -> dict[str, Any]:
    """What the API does on POST .../verify, then every message delivered; the report."""
    request_verification(driver.rt.db, migration_id, "test")
    publish_plan(driver.publisher, migration_id)
    driver.run()
    return latest_report(driver.rt.db, migration_id, masked=masked)


def streams(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {st["name"]: st for st in report["streams"]}


def execute(url: str, *statements: str) -> None:
    """Change the target behind Baton's back."""
    engine = create_sql_engine(url)
    try:
        with engine.begin() as conn:
            for sql in statements:
                conn.execute(text(sql))
    finally:
        engine.dispose()


def test_equal_data_reports_equal_and_quarantined_rows_expected_absent(
    driver: Driver, tmp_path: Path, pg_url: str
) -> None:
    # Given a migration that quarantined some order lines
    mid, _ = migrate(driver, tmp_path, pg_url)
    # When it is verified
    report = verify_now(driver, mid)
    # Then every stream is equal, the quarantined rows counted as expected absent
    assert report["state"] == "equal" and report["equal"] is True, report
    by_name = streams(report)
    bad = bad_lines(300, 3, 37)
    assert by_name["Customers"]["samples"] == by_name["order_lines"]["samples"] == []
    assert (by_name["Customers"]["source_rows"], by_name["Customers"]["target_rows"]) == (
        1200,
        1200,
    )
    lines = by_name["order_lines"]
    assert (lines["source_rows"], lines["target_rows"], lines["expected_absent"]) == (
        900,
        900 - bad,
        bad,
    )
    assert all(st["state"] == "equal" and st["equal"] for st in report["streams"])
    # And one range per done chunk was compared, each exactly once
    with driver.rt.db.reading() as s:
        chunks = s.scalar(select(func.count()).select_from(Chunk).where(Chunk.migration_id == mid))
        ranges = list(s.scalars(select(VerificationRange)))
    assert report["ranges_total"] == report["ranges_done"] == chunks == len(ranges)
    assert all(r.recorded_token == r.lease_token == 1 for r in ranges)
    view = migration_view(driver.rt.db, mid)
    assert view["verification"] == {
        "id": report["id"],
        "state": "equal",
        "report_url": f"/api/v1/migrations/{mid}/verify",
    }


def test_a_changed_a_deleted_and_an_added_row_are_each_reported_where_they_are(
    driver: Driver, tmp_path: Path, pg_url: str
) -> None:
    mid, _ = migrate(driver, tmp_path, pg_url)
    # Given the target changed behind Baton's back: two rows changed, one gone, one added
    execute(
        pg_url,
        """UPDATE "Customers" SET email = 'someone@else.example' WHERE "CustomerId" = 5""",
        """UPDATE "Customers" SET full_name = 'twin', email = NULL WHERE "CustomerId" = 600""",
        'DELETE FROM order_lines WHERE "OrderId" = 3 AND "LineNo" = 2',
        """INSERT INTO "Customers" ("CustomerId", full_name) VALUES (100000, 'late')""",
    )
    # When it is verified
    report = verify_now(driver, mid)
    # Then each difference is in its stream, with its key and columns
    assert report["state"] == "different" and report["equal"] is False
    customers, lines = streams(report)["Customers"], streams(report)["order_lines"]
    assert (customers["missing"], customers["unexpected"], customers["different"]) == (0, 1, 2)
    assert (lines["missing"], lines["unexpected"], lines["different"]) == (1, 0, 0)
    assert customers["state"] == lines["state"] == "different"
    samples = {(x["kind"], tuple(x["key"])): x for x in customers["samples"]}
    changed = samples["different", ("5",)]
    assert changed["columns"] == ["email"]
    assert changed["expected"] == {"email": "user5@example.com"}
    assert changed["found"] == {"email": "someone@else.example"}
    twin = samples["different", ("600",)]
    assert twin["columns"] == ["full_name", "email"]
    assert twin["found"] == {"full_name": "twin", "email": None}
    added = samples["unexpected", ("100000",)]
    assert added["expected"] is None and added["found"]["full_name"] == "late"
    (gone,) = lines["samples"]
    assert (gone["kind"], gone["key"], gone["found"]) == ("missing", ["3", "2"], None)
    assert gone["expected"]["sku"] == "SKU-032"
    # And the mismatching ranges are the ones holding those keys
    assert [r["upper"] for r in customers["mismatched_ranges"]][-1] is None  # 100000: the last
    assert customers["mismatched_ranges_total"] == len(customers["mismatched_ranges"]) == 3
    assert lines["mismatched_ranges"][0]["lower"] is None  # order 3: the first range
    # And a viewer sees the same report with every value masked, keys and columns kept
    masked = streams(latest_report(driver.rt.db, mid, masked=True))["Customers"]["samples"]
    shown = {(x["kind"], tuple(x["key"])): x for x in masked}
    assert shown["different", ("5",)]["found"] == {"email": "***"}
    assert shown["unexpected", ("100000",)]["found"]["email"] is None  # a null stays null


def test_a_quarantined_row_found_in_the_target_is_unexpected(
    driver: Driver, tmp_path: Path, pg_url: str
) -> None:
    mid, _ = migrate(driver, tmp_path, pg_url)
    # Given a row Baton quarantined (order 11, line 1: its qty is 'many') written into the
    # target by someone else
    execute(
        pg_url,
        'INSERT INTO order_lines ("OrderId", "LineNo", sku, qty, price) '
        "VALUES (11, 1, 'SKU-014', 1, 1.11)",
    )
    report = verify_now(driver, mid)
    lines = streams(report)["order_lines"]
    assert (lines["unexpected"], lines["missing"], lines["different"]) == (1, 0, 0)
    assert lines["samples"][0]["key"] == ["11", "1"]
    assert lines["expected_absent"] == bad_lines(300, 3, 37)


def test_verify_true_in_the_spec_runs_once_the_migration_succeeds(
    driver: Driver, tmp_path: Path, pg_url: str
) -> None:
    # Given a spec asking for verification
    source = sqlite_url(tmp_path / "legacy.db")
    build_source(source, customers=500, orders=100, bad_every=7)
    spec = spec_for(source, pg_url, chunk_rows=200, verify=True)
    mid = submit(driver.rt.db, driver.publisher, spec)
    # Then it waits while the migration has not succeeded
    assert migration_view(driver.rt.db, mid)["verification"]["state"] == "pending"
    # When the migration runs to its end
    driver.run_to_end(mid)
    # Then the verification ran on its own, and the migration shows it
    view = migration_view(driver.rt.db, mid)
    assert view["state"] == "succeeded"
    assert view["verification"]["state"] == "equal", latest_report(driver.rt.db, mid)
    report = latest_report(driver.rt.db, mid)
    assert report["trigger"] == "spec" and report["requested_by"] is None
    # And the stored spec never carries the field: older workers read it unchanged
    with driver.rt.db.reading() as s:
        mig = s.get(Migration, mid)
        assert mig is not None and "verify" not in mig.spec


def test_a_target_that_orders_keys_otherwise_is_still_compared_row_for_row(
    driver: Driver, tmp_path: Path, pg_url: str
) -> None:
    # Given text keys that SQLite orders by bytes ('B' < 'a') and the target by ICU ('a' < 'B')
    execute(pg_url, 'CREATE TABLE codes (code text COLLATE "en-x-icu" PRIMARY KEY, n integer)')
    source = sqlite_url(tmp_path / "codes.db")
    keys = [f"{c}{i:02d}" for i in range(30) for c in "aBcD"]
    execute(source, "CREATE TABLE codes (code TEXT PRIMARY KEY, n INTEGER)")
    execute(source, *[f"INSERT INTO codes VALUES ('{k}', {i})" for i, k in enumerate(keys)])
    spec = {
        "name": "codes",
        "source": {"url": source},
        "target": {"url": pg_url},
        "chunk_rows": 17,
        "streams": [{"source_table": "codes", "target_table": "codes"}],
    }
    mid = submit(driver.rt.db, driver.publisher, spec)
    driver.run_to_end(mid)
    # When it is verified, every range's bounds cut the target differently from the source
    report = verify_now(driver, mid)
    # Then no row is reported twice, lost, or unexpected
    (codes,) = report["streams"]
    assert report["state"] == "equal", codes
    assert (codes["source_rows"], codes["target_rows"], codes["compared"]) == (120, 120, 120)
    # And a row really added or removed is still found, in a range that holds its key
    execute(pg_url, "DELETE FROM codes WHERE code = 'a05'", "INSERT INTO codes VALUES ('Zz', 9)")
    codes = verify_now(driver, mid)["streams"][0]
    assert {(x["kind"], x["key"][0]) for x in codes["samples"]} == {
        ("missing", "a05"),
        ("unexpected", "Zz"),
    }
    assert codes["target_rows"] == 120


def test_a_stream_whose_key_is_transformed_is_compared_whole(
    driver: Driver, tmp_path: Path, pg_url: str
) -> None:
    # Given a target key computed by a transform: the target cannot be cut by source keys
    source = sqlite_url(tmp_path / "legacy.db")
    build_source(source, customers=700, orders=1)
    execute(pg_url, "CREATE TABLE people (id bigint PRIMARY KEY, name text)")
    spec = {
        "name": "people",
        "source": {"url": source},
        "target": {"url": pg_url},
        "chunk_rows": 100,
        "streams": [
            {
                "source_table": "Customer",
                "target_table": "people",
                "columns": {"id": {"from": "CustomerId", "transform": "int"}, "name": "FullName"},
            }
        ],
    }
    mid = submit(driver.rt.db, driver.publisher, spec)
    driver.run_to_end(mid)
    execute(pg_url, "INSERT INTO people VALUES (-1, 'stranger')")
    report = verify_now(driver, mid)
    (people,) = report["streams"]
    assert people["ranges_total"] == 1 and people["mismatched_ranges"][0]["upper"] is None
    assert (people["source_rows"], people["unexpected"], people["compared"]) == (700, 1, 700)


def test_every_verify_message_twice_records_each_range_once(driver: Driver, tmp_path: Path) -> None:
    mid, _ = migrate(driver, tmp_path, sqlite_url(tmp_path / "cloud.db"))
    request_verification(driver.rt.db, mid, "test")
    publish_plan(driver.publisher, mid)
    outcomes: list[str] = []

    def twice(task: str, kwargs: dict[str, Any]) -> bool:
        if task == TASK_VERIFY:
            outcomes.append(driver.deliver(task, kwargs))
        return True

    driver.run(on_message=twice)
    report = latest_report(driver.rt.db, mid)
    assert report["state"] == "equal"
    assert outcomes.count("done") == report["ranges_total"]  # the second delivery skips
    assert streams(report)["Customers"]["source_rows"] == 1200


def test_a_range_whose_worker_died_is_taken_over_and_recorded_once(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(step_budget_s=0.5, lease_s=1.0, requeue_after_s=0.5)
    driver = Driver(settings)
    try:
        mid, _ = migrate(driver, tmp_path, sqlite_url(tmp_path / "cloud.db"))
        request_verification(driver.rt.db, mid, "test")
        publish_plan(driver.publisher, mid)
        # Given a worker that claimed the first range and died (its message is lost too)
        dropped: list[int] = []

        def lose_first(task: str, kwargs: dict[str, Any]) -> bool:
            if task == TASK_VERIFY and not dropped:
                dropped.append(int(kwargs["range_id"]))
                dead = Driver(settings, name="dead")
                assert claim(dead.rt, dropped[0]) is not None
                dead.close()
                return False
            return True

        driver.run(on_message=lose_first)
        assert latest_report(driver.rt.db, mid)["state"] == "running"
        # When its lease expires and the sweeper runs
        time.sleep(1.1)
        assert dropped[0] in sweep(driver.rt).ranges_republished
        driver.run()
        # Then another worker compared it, and its result was recorded once
        report = latest_report(driver.rt.db, mid)
        assert report["state"] == "equal"
        with driver.rt.db.reading() as s:
            taken = s.get(VerificationRange, dropped[0])
            assert taken is not None and taken.worker == "driver"
            assert (taken.attempts, taken.lease_token, taken.recorded_token) == (2, 2, 2)
        assert streams(report)["Customers"]["source_rows"] == 1200
    finally:
        driver.close()


def test_a_task_whose_range_was_taken_over_stops_and_records_nothing(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(step_budget_s=0.5, lease_s=1.0)
    driver, slow = Driver(settings), Driver(settings, name="slow")
    try:
        mid, _ = migrate(driver, tmp_path, sqlite_url(tmp_path / "cloud.db"))
        request_verification(driver.rt.db, mid, "test")
        publish_plan(driver.publisher, mid)
        driver.run(on_message=lambda task, _: task != TASK_VERIFY)  # plan, hold the ranges
        with driver.rt.db.reading() as s:
            range_id = s.scalars(select(VerificationRange.id)).first()
        assert range_id is not None
        # Given a slow task whose lease expired, and another task that took the range over
        stale = claim(slow.rt, range_id)
        time.sleep(1.1)
        fresh = claim(driver.rt, range_id)
        assert stale is not None and fresh is not None and fresh.token == stale.token + 1
        # Then the slow one stops at its next renewal, and could record nothing anyway
        with pytest.raises(LeaseLost):
            renew(slow.rt, stale)
        assert not record(slow.rt, stale, source_rows=1)
        assert record(driver.rt, fresh, source_rows=1)
        assert not record(driver.rt, fresh, source_rows=2)  # once
    finally:
        slow.close()
        driver.close()


def test_a_range_that_cannot_be_compared_fails_the_verification(
    driver: Driver, tmp_path: Path, pg_url: str
) -> None:
    mid, _ = migrate(driver, tmp_path, pg_url)
    execute(pg_url, "DROP TABLE order_lines")
    report = verify_now(driver, mid)
    assert report["state"] == "failed" and report["equal"] is False
    lines = streams(report)["order_lines"]
    assert lines["state"] == "failed" and "order_lines" in (lines["error"] or ""), lines
    assert "order_lines" in (report["error"] or "")


@pytest.mark.parametrize("state", ["pending", "running"])
def test_only_a_succeeded_migration_is_verified(driver: Driver, tmp_path: Path, state: str) -> None:
    from etl_tasks.errors import Conflict

    source = sqlite_url(tmp_path / "legacy.db")
    build_source(source, customers=50, orders=5)
    mid = submit(driver.rt.db, driver.publisher, spec_for(source, sqlite_url(tmp_path / "c.db")))
    if state == "running":
        driver.run(max_messages=1)
    with pytest.raises(Conflict, match=f"cannot verify a migration that is {state}"):
        request_verification(driver.rt.db, mid, "test")


@pytest.mark.parametrize("pair", ["sqlite-sqlite", "sqlite-mariadb", "postgresql-postgresql"])
def test_each_dialect_reports_a_changed_a_deleted_and_an_added_row(
    driver: Driver, tmp_path: Path, pair: str, request: pytest.FixtureRequest
) -> None:
    urls = {"sqlite": lambda name: sqlite_url(tmp_path / f"{name}.db")}
    urls["postgresql"] = lambda _: request.getfixturevalue("pg_url_factory")()
    urls["mariadb"] = lambda _: request.getfixturevalue("mariadb_url")
    source_kind, target_kind = pair.split("-")
    source, target = urls[source_kind]("legacy"), urls[target_kind]("cloud")
    build_source(source, customers=800, orders=150, bad_every=19)
    spec = spec_for(source, target, chunk_rows=120)
    mid = submit(driver.rt.db, driver.publisher, spec)
    driver.run_to_end(mid)
    assert verify_now(driver, mid)["state"] == "equal"
    # Given the target changed behind Baton's back, through its own dialect
    engine = create_sql_engine(target)
    try:
        customers = reflect_table(engine, "Customers")
        lines = reflect_table(engine, "order_lines")
        with engine.begin() as conn:
            conn.execute(update(customers).where(customers.c.CustomerId == 77).values(active=False))
            conn.execute(delete(lines).where(lines.c.OrderId == 150, lines.c.LineNo == 3))
            conn.execute(insert(lines).values(OrderId=151, LineNo=1, sku="SKU-X", qty=1))
    finally:
        engine.dispose()
    # Then the verification names each row, in its stream
    found = {
        (st["name"], x["kind"], tuple(x["key"])): x["columns"]
        for st in verify_now(driver, mid)["streams"]
        for x in st["samples"]
    }
    assert set(found) == {
        ("Customers", "different", ("77",)),
        ("order_lines", "missing", ("150", "3")),
        ("order_lines", "unexpected", ("151", "1")),
    }
    assert found["Customers", "different", ("77",)] == ["active"]
