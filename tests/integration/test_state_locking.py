"""Row locks on a PostgreSQL state DB: concurrent step commits queue, they never deadlock.

Two loads of one stream that both quarantined rows and both stopped at their
deadline commit at the same moment: each inserts rows pointing at the stream
(a foreign-key check takes a KEY SHARE lock on it), then locks the stream to
number the remainder chunk. With ``FOR UPDATE`` each waits for the other's KEY
SHARE lock and PostgreSQL kills one; with ``FOR NO KEY UPDATE`` the second waits
for the first to commit.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime

import pytest
from sqlalchemy import select

from etl_tasks.planning import add_chunks
from etl_tasks.splitting import split
from etl_tasks.state.db import ROW_LOCK, StateDB
from etl_tasks.state.enums import ChunkState, MigrationState, Step, StreamState
from etl_tasks.state.models import Chunk, Migration, QuarantinedRow, Stream


@pytest.fixture
def db(pg_url: str) -> Iterator[StateDB]:
    state = StateDB(pg_url)
    state.upgrade()
    yield state
    state.dispose()


def _stream_with_chunks(db: StateDB, count: int) -> tuple[int, list[int]]:
    with db.session() as s:
        now = db.now(s)
        s.add(
            Migration(
                id="m1",
                name="m",
                spec={},
                state=MigrationState.RUNNING,
                created_at=now,
                updated_at=now,
            )
        )
        stream = Stream(
            migration_id="m1",
            name="lines",
            position=0,
            state=StreamState.RUNNING,
            key_columns=["id"],
            chunk_rows=1000,
        )
        s.add(stream)
        s.flush()
        add_chunks(s, "m1", stream.id, [([i * 100], [i * 100 + 100]) for i in range(count)], now)
        chunks = list(s.scalars(select(Chunk).where(Chunk.stream_id == stream.id)))
        for chunk in chunks:  # each taken by a load
            chunk.state, chunk.step, chunk.lease_token = ChunkState.RUNNING, Step.LOAD, 3
        return stream.id, [c.id for c in chunks]


def test_two_splitting_commits_with_quarantined_rows_do_not_deadlock(db: StateDB) -> None:
    stream_id, chunk_ids = _stream_with_chunks(db, 2)
    both_inserted = threading.Barrier(2, timeout=10)
    errors: list[BaseException] = []

    def commit_load(chunk_id: int) -> None:
        try:
            with db.session() as s:
                now: datetime = db.now(s)
                chunk = s.get(Chunk, chunk_id, with_for_update=ROW_LOCK)
                assert chunk is not None
                s.add(
                    QuarantinedRow(
                        migration_id="m1",
                        stream_id=stream_id,
                        chunk_id=chunk_id,
                        key=f"[{chunk_id}]",
                        reason="bad",
                        row=None,
                        fencing_token=3,
                        created_at=now,
                    )
                )
                s.flush()  # the foreign-key checks: KEY SHARE on the stream row
                both_inserted.wait()
                split(s, chunk, [chunk.lower[0] + 50], now)  # locks the stream row
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=commit_load, args=(cid,)) for cid in chunk_ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    with db.reading() as s:
        seqs = sorted(s.scalars(select(Chunk.seq).where(Chunk.stream_id == stream_id)))
    assert seqs == [1, 2, 3, 4]  # both remainders planned, numbered one after the other
