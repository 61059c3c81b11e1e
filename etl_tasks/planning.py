"""Planning: cut a stream into keyset chunks, lazily, a window ahead of execution.

Boundaries come from index scans on the source (``ORDER BY key OFFSET n-1
LIMIT 1`` after the previous boundary); the last range stays open-ended so
rows added meanwhile are not missed. Two planners racing on one stream are
harmless: the stream's ``plan_seq`` lets only one of them write its chunks.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.orm import Session

from etl_tasks import codec
from etl_tasks.budget import SAMPLE_ROWS, row_bytes, weighed
from etl_tasks.codec import NULL_KEYS
from etl_tasks.connectors.base import Range, Unpaced
from etl_tasks.runtime import Runtime
from etl_tasks.state.enums import ChunkState, Step
from etl_tasks.state.models import CHUNKS, STREAMS

log = logging.getLogger(__name__)


# Built once: planning runs at every advance of every running stream.
_PLAN_STATE = select(
    STREAMS.c.fully_planned,
    STREAMS.c.plan_seq,
    STREAMS.c.name,
    STREAMS.c.chunk_rows,
    STREAMS.c.planned_until,
).where(STREAMS.c.id == bindparam("stream"))
#: Chunks planned and not yet sent: a queued one is on its way to a worker, so counting
#: it would leave planning one chunk behind each finish (the ready ones run low as soon
#: as half of ``plan_ahead`` is queued, and each plan would then add one or two).
_WAITING = (
    select(func.count())
    .select_from(CHUNKS)
    .where(
        CHUNKS.c.stream_id == bindparam("stream"),
        CHUNKS.c.state == ChunkState.PENDING,
        CHUNKS.c.queued_at.is_(None),
    )
)
_PLANNED = update(STREAMS).where(
    STREAMS.c.id == bindparam("stream"), STREAMS.c.plan_seq == bindparam("seen_seq")
)
_LAST_SEQ = select(func.max(CHUNKS.c.seq)).where(CHUNKS.c.stream_id == bindparam("stream"))
_ADD_CHUNKS = insert(CHUNKS)


def plan_more(rt: Runtime, migration_id: str, stream_id: int) -> int | None:
    """Plan chunks until ``plan_ahead`` wait unsent; return how many were added here, or
    None when the stream has nothing left to plan (fully planned, or gone). Zero: enough
    chunks wait already, or another planner added the next ones first."""
    with rt.db.reading() as s:
        conn = s.connection()
        stream = conn.execute(_PLAN_STATE, {"stream": stream_id}).one_or_none()
        if stream is None or stream.fully_planned:
            return None
        room = rt.settings.plan_ahead - (conn.scalar(_WAITING, {"stream": stream_id}) or 0)
        if room <= 0:
            return 0
        seen_seq, name, rows = stream.plan_seq, stream.name, stream.chunk_rows
        lower = codec.decode_key(stream.planned_until)
    first = seen_seq == 0
    sized = first_chunk_rows(rt, migration_id, name, rows) if first else rows
    ranges, complete = boundaries(rt, migration_id, name, lower, sized, room)
    if first and rt.spec(migration_id).stream(name).on_null_key == "quarantine":
        ranges.insert(0, ((NULL_KEYS,), (NULL_KEYS,)))  # planned once, with the first ranges
    resized = None if sized == rows else sized
    return _record(rt, migration_id, stream_id, seen_seq, ranges, complete, resized)


def first_chunk_rows(rt: Runtime, migration_id: str, stream: str, rows: int) -> int:
    """The size of a stream's first chunks: ``rows``, or fewer when that many of its first
    rows would take more than :data:`~etl_tasks.budget.CHUNK_BYTES` of a worker's memory
    (read from its first :data:`~etl_tasks.budget.SAMPLE_ROWS`). Loads weigh their chunks
    too, but only once the first ones are in memory: a worker's four threads each holding
    a 5,000-row chunk of 2 KB rows took it past 250 MB whatever came after."""
    source = rt.source(migration_id, stream)
    ranges, _ = source.boundaries(None, SAMPLE_ROWS, 1)
    if not ranges:
        return rows
    sample, _ = source.read_range(None, ranges[0][1], Unpaced())
    return weighed(rows, row_bytes(sample))


def boundaries(
    rt: Runtime,
    migration_id: str,
    stream: str,
    lower: tuple[Any, ...] | None,
    rows: int,
    count: int,
) -> tuple[list[Range], bool]:
    """Up to ``count`` ranges of ``rows`` rows after ``lower``; True when the last is open."""
    return rt.source(migration_id, stream).boundaries(lower, rows, count)


def _record(
    rt: Runtime,
    migration_id: str,
    stream_id: int,
    seen_seq: int,
    ranges: list[Range],
    complete: bool,
    chunk_rows: int | None = None,
) -> int:
    """Add the ranges as chunks, unless another planner of the stream got there first.
    ``chunk_rows``: the size the first ones were cut at, when not the stream's (its next
    chunks are sized from it)."""
    if not ranges:
        return 0
    with rt.db.session() as s:
        now = rt.db.now(s)
        values = {
            "stream": stream_id,
            "seen_seq": seen_seq,
            "plan_seq": seen_seq + 1,
            "fully_planned": complete,
            "planned_until": _encode(ranges[-1][1]),
            **({} if chunk_rows is None else {"chunk_rows": chunk_rows}),
        }
        won = s.connection().execute(_PLANNED, values).rowcount
        if not won:
            return 0  # another planner got there first; its chunks stand
        add_chunks(
            s,
            migration_id,
            stream_id,
            [(_encode(lo), _encode(hi)) for lo, hi in ranges],
            now,
        )
    log.info(
        "planned %d chunks",
        len(ranges),
        extra={"migration_id": migration_id, "stream_id": stream_id, "complete": complete},
    )
    return len(ranges)


def _encode(bound: tuple[Any, ...] | None) -> list[Any] | None:
    if bound is not None and bound[0] is NULL_KEYS:
        return list(codec.NULL_KEYS_BOUND)
    return codec.encode_key(bound)


def add_chunks(
    s: Session,
    migration_id: str,
    stream_id: int,
    bounds: list[tuple[list[Any] | None, list[Any] | None]],
    now: datetime,
    keys: list[list[Any]] | None = None,
) -> None:
    """New pending chunks with these (encoded) bounds, numbered after the stream's last;
    ``keys``: each one's key set (a retry's chunks), in the order of ``bounds``.

    One statement, not the ORM's unit of work: planning adds a window of chunks at a time,
    and flushing them as objects took a tenth of a worker's CPU when chunks were small.
    The caller holds the stream row's lock (planning updates it, a split selects it for
    update), so two writers never take the same numbers.
    """
    seq = s.scalar(_LAST_SEQ, {"stream": stream_id}) or 0
    rows = [
        {
            "migration_id": migration_id,
            "stream_id": stream_id,
            "seq": n,
            "lower": lower,
            "upper": upper,
            "state": ChunkState.PENDING,
            "step": Step.EXTRACT,
            "attempts": 0,
            "retries": 0,
            "lease_token": 0,
            "created_at": now,
        }
        for n, (lower, upper) in enumerate(bounds, seq + 1)
    ]
    if keys is not None:  # left out otherwise: a None would be stored as JSON's null, not NULL
        for row, key_set in zip(rows, keys, strict=True):
            row["keys"] = key_set
    s.connection().execute(_ADD_CHUNKS, rows)
