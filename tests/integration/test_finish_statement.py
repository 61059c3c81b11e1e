"""A plain chunk's finish in one statement on a PostgreSQL state DB
(etl_tasks/steps/finish_statement.py): it records what the transaction recorded, claims
the next ready chunk as the transaction did, and leaves the rest to the usual way."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from etl_tasks.constants import TASK_EXTRACT
from etl_tasks.control import pause
from etl_tasks.settings import Settings
from etl_tasks.state.models import Chunk, Migration
from etl_tasks.steps import finish_statement
from etl_tasks.steps import load as load_module
from tests.harness import Driver
from tests.integration.test_ready_chunks import ROWS, _submitted  # 24 chunks, two queued


@pytest.fixture
def chained(make_settings: Callable[..., Settings], pg_state_url: str) -> Iterator[Driver]:
    """A chained worker on a PostgreSQL state DB: two chunks queued or running at once."""
    d = Driver(
        make_settings(database_url=pg_state_url, max_queued_chunks=2, plan_ahead=8), chain=True
    )
    yield d
    d.close()


@pytest.fixture
def statements(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """What each one-statement finish did; a finish that went the usual way adds nothing."""
    done: list[Any] = []
    real = finish_statement.finish_and_claim

    def recorded(*args: Any) -> Any:
        done.append(real(*args))
        return done[-1]

    monkeypatch.setattr(finish_statement, "finish_and_claim", recorded)
    return done


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The chunks finished loads went on with, held instead of run: one chunk at a time."""
    kept: list[Any] = []
    monkeypatch.setattr(load_module, "go_on_with", kept.append)
    return kept


def _before_finish(monkeypatch: pytest.MonkeyPatch, happens: Callable[[Any, Any], None]) -> None:
    """``happens(rt, claim)`` just before each load reports its chunk finished."""
    real = load_module.finish

    def first(rt: Any, c: Any, *args: Any, **kwargs: Any) -> Any:
        happens(rt, c)
        return real(rt, c, *args, **kwargs)

    monkeypatch.setattr(load_module, "finish", first)


def _chunks(driver: Driver, mid: str) -> dict[int, Chunk]:
    """The migration's chunks by their sequence number, in order."""
    with driver.rt.db.reading() as s:
        found = s.scalars(select(Chunk).where(Chunk.migration_id == mid).order_by(Chunk.seq))
        return {chunk.seq: chunk for chunk in found}


def test_a_chained_migration_finishes_its_chunks_in_one_statement_each(
    chained: Driver, statements: list[Any], tmp_path: Path
) -> None:
    # Given a migration of 24 chunks on a chained worker with a PostgreSQL state DB
    mid = _submitted(chained, tmp_path)
    # When it runs to its end
    assert chained.run_to_end(mid) == "succeeded"
    # Then every chunk was recorded done once, with its rows and its load's timing, and
    # the chunks the statements claimed ran on without a message each
    chunks = list(_chunks(chained, mid).values())
    assert sum(c.rows_out for c in chunks) == ROWS  # the last range is open-ended
    assert all(c.state == "done" for c in chunks)
    assert all(c.lease_owner is None and c.queued_at is None for c in chunks)
    assert all("load" in (c.timings or {}) and c.load_ms is not None for c in chunks)
    assert len(statements) >= len(chunks) - 2  # the first ones may come by message
    claimed = [f.claim for f in statements if f.claim is not None]
    assert len(claimed) >= len(chunks) - 4
    extracts = sum(1 for t, _ in chained.publisher.history if t == TASK_EXTRACT)
    assert extracts + len(claimed) >= len(chunks)
    assert extracts <= 4


def test_the_statement_claims_the_next_ready_chunk_as_a_claim_would(
    chained: Driver, statements: list[Any], held: list[Any], tmp_path: Path
) -> None:
    # Given a migration whose first two chunks were queued
    mid = _submitted(chained, tmp_path)
    # When the first chunk's steps run and its load finishes
    chained.run(max_messages=1)
    # Then its finish claimed the first ready chunk (the third) for its extract: running,
    # leased to this worker under a new token, one attempt, not marked queued
    finished = statements[0]
    assert finished.claim is not None and finished.stream_id is not None
    assert held == [finished.claim]
    rows = _chunks(chained, mid)
    assert rows[1].state == "done"
    taken = rows[3]
    assert finished.claim.chunk_id == taken.id
    assert (taken.state, taken.step, taken.attempts) == ("running", "extract", 1)
    assert taken.lease_owner == chained.rt.worker_name and taken.queued_at is None
    assert finished.claim.token == taken.lease_token == 1
    assert taken.lease_expires_at is not None and taken.started_at is not None
    # and it counted the chunks as the transaction did: one place left by this one and
    # taken by the claimed one, five ready after it
    assert (finished.room, finished.ready) == (0, 5)


def test_a_finish_whose_lease_was_taken_over_records_and_claims_nothing(
    chained: Driver,
    statements: list[Any],
    held: list[Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a chunk whose load is under way when another worker takes its lease over
    mid = _submitted(chained, tmp_path)

    def taken_over(rt: Any, c: Any) -> None:
        with rt.db.session() as s:
            s.execute(update(Chunk).where(Chunk.id == c.chunk_id).values(lease_token=c.token + 1))

    _before_finish(monkeypatch, taken_over)
    # When its load finishes
    chained.run(max_messages=1)
    # Then the statement found the chunk no longer its own: nothing recorded, none claimed
    assert statements and statements[0].stream_id is None and statements[0].claim is None
    assert held == []
    chunks = _chunks(chained, mid)
    assert chunks[1].state == "running" and chunks[1].finished_at is None
    assert all(c.state == "pending" for seq, c in chunks.items() if seq > 2)


def test_a_paused_migrations_next_chunk_is_not_claimed(
    chained: Driver,
    statements: list[Any],
    held: list[Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a migration paused while a load of it is under way
    mid = _submitted(chained, tmp_path)
    _before_finish(monkeypatch, lambda rt, c: pause(rt.db, mid, "operator"))
    # When the load finishes
    chained.run(max_messages=1)
    # Then its chunk is recorded done, and no chunk was claimed or queued in its place
    assert statements[0].stream_id is not None and statements[0].claim is None
    assert held == []
    chunks = _chunks(chained, mid)
    assert chunks[1].state == "done"
    assert all(c.state == "pending" and c.queued_at is None for s, c in chunks.items() if s > 2)


def test_room_for_more_chunks_is_filled_by_message_after_the_statement(
    chained: Driver, statements: list[Any], held: list[Any], tmp_path: Path
) -> None:
    # Given a migration with two chunks queued, and room made for four
    mid = _submitted(chained, tmp_path)
    chained.rt.settings = chained.rt.settings.model_copy(update={"max_queued_chunks": 4})
    # When the first chunk's load finishes
    chained.run(max_messages=1)
    # Then the statement claimed the next ready chunk, and two more were queued by message:
    # four queued or running
    assert statements[0].claim is not None and statements[0].room == 2
    assert held == [statements[0].claim]
    chunks = list(_chunks(chained, mid).values())
    busy = [c for c in chunks if c.state == "running" or c.queued_at is not None]
    assert len(busy) == 4
    sent = [kw["chunk_id"] for t, kw in chained.publisher.queue if t == TASK_EXTRACT]
    assert sorted(sent) == sorted(c.id for c in chunks if c.queued_at is not None)


def test_a_waiting_migration_is_no_longer_marked_once_a_chunk_went_through(
    chained: Driver, statements: list[Any], held: list[Any], tmp_path: Path
) -> None:
    # Given a running migration marked waiting (a connection slot, an outage)
    mid = _submitted(chained, tmp_path)
    with chained.rt.db.session() as s:
        s.execute(update(Migration).where(Migration.id == mid).values(waiting_reason="outage"))
    # When a chunk of it finishes
    chained.run(max_messages=1)
    # Then the mark is gone
    assert statements[0].waiting
    with chained.rt.db.reading() as s:
        assert s.scalar(select(Migration.waiting_reason).where(Migration.id == mid)) is None
