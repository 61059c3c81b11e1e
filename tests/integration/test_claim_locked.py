"""A finishing load goes on with a ready chunk it has just locked: the claim is one
statement when the chunk is free (chunk_lease.claim_locked), and takes the long way
(claim_in) otherwise, with the same outcome."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select, update

from etl_tasks.chunk_lease import Claim, claim_locked, lease_clock
from etl_tasks.constants import FIRST_STEP, TASK_PLAN
from etl_tasks.settings import Settings
from etl_tasks.state.enums import ChunkState
from etl_tasks.state.models import Chunk
from tests.data import build_items, items_spec, sqlite_url, submit
from tests.harness import Driver


@pytest.fixture
def planned(
    each_state_db: Callable[..., Settings], tmp_path: Path
) -> Iterator[tuple[Driver, list[int]]]:
    """A migration's first chunks planned (their messages dropped), and a worker's runtime."""
    source = sqlite_url(tmp_path / "legacy.db")
    build_items(source, 100)
    driver = Driver(each_state_db(), "w1")
    spec = items_spec(source, sqlite_url(tmp_path / "target.db"), chunk_rows=10)
    mid = submit(driver.rt.db, driver.publisher, spec)
    driver.run(on_message=lambda task, _: task == TASK_PLAN)
    with driver.rt.db.reading() as s:
        ids = list(s.scalars(select(Chunk.id).where(Chunk.migration_id == mid).order_by(Chunk.seq)))
    try:
        yield driver, ids
    finally:
        driver.close()


def _claim(driver: Driver, chunk_id: int, statements: list[str] | None = None) -> Claim | None:
    db = driver.rt.db

    def seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statements is not None:
            statements.append(statement)

    event.listen(db.engine, "before_cursor_execute", seen)
    try:
        with db.session() as s:
            locked = s.get(Chunk, chunk_id, with_for_update={"key_share": True})
            assert locked is not None
            if statements is not None:
                statements.clear()  # the lock the caller took is not the claim's
            return claim_locked(driver.rt, s, chunk_id, FIRST_STEP.name, db.now(s), lease_clock())
    finally:
        event.remove(db.engine, "before_cursor_execute", seen)


def _chunk(driver: Driver, chunk_id: int) -> Chunk:
    with driver.rt.db.reading() as s:
        chunk = s.get(Chunk, chunk_id)
        assert chunk is not None
        return chunk


def _set(driver: Driver, chunk_id: int, **values: Any) -> None:
    with driver.rt.db.session() as s:
        s.execute(update(Chunk).where(Chunk.id == chunk_id).values(**values))


def test_a_free_chunk_is_claimed_in_one_statement(planned: tuple[Driver, list[int]]) -> None:
    # Given a planned chunk no one holds, on a worker that has read the migration's spec
    driver, ids = planned
    assert _claim(driver, ids[-1]) is not None  # the first claim reads the spec too
    before = _chunk(driver, ids[0])
    # When a finishing load claims it
    statements: list[str] = []
    taken = _claim(driver, ids[0], statements)
    # Then one UPDATE took it, and the claim is what the row now says
    assert len(statements) == 1 and statements[0].lstrip().upper().startswith("UPDATE")
    after = _chunk(driver, ids[0])
    assert taken is not None
    assert (taken.stream, taken.step, taken.token, taken.attempts) == (
        "items",
        FIRST_STEP.name,
        before.lease_token + 1,
        1,
    )
    assert (taken.lower, taken.upper, taken.rows_in, taken.extracted) == (
        before.lower,
        before.upper,
        None,
        False,
    )
    assert (after.state, after.lease_token, after.attempts) == ("running", taken.token, 1)
    assert after.lease_owner == after.worker == "w1"
    assert after.queued_at is None and after.started_at is not None
    assert after.lease_expires_at is not None


def test_a_chunk_out_of_attempts_is_failed_as_a_claim_fails_it(
    planned: tuple[Driver, list[int]],
) -> None:
    # Given a chunk whose step crashed its worker as often as allowed
    driver, ids = planned
    _set(driver, ids[1], attempts=driver.rt.settings.max_attempts, last_error="killed")
    # When a finishing load would go on with it
    taken = _claim(driver, ids[1])
    # Then it is not taken, and the chunk fails with its last error
    assert taken is None
    after = _chunk(driver, ids[1])
    assert after.state == ChunkState.FAILED
    assert "killed" in (after.last_error or "")


def test_a_chunk_another_worker_holds_is_left_to_it(planned: tuple[Driver, list[int]]) -> None:
    # Given a chunk whose lease another worker holds, not yet expired
    driver, ids = planned
    with driver.rt.db.session() as s:
        expires = driver.rt.db.now(s) + timedelta(minutes=5)
    _set(driver, ids[2], lease_owner="w2", lease_expires_at=expires)
    # When a finishing load would go on with it
    taken = _claim(driver, ids[2])
    # Then it is not taken and keeps its holder
    assert taken is None
    after = _chunk(driver, ids[2])
    assert (after.lease_owner, after.state, after.attempts) == ("w2", "pending", 0)
