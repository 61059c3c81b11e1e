"""Every failure mode is a feature: bad rows, limits, lost staging, crashes, outages, controls."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import select

from etl_tasks import control
from etl_tasks.chunk_lease import claim
from etl_tasks.constants import TASK_LOAD, TASK_TRANSFORM
from etl_tasks.settings import Settings
from etl_tasks.state.models import Chunk
from etl_tasks.sweeper import sweep
from etl_tasks.views import list_quarantine, migration_view
from tests.checks import assert_migrated
from tests.data import bad_lines, build_source, spec_for, submit
from tests.harness import Driver
from tests.tcp_proxy import TcpProxy


@pytest.fixture
def source(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'legacy.db'}"
    build_source(url, customers=600, orders=200, bad_every=9)
    return url


def _target(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'cloud.db'}"


def test_quarantined_rows_keep_their_reason(driver: Driver, source: str, tmp_path: Path) -> None:
    spec = spec_for(source, _target(tmp_path), chunk_rows=100)
    mid = submit(driver.rt.db, driver.publisher, spec)
    driver.run_to_end(mid)
    assert_migrated(
        driver.rt.db, mid, spec, expected_bad={"Customers": 0, "order_lines": bad_lines(200, 3, 9)}
    )
    rows = list_quarantine(driver.rt.db, mid)
    assert rows and all(r["stream"] == "order_lines" for r in rows)
    assert all(r["reason"] == "qty: not an integer: 'many'" for r in rows), rows[0]
    assert all(r["row"]["Qty"] == "many" for r in rows)


def test_on_bad_row_fail_stops_at_the_first_bad_row(
    driver: Driver, source: str, tmp_path: Path
) -> None:
    spec = spec_for(source, _target(tmp_path), chunk_rows=100, on_bad_row="fail")
    mid = submit(driver.rt.db, driver.publisher, spec)
    driver.run_to_end(mid)
    view = migration_view(driver.rt.db, mid)
    assert view["state"] == "failed"
    assert "not an integer: 'many'" in view["error"]
    assert view["rows_quarantined"] == 0


def test_more_bad_rows_than_max_bad_rows_fails_the_migration(
    driver: Driver, source: str, tmp_path: Path
) -> None:
    spec = spec_for(source, _target(tmp_path), chunk_rows=100, max_bad_rows=5)
    mid = submit(driver.rt.db, driver.publisher, spec)
    driver.run_to_end(mid)
    view = migration_view(driver.rt.db, mid)
    assert view["state"] == "failed"
    assert "more than max_bad_rows (5)" in view["error"]


def test_where_filters_and_after_orders_streams(
    driver: Driver, source: str, tmp_path: Path
) -> None:
    spec = spec_for(source, _target(tmp_path), chunk_rows=50)
    spec["streams"][0]["where"] = [
        {"column": "Active", "op": "=", "value": True},
        {"column": "CustomerId", "op": "<=", "value": 400},
    ]
    spec["streams"][1]["after"] = ["Customers"]
    mid = submit(driver.rt.db, driver.publisher, spec)
    driver.run_to_end(mid)
    view = assert_migrated(driver.rt.db, mid, spec)
    customers, lines = view["streams"]
    assert customers["rows_loaded"] == sum(1 for i in range(1, 401) if i % 3 != 0)
    assert lines["started_at"] >= customers["finished_at"]


def test_staged_rows_lost_between_steps_are_read_again(
    driver: Driver, source: str, tmp_path: Path
) -> None:
    # Given a staging store that loses every chunk's extracted rows before transform runs
    spec = spec_for(source, _target(tmp_path), chunk_rows=150)
    mid = submit(driver.rt.db, driver.publisher, spec)
    lost: set[int] = set()

    def lose_staging(task: str, kwargs: dict[str, object]) -> bool:
        chunk_id = int(kwargs.get("chunk_id", 0))  # type: ignore[call-overload]
        if task == TASK_TRANSFORM and chunk_id not in lost:
            lost.add(chunk_id)
            prefix = driver.rt.settings.key_prefix
            client = driver.rt.staging._redis
            for key in client.scan_iter(match=f"{prefix}stage:{chunk_id}:*"):
                client.delete(key)
        return True

    # When it runs: each transform finds nothing, and sends its chunk back to extract
    driver.run(on_message=lose_staging)
    # Then everything arrives anyway
    assert lost
    assert_migrated(driver.rt.db, mid, spec)


def test_a_chunk_that_keeps_crashing_is_failed_after_max_attempts(
    make_settings: Callable[..., Settings], source: str, tmp_path: Path
) -> None:
    settings = make_settings(max_attempts=3, lease_s=3.0)
    driver = Driver(settings)
    spec = spec_for(source, _target(tmp_path), chunk_rows=100)
    mid = submit(driver.rt.db, driver.publisher, spec)
    driver.run(on_message=lambda task, _: task != TASK_LOAD)  # no load ever runs
    with driver.rt.db.session() as s:
        chunk_id = s.scalar(
            select(Chunk.id).where(Chunk.migration_id == mid, Chunk.step == "load").limit(1)
        )
    assert chunk_id is not None
    # When the load claims it and its worker dies, again and again (leases expire in the past)
    for _ in range(3):
        assert claim(driver.rt, chunk_id, "load") is not None
        _expire_lease(driver, chunk_id)
    # Then the next claim fails the chunk, its stream and the migration: no operator needed
    assert claim(driver.rt, chunk_id, "load") is None
    view = migration_view(driver.rt.db, mid)
    assert view["state"] == "failed" and "did not finish after 3 attempts" in view["error"]
    # And retry runs it again from extract
    control.retry(driver.rt.db, mid, "test")
    sweep(driver.rt)
    driver.run_to_end(mid)
    assert_migrated(driver.rt.db, mid, spec)
    driver.close()


def _expire_lease(driver: Driver, chunk_id: int) -> None:
    with driver.rt.db.session() as s:
        chunk = s.get(Chunk, chunk_id)
        assert chunk is not None and chunk.lease_expires_at is not None
        chunk.lease_expires_at = driver.rt.db.now(s).replace(year=2000)


def test_pause_stops_new_steps_and_resume_finishes(
    driver: Driver, source: str, tmp_path: Path
) -> None:
    spec = spec_for(source, _target(tmp_path), chunk_rows=60)
    mid = submit(driver.rt.db, driver.publisher, spec)
    driver.run(max_messages=10)
    control.pause(driver.rt.db, mid, "test")
    driver.run()  # every remaining message is refused at claim
    paused = migration_view(driver.rt.db, mid)
    assert paused["state"] == "paused" and paused["chunks_done"] < paused["chunks_total"]
    control.resume(driver.rt.db, mid, "test")
    for _ in range(50):
        sweep(driver.rt)
        driver.run()
        if driver.state(mid) == "succeeded":
            break
    assert_migrated(driver.rt.db, mid, spec)


def test_cancel_stops_the_migration(driver: Driver, source: str, tmp_path: Path) -> None:
    spec = spec_for(source, _target(tmp_path), chunk_rows=60)
    mid = submit(driver.rt.db, driver.publisher, spec)
    driver.run(max_messages=6)
    control.cancel(driver.rt.db, mid, "test")
    before = migration_view(driver.rt.db, mid)
    # Every message still queued is refused, and the sweeper sends nothing more
    outcomes = [driver.deliver(t, k) for t, k in list(driver.publisher.queue)]
    driver.publisher.queue.clear()
    sweep(driver.rt)
    assert not driver.publisher.queue
    assert all(o in ("skipped", None) for o in outcomes), outcomes
    after = migration_view(driver.rt.db, mid)
    assert after["state"] == "cancelled" and after["chunks_done"] == before["chunks_done"]
    assert after["chunks_done"] < after["chunks_total"]


def test_a_target_outage_waits_and_then_finishes(
    make_settings: Callable[..., Settings], source: str, pg_url: str
) -> None:
    # Given a PostgreSQL target reached through a proxy we can cut
    proxy = TcpProxy("127.0.0.1", 5432).start()
    try:
        driver = Driver(make_settings())
        target = pg_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
        spec = spec_for(source, target, chunk_rows=100)
        mid = submit(driver.rt.db, driver.publisher, spec)
        driver.run(max_messages=12)
        # When the target goes away mid-migration
        proxy.cut()
        driver.run()
        view = migration_view(driver.rt.db, mid)
        assert view["state"] == "running"
        assert view["waiting_reason"] and "127.0.0.1" in view["waiting_reason"]
        # Then, once it is back, the retries (not_before, swept) finish the migration
        proxy.restore()
        for _ in range(100):
            sweep(driver.rt)
            driver.run()
            if driver.state(mid) == "succeeded":
                break
            time.sleep(0.2)
        assert_migrated(driver.rt.db, mid, spec)
        assert migration_view(driver.rt.db, mid)["waiting_reason"] is None
        driver.close()
    finally:
        proxy.stop()
