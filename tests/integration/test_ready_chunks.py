"""A finished chunk queues the migration's next one in its place, in the transaction
that records it (etl_tasks/ready_chunks.py): chunks keep flowing without an advance
each, the load that leaves the ready chunks low plans the next ones itself, and a
paused migration's chunks stay unqueued."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from etl_tasks import planning
from etl_tasks.constants import TASK_EXTRACT, TASK_LOAD, TASK_PLAN, TASK_TRANSFORM
from etl_tasks.control import pause
from etl_tasks.errors import EndpointUnavailable
from etl_tasks.ready_chunks import queue_ready
from etl_tasks.settings import Settings
from etl_tasks.state.models import Chunk
from etl_tasks.steps import finish as finish_module
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


def test_a_load_that_leaves_the_ready_chunks_low_plans_the_next_ones_itself(
    narrow: Driver, tmp_path: Path
) -> None:
    # Given a migration with eight chunks planned, two of them queued
    mid = _submitted(narrow, tmp_path)
    # When chunks finish until fewer than four ready ones are left
    _run_one_chunk(narrow)
    _run_one_chunk(narrow)
    assert _planned(narrow, mid) == 8
    _run_one_chunk(narrow)
    # Then the load that left three planned more itself: no advance waits for a thread
    assert _planned(narrow, mid) > 8
    assert _queued(narrow, TASK_PLAN) == 0
    # And the migration ends with every row, on far fewer advances than chunks (those
    # that settle it)
    assert narrow.run_to_end(mid) == "succeeded"
    history = narrow.publisher.history
    plans = sum(1 for t, _ in history if t == TASK_PLAN)
    assert plans <= ROWS // CHUNK_ROWS // 4
    with narrow.rt.db.reading() as s:
        rows = s.scalar(select(func.sum(Chunk.rows_out)).where(Chunk.migration_id == mid))
    assert rows == ROWS


def test_a_load_that_cannot_plan_asks_for_an_advance(
    narrow: Driver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a source that cannot be read for boundaries just now
    mid = _submitted(narrow, tmp_path)

    def unreachable(*_: object) -> int:
        raise EndpointUnavailable("connect", "connection refused")

    monkeypatch.setattr(finish_module, "plan_more", unreachable)
    # When chunks finish until the ready ones run low
    for _ in range(3):
        _run_one_chunk(narrow)
    # Then the load asked for an advance, which plans (and deals with the failure)
    assert _queued(narrow, TASK_PLAN) == 1
    monkeypatch.undo()
    assert narrow.run_to_end(mid) == "succeeded"


def test_a_load_whose_planning_another_worker_won_asks_for_no_advance(
    narrow: Driver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a migration whose ready chunks run low at the next load, and another worker
    # that plans the stream while this one reads the source for its boundaries
    mid = _submitted(narrow, tmp_path)
    _run_one_chunk(narrow)
    _run_one_chunk(narrow)
    real_boundaries = planning.boundaries

    def raced(*args: Any) -> Any:
        monkeypatch.setattr(planning, "boundaries", real_boundaries)
        assert planning.plan_more(narrow.rt, mid, _stream_id(narrow, mid))  # the other wins
        return real_boundaries(*args)

    monkeypatch.setattr(planning, "boundaries", raced)
    # When the load that leaves them low plans, and loses to the other planner
    _run_one_chunk(narrow)
    # Then the other's chunks stand and no advance was asked for: nothing is left to do
    assert _planned(narrow, mid) > 8
    assert _queued(narrow, TASK_PLAN) == 0
    assert narrow.run_to_end(mid) == "succeeded"


def _stream_id(driver: Driver, mid: str) -> int:
    with driver.rt.db.reading() as s:
        return int(s.scalar(select(Chunk.stream_id).where(Chunk.migration_id == mid).limit(1)))


def test_a_chained_thread_that_finds_no_ready_chunk_plans_one_and_goes_on(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    # Given a chained worker that keeps one chunk queued or running, one planned ahead:
    # each chunk it finishes leaves none ready
    driver = Driver(make_settings(max_queued_chunks=1, plan_ahead=1), chain=True)
    try:
        mid = _submitted(driver, tmp_path)
        # When it runs the migration
        assert driver.run_to_end(mid) == "succeeded"
        # Then the one task it was sent went on from chunk to chunk, planning as it went:
        # no chunk waited for a message
        extracts = sum(1 for t, _ in driver.publisher.history if t == TASK_EXTRACT)
        assert extracts == 1
        assert _planned(driver, mid) >= ROWS // CHUNK_ROWS
    finally:
        driver.close()


def _planned(driver: Driver, mid: str) -> int:
    with driver.rt.db.reading() as s:
        return (
            s.scalar(select(func.count()).select_from(Chunk).where(Chunk.migration_id == mid)) or 0
        )


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


def test_ready_chunks_that_other_loads_hold_locked_still_count_as_ready(
    make_settings: Callable[..., Settings], pg_state_url: str, tmp_path: Path
) -> None:
    # Given a migration on a PostgreSQL state DB with six ready chunks (two queued)
    driver = Driver(make_settings(database_url=pg_state_url, max_queued_chunks=2, plan_ahead=8))
    try:
        mid = _submitted(driver, tmp_path)
        with driver.rt.db.reading() as s:
            ready = list(
                s.scalars(
                    select(Chunk.id)
                    .where(Chunk.migration_id == mid, Chunk.queued_at.is_(None))
                    .order_by(Chunk.id)
                )
            )
        assert len(ready) == 6
        # When loads finishing at the same moment hold four of them locked (as each
        # finish's queueing locks the ready chunks it looks at)
        # Then this one does not take the locked chunks for missing: six are ready, more
        # than half of those planned ahead, and no advance is needed
        assert not _running_low_while_locked(driver, mid, ready[:4])
        # and with three ready, whoever holds them, the ready chunks do run low
        with driver.rt.db.session() as s:
            s.execute(update(Chunk).where(Chunk.id.in_(ready[4:])).values(queued_at=func.now()))
            s.execute(update(Chunk).where(Chunk.id == ready[3]).values(state="done"))
        assert _running_low_while_locked(driver, mid, ready[:2])
    finally:
        driver.close()


def _running_low_while_locked(driver: Driver, mid: str, locked: list[int]) -> bool:
    """What a finished chunk's queueing says while another transaction holds ``locked``."""
    with driver.rt.db.engine.connect() as other, other.begin():
        other.execute(select(Chunk.id).where(Chunk.id.in_(locked)).with_for_update(key_share=True))
        with driver.rt.db.session() as s:
            queued = queue_ready(s.connection(), driver.rt.settings, mid, driver.rt.db.now(s))
        assert queued.ids == []  # two are queued already: no room
        return queued.running_low
