"""An advance is asked for once however many chunks finish before it starts
(etl_tasks/plan_requests.py), on a real Redis, and no chunk is left unplanned."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import func, select

from etl_tasks import plan_requests, planning
from etl_tasks.advance import advance
from etl_tasks.constants import TASK_LOAD, TASK_PLAN
from etl_tasks.plan_requests import plan_started, request_plan
from etl_tasks.settings import Settings
from etl_tasks.state.models import Chunk
from tests.data import build_items, items_spec, sqlite_url, submit
from tests.harness import Driver


def _plans(driver: Driver) -> int:
    return sum(1 for task, _ in driver.publisher.queue if task == TASK_PLAN)


def test_chunks_finishing_before_an_advance_starts_ask_for_it_once(driver: Driver) -> None:
    # Given an advance already asked for
    assert request_plan(driver.rt, "m-1")
    # When four more chunks of the migration finish before it starts
    asked = [request_plan(driver.rt, "m-1") for _ in range(4)]
    # Then none of them sends another, while another migration's chunk does
    assert asked == [False] * 4
    assert request_plan(driver.rt, "m-2")
    assert _plans(driver) == 2


def test_a_chunk_finishing_after_the_advance_started_asks_again(driver: Driver) -> None:
    request_plan(driver.rt, "m-1")
    # When the advance starts (it clears the flag before reading the state DB)
    advance(driver.rt, "m-1")  # no such migration: it reads nothing, but clears
    # Then the next chunk to finish sends a new one
    assert request_plan(driver.rt, "m-1")
    plan_started(driver.rt, "m-1")
    assert request_plan(driver.rt, "m-1")
    assert _plans(driver) == 3


def test_an_advance_that_never_starts_is_asked_for_again(
    driver: Driver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an advance asked for whose message was lost
    monkeypatch.setattr(plan_requests, "PLAN_DUE_S", 0.2)
    assert request_plan(driver.rt, "m-1")
    driver.publisher.queue.clear()
    # When its flag has expired
    time.sleep(0.35)
    # Then a finished chunk asks again
    assert request_plan(driver.rt, "m-1")


def test_without_the_staging_redis_every_chunk_asks(
    make_settings: Callable[..., Settings],
) -> None:
    lost = Driver(make_settings(staging_url="redis://127.0.0.1:1/0"))
    try:
        assert request_plan(lost.rt, "m-1")
        assert request_plan(lost.rt, "m-1")
        assert _plans(lost) == 2
    finally:
        lost.close()


def test_a_migration_finishes_with_fewer_advances_than_chunks(
    driver: Driver, tmp_path: Path
) -> None:
    # Given a migration of a dozen chunks, several of them in flight at once
    source = sqlite_url(tmp_path / "legacy.db")
    build_items(source, 1200)
    spec = items_spec(source, sqlite_url(tmp_path / "target.db"), chunk_rows=100)
    mid = submit(driver.rt.db, driver.publisher, spec)
    # When it runs to the end
    assert driver.run_to_end(mid) == "succeeded"
    # Then every row arrived, and loads finishing before an advance started shared it
    history = driver.publisher.history
    loads = sum(1 for task, _ in history if task == TASK_LOAD)
    plans = sum(1 for task, _ in history if task == TASK_PLAN)
    assert loads >= 12
    assert plans < loads
    with driver.rt.db.reading() as s:
        rows = s.scalar(select(func.sum(Chunk.rows_out)).where(Chunk.migration_id == mid))
    assert rows == 1200


def test_planning_adds_chunks_in_batches_not_one_per_finished_chunk(
    make_settings: Callable[..., Settings], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a migration of 120 chunks, a chained worker, and 16 chunks planned ahead of
    # which 8 may be queued or running at once
    driver = Driver(make_settings(plan_ahead=16, max_queued_chunks=8), chain=True)
    source = sqlite_url(tmp_path / "legacy.db")
    build_items(source, 1200)
    spec = items_spec(source, sqlite_url(tmp_path / "target.db"), chunk_rows=10)
    mid = submit(driver.rt.db, driver.publisher, spec)
    planned: list[int] = []
    real = planning._record

    def recording(*args: object, **kwargs: object) -> int:
        added = real(*args, **kwargs)  # type: ignore[arg-type]
        if added:
            planned.append(added)
        return added

    monkeypatch.setattr(planning, "_record", recording)
    try:
        # When it runs to the end
        assert driver.run_to_end(mid) == "succeeded"
    finally:
        driver.close()
    # Then each round of planning added many chunks: the chunks queued for a worker do
    # not count as waiting to be sent, so planning is not one chunk behind each finish
    assert sum(planned) >= 120
    assert len(planned) <= 120 / 4, planned
