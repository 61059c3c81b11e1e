"""A finished chunk queues the migration's next one in its place, in the transaction
that records it (etl_tasks/ready_chunks.py): chunks keep flowing without an advance
each, an advance is asked for only when the ready chunks run low, and a paused
migration's chunks stay unqueued."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from etl_tasks.constants import TASK_EXTRACT, TASK_LOAD, TASK_PLAN, TASK_TRANSFORM
from etl_tasks.control import pause
from etl_tasks.ready_chunks import queue_ready
from etl_tasks.settings import Settings
from etl_tasks.state.models import Chunk
from tests.data import build_items, items_spec, sqlite_url, submit
from tests.harness import Driver

ROWS, CHUNK_ROWS = 2400, 100  # 24 chunks


@pytest.fixture
def narrow(make_settings: Callable[..., Settings]) -> Iterator[Driver]:
    """Two chunks queued or running at once, eight planned ahead: ready chunks run low
    when fewer than four are left."""
    d = Driver(make_settings(max_queued_chunks=2, plan_ahead=8))
    yield d
    d.close()


def _submitted(driver: Driver, tmp_path: Path) -> str:
    source = sqlite_url(tmp_path / "legacy.db")
    build_items(source, ROWS)
    spec = items_spec(source, sqlite_url(tmp_path / "target.db"), chunk_rows=CHUNK_ROWS)
    mid = submit(driver.rt.db, driver.publisher, spec)
    driver.run(max_messages=1)  # the first advance: plans eight, queues two
    return mid


def _take(driver: Driver, task: str) -> dict[str, object]:
    """The first queued message of ``task``, taken off the queue."""
    queue = driver.publisher.queue
    found = next(m for m in queue if m[0] == task)
    queue.remove(found)
    return found[1]


def _run_one_chunk(driver: Driver) -> None:
    for task in (TASK_EXTRACT, TASK_TRANSFORM, TASK_LOAD):
        driver.deliver(task, _take(driver, task))


def _queued(driver: Driver, task: str) -> int:
    return sum(1 for t, _ in driver.publisher.queue if t == task)


def test_a_finished_chunk_queues_the_next_one_without_an_advance(
    narrow: Driver, tmp_path: Path
) -> None:
    # Given a migration whose first advance queued two of its eight planned chunks
    _submitted(narrow, tmp_path)
    assert _queued(narrow, TASK_EXTRACT) == 2
    # When one chunk runs to its end
    _run_one_chunk(narrow)
    # Then its place went to the next chunk at once, and no advance was asked for (five
    # ready chunks are left, more than half of those planned ahead)
    assert _queued(narrow, TASK_EXTRACT) == 2
    assert _queued(narrow, TASK_PLAN) == 0


def test_an_advance_is_asked_for_when_the_ready_chunks_run_low(
    narrow: Driver, tmp_path: Path
) -> None:
    # Given a migration with eight chunks planned, two of them queued
    mid = _submitted(narrow, tmp_path)
    # When chunks finish until fewer than four ready ones are left
    _run_one_chunk(narrow)
    _run_one_chunk(narrow)
    assert _queued(narrow, TASK_PLAN) == 0
    _run_one_chunk(narrow)
    # Then the chunk that left three asks for an advance, which plans more
    assert _queued(narrow, TASK_PLAN) == 1
    narrow.deliver(TASK_PLAN, _take(narrow, TASK_PLAN))
    with narrow.rt.db.reading() as s:
        planned = s.scalar(select(func.count()).select_from(Chunk).where(Chunk.migration_id == mid))
    assert planned is not None and planned > 8
    # And the migration ends with every row, on far fewer advances than chunks
    assert narrow.run_to_end(mid) == "succeeded"
    history = narrow.publisher.history
    plans = sum(1 for t, _ in history if t == TASK_PLAN)
    assert plans <= ROWS // CHUNK_ROWS // 2
    with narrow.rt.db.reading() as s:
        rows = s.scalar(select(func.sum(Chunk.rows_out)).where(Chunk.migration_id == mid))
    assert rows == ROWS


def test_a_paused_migrations_chunks_stay_unqueued(narrow: Driver, tmp_path: Path) -> None:
    # Given a migration with six ready chunks, paused
    mid = _submitted(narrow, tmp_path)
    pause(narrow.rt.db, mid, "operator")
    # When a load of it that was under way finishes its chunk and queues the next ones
    with narrow.rt.db.session() as s:
        queued = queue_ready(s.connection(), narrow.rt.settings, mid, narrow.rt.db.now(s))
    # Then none is queued (a resume queues them), and none was marked queued
    assert queued.ids == []
    with narrow.rt.db.reading() as s:
        marked = s.scalar(
            select(func.count())
            .select_from(Chunk)
            .where(Chunk.migration_id == mid, Chunk.queued_at.is_not(None))
        )
    assert marked == 2  # the two the first advance queued
