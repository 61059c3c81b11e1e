"""Progress from the start: the source's estimate gives percent and ETA long before a stream
is fully planned; the API, the CLI and the dashboard read the same figures; a pause is left
out of the rate; the ETA counts each stream's own cost per row, read in the same statement."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import select, update

from api.live import QueryCounter
from etl_tasks import control
from etl_tasks.dashboard_views import live_snapshot, migration_progress
from etl_tasks.progress import PRIOR_CHUNKS, figures_of, progress_select
from etl_tasks.settings import Settings
from etl_tasks.state.enums import ChunkState
from etl_tasks.state.models import Chunk, Migration, Stream
from etl_tasks.views import migration_view
from tests.data import build_source, spec_for, submit
from tests.harness import Driver

CUSTOMERS = 1500
DONE_CHUNKS = 6


def test_percent_and_eta_show_before_the_stream_is_fully_planned(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    # Given one stream of 1,500 rows in chunks of 100, planned four chunks ahead, two at
    # a time queued or running
    driver = Driver(make_settings(plan_ahead=4, max_queued_chunks=2))
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
    driver.run_to_end(mid)
    done = migration_view(driver.rt.db, mid)
    assert done["state"] == "succeeded" and done["percent"] == 100.0 and done["eta_s"] is None
    assert done["rows_expected"] == CUSTOMERS == done["rows_loaded"] + done["rows_quarantined"]
    driver.close()


def test_the_eta_counts_each_streams_step_time(
    each_state_db: Callable[..., Settings], tmp_path: Path
) -> None:
    driver = Driver(each_state_db(plan_ahead=4))
    db = driver.rt.db
    # Given customers (1,200 rows) and their order lines (2,400), side by side in 100-row chunks
    source = f"sqlite:///{tmp_path / 'legacy.db'}"
    build_source(source, customers=1200, orders=800)
    mid = submit(
        db, driver.publisher, spec_for(source, f"sqlite:///{tmp_path / 'c.db'}", chunk_rows=100)
    )
    # When six chunks of each have been loaded
    started: dict[int, int] = {}
    while driver.publisher.queue:
        task, kwargs = driver.publisher.queue.popleft()
        if task.endswith("extract"):
            with db.reading() as s:
                stream = s.scalar(select(Chunk.stream_id).where(Chunk.id == kwargs["chunk_id"]))
            assert stream is not None
            if started.get(stream, 0) >= DONE_CHUNKS:
                continue  # left for later: the migration stays running
            started[stream] = started.get(stream, 0) + 1
        driver.deliver(task, kwargs)
    with db.session() as s:
        ids = dict(
            s.execute(select(Stream.name, Stream.id).where(Stream.migration_id == mid)).all()
        )
    # and a customer row took 1 ms of steps, an order line 0.1 ms (as their timings say)
    for name, ms in (("Customers", 100), ("order_lines", 10)):
        with db.session() as s:
            s.execute(
                update(Chunk)
                .where(Chunk.stream_id == ids[name], Chunk.state == ChunkState.DONE)
                .values(extract_ms=ms // 2, transform_ms=ms // 4, load_ms=ms - ms // 2 - ms // 4)
            )
    # Then the one progress statement reads each stream's step time, all of it and the window's
    with db.reading() as s:
        now = db.now(s)
        rows = list(
            s.execute(progress_select(select(Migration.id).where(Migration.id == mid), now))
        )
    _, figures = figures_of(rows)[mid]
    by_cost = sorted(figures.streams, key=lambda st: st.work_ms)
    assert [(st.work_ms, st.recent_work_ms, st.rows) for st in by_cost] == [
        (60, 60, 600),
        (600, 600, 600),
    ]
    # And the ETA is each stream's rows left at its own cost over the shared pace
    lines, customers = by_cost
    usual = 660 / 1200
    prior = PRIOR_CHUNKS * 100
    work_left = customers.rows_left() * (600 + usual * prior) / (600 + prior) + (
        lines.rows_left() * (60 + usual * prior) / (600 + prior)
    )
    assert customers.rows_left() >= 600 and lines.rows_left() >= 1800
    eta = figures.eta_s(now)
    assert eta == pytest.approx(work_left / figures.pace(now), abs=0.1)
    # shorter than rows over rows/s, which takes an order line for as costly as a customer
    # (the ETA is rounded to a tenth of a second: on a fast machine it is under a second)
    left = customers.rows_left() + lines.rows_left()
    assert eta is not None and eta - 0.05 < 0.8 * left / figures.recent_rate(now)
    # And the API, the dashboard and the live process show it, the live one still in one query
    view = migration_view(db, mid)
    assert view["state"] == "running" and view["eta_s"] is not None
    assert abs(view["eta_s"] - eta) <= max(0.5 * eta, 1.0)  # read a moment later
    assert migration_progress(db, mid)["eta_s"] is not None
    counter = QueryCounter(db)
    assert live_snapshot(db).migrations[mid]["eta_s"] is not None
    assert counter.count == 1
    driver.close()
