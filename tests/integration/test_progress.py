"""Progress from the start: the source's estimate gives percent and ETA long before a stream
is fully planned; the API, the CLI and the dashboard read the same figures; a pause is left
out of the rate."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sqlalchemy import select

from etl_tasks import control
from etl_tasks.dashboard_views import live_snapshot, migration_progress
from etl_tasks.settings import Settings
from etl_tasks.state.models import Migration
from etl_tasks.views import migration_view
from tests.data import build_source, spec_for, submit
from tests.harness import Driver

CUSTOMERS = 1500


def test_percent_and_eta_show_before_the_stream_is_fully_planned(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    # Given one stream of 1,500 rows in chunks of 100, planned four chunks ahead
    driver = Driver(make_settings(plan_ahead=4))
    source = f"sqlite:///{tmp_path / 'legacy.db'}"
    build_source(source, customers=CUSTOMERS, orders=0)
    spec = spec_for(source, f"sqlite:///{tmp_path / 'cloud.db'}", chunk_rows=100)
    spec["streams"] = spec["streams"][:1]
    mid = submit(driver.rt.db, driver.publisher, spec)
    # When the first six chunks have been loaded
    loads = 0
    while loads < 6:
        task, kwargs = driver.publisher.queue.popleft()
        driver.deliver(task, kwargs)
        loads += task.endswith("load")
    view = migration_view(driver.rt.db, mid)
    # Then the stream carries the source's estimate and is far from fully planned
    assert view["streams"][0]["rows_estimate"] == CUSTOMERS
    assert not view["fully_planned"]
    # And percent and ETA already show, from rows handled over the estimate
    handled = view["rows_loaded"] + view["rows_quarantined"]
    assert 0 < handled < CUSTOMERS
    assert view["rows_expected"] == CUSTOMERS
    assert view["percent"] == round(100 * handled / CUSTOMERS, 1)
    assert view["rows_per_s"] > 0 and view["eta_s"] is not None and view["eta_s"] > 0
    # And the dashboard and the live process show the same figures
    page = migration_progress(driver.rt.db, mid)
    live = live_snapshot(driver.rt.db).migrations[mid]
    for shown in (page, live):
        assert shown["percent"] == view["percent"]
        assert shown["rows_expected"] == CUSTOMERS and shown["eta_s"] is not None

    # When it is paused, then resumed
    control.pause(driver.rt.db, mid, "test")
    paused = migration_view(driver.rt.db, mid)
    assert paused["eta_s"] is None and paused["rows_per_s"] == 0.0
    control.resume(driver.rt.db, mid, "test")
    with driver.rt.db.session() as s:
        mig = s.scalar(select(Migration).where(Migration.id == mid))
        assert mig is not None and mig.paused_at is not None and mig.resumed_at is not None
        assert mig.paused_s is not None and mig.paused_s >= 0
    # And it runs to the end: 100 %, no ETA
    driver.run()
    done = migration_view(driver.rt.db, mid)
    assert done["state"] == "succeeded" and done["percent"] == 100.0 and done["eta_s"] is None
    assert done["rows_expected"] == CUSTOMERS == done["rows_loaded"] + done["rows_quarantined"]
    driver.close()
