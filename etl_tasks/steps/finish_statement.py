"""A plain chunk's finish in one statement: recorded done, the next ready chunk claimed.

The usual finish (:func:`etl_tasks.steps.finish.finish`) is one transaction: ``BEGIN``,
the chunk marked done, the ready chunks counted, the next one locked, then claimed,
``COMMIT``: six of the ten or so round trips a chunk made, each costing the worker's
Python and the server alike. On PostgreSQL, a plain chunk (loaded whole, no row set
aside) whose load goes on with the migration's next chunk on its thread does it all in
one statement that commits by itself: data-modifying ``WITH`` clauses mark it done,
count the busy and ready chunks as the transaction did (before this one was marked),
lock the first ready chunk ``SKIP LOCKED`` and claim it, and return all of it. The
steps still commit their state one by one; this one only commits two rows' changes
together, as before.

What the statement does not do goes the usual way after it: a waiting migration's mark
cleared, the stream's next chunk size changed, room for more than one chunk filled, a
ready chunk that was not free to claim queued by message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, exists, select, true, update

from etl_tasks.chunk_lease import (
    CLAIM_RETURNING,
    CLAIM_VALUES,
    FREE_TO_CLAIM,
    Claim,
    claim_params,
    lease_clock,
    taken,
    timed,
)
from etl_tasks.connectors.base import LedgerRecord
from etl_tasks.constants import FIRST_STEP
from etl_tasks.ready_chunks import (
    BUSY,
    READY_COUNT,
    READY_WHERE,
    Queued,
    ready_limit,
    spare_chunks,
)
from etl_tasks.runtime import Runtime
from etl_tasks.state import driver_statements
from etl_tasks.state.db import ROW_LOCK
from etl_tasks.state.enums import ChunkState, Step
from etl_tasks.state.models import CHUNKS, MIGRATIONS, STREAMS


@dataclass(frozen=True)
class Finished:
    """What the statement did: the chunk's stream (None: ``c`` no longer held it), the
    migration's waiting mark, what sizes the stream's next chunks (the rows handled, the
    steps' timings, the stream's size), the next chunk claimed, and how many more chunks
    there is room for and are ready."""

    stream_id: int | None
    waiting: bool = False
    rows: int = 0
    timings: dict[str, int] = field(default_factory=dict)
    chunk_rows: int | None = None
    claim: Claim | None = None
    room: int = 0
    ready: int = 0


#: What a chunk marked done reads back, whichever way it is marked: its stream, its rows
#: extracted, the stream's chunk size, and whether its migration is marked waiting.
DONE_RETURNING = (
    CHUNKS.c.stream_id,
    CHUNKS.c.rows_in,
    select(STREAMS.c.chunk_rows)
    .where(STREAMS.c.id == CHUNKS.c.stream_id)
    .scalar_subquery()
    .label("chunk_rows"),
    select(MIGRATIONS.c.waiting_reason.is_not(None))
    .where(MIGRATIONS.c.id == CHUNKS.c.migration_id)
    .scalar_subquery()
    .label("waiting"),
)


def _statement() -> Any:
    done = (
        update(CHUNKS)
        .where(CHUNKS.c.id == bindparam("chunk"), CHUNKS.c.lease_token == bindparam("token"))
        .values(
            state=ChunkState.DONE,
            step=Step.LOAD,
            finished_at=bindparam("done_at", type_=CHUNKS.c.finished_at.type),
            rows_out=bindparam("done_rows"),
            rows_quarantined=0,
            lease_owner=None,
            lease_expires_at=None,
            queued_at=None,
            timings=bindparam("done_timings", type_=CHUNKS.c.timings.type),
            load_ms=bindparam("done_load_ms", type_=CHUNKS.c.load_ms.type),
        )
        .returning(*DONE_RETURNING)
        .cte("done")
    )
    # Seen as they were before the statement, as the transaction counted them: the chunk
    # finished here is still among the busy ones.
    counts = select(BUSY.scalar_subquery().label("busy"), READY_COUNT.label("ready")).cte("counts")
    following = (
        select(CHUNKS.c.id)
        .where(
            *READY_WHERE,
            exists(select(done.c.stream_id)),
            select(counts.c.busy).scalar_subquery() <= bindparam("max_queued"),
        )
        .order_by(CHUNKS.c.id)
        .limit(1)
        .with_for_update(of=CHUNKS, skip_locked=True, **ROW_LOCK)
        .cte("following")
    )
    claimed = (
        update(CHUNKS)
        .where(CHUNKS.c.id.in_(select(following.c.id)), *FREE_TO_CLAIM)
        .values(**CLAIM_VALUES)
        .returning(*CLAIM_RETURNING)
        .cte("claimed")
    )
    return select(
        done.c.stream_id.label("done_stream_id"),
        done.c.rows_in.label("done_rows_in"),
        done.c.chunk_rows.label("done_chunk_rows"),
        done.c.waiting.label("done_waiting"),
        counts.c.busy.label("done_busy"),
        counts.c.ready.label("done_ready"),
        *claimed.c,
    ).select_from(done.join(counts, true()).outerjoin(claimed, true()))


_FINISH_AND_CLAIM = _statement()


def available(rt: Runtime) -> bool:
    """Whether the state DB runs the statement: PostgreSQL's data-modifying ``WITH``."""
    return rt.db.dialect == "postgresql"


def finish_and_claim(rt: Runtime, c: Claim, record: LedgerRecord, load_ms: int) -> Finished:
    """Run the statement for ``c``, and read what it did."""
    with rt.db.one_statement() as conn:
        leased_at = lease_clock()
        now: datetime = rt.db.now(conn)
        timings = timed(c, load_ms)["timings"]
        params = {
            "chunk": c.chunk_id,
            "token": c.token,
            # named apart from the columns: a parameter named after one would be set
            # by every UPDATE of the statement
            "done_at": now,
            "done_rows": record.rows_loaded,
            "done_timings": timings,
            "done_load_ms": load_ms,
            "migration": c.migration_id,
            "ready_limit": ready_limit(rt.settings),
            "max_queued": rt.settings.max_queued_chunks,
            **claim_params(rt, FIRST_STEP.name, now),
        }
        row = driver_statements.execute(conn, _FINISH_AND_CLAIM, params).one_or_none()
        if row is None:
            return Finished(None)
        claim = None if row.id is None else taken(rt, conn, row, FIRST_STEP.name, leased_at)
    # Room after this chunk left it, and after the one claimed took its place
    room = rt.settings.max_queued_chunks - (row.done_busy - 1) - (claim is not None)
    # A chunk locked but not free to claim (its lease to judge, attempts used up) is
    # still ready: it goes by message, after the statement
    ready = row.done_ready - (claim is not None)
    return Finished(
        int(row.done_stream_id),
        bool(row.done_waiting),
        min(row.done_rows_in or 0, record.rows_loaded),
        timings,
        row.done_chunk_rows,
        claim,
        max(0, room),
        ready,
    )


def queued(f: Finished, rt: Runtime) -> Queued:
    """What :func:`~etl_tasks.ready_chunks.queue_ready` would have said of the ready chunks
    left, when no more were queued after the statement."""
    return Queued([], running_low=f.ready < spare_chunks(rt.settings))
