"""Planning a verification on a worker: its key ranges, once its migration has succeeded.

A stream whose target key is its source key unchanged gets one range per done
chunk, with the chunk's own bounds: planning reads no key from the source (the
bounds are in the state DB), each range is about one step's worth of rows (chunk
sizes adapt to the step budget), the rows quarantined in a range are exactly those
recorded with its chunk, and together the ranges cover the whole key space (the
first chunk starts open, the last ends open, a split leaves no gap). Any other
stream cannot be cut by the source's key in its target, so it gets one range: the
whole stream.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from etl_tasks.errors import PermanentError, TransientError
from etl_tasks.runtime import Runtime
from etl_tasks.state.db import ROW_LOCK
from etl_tasks.state.enums import ChunkState, MigrationState, RangeState, VerificationState
from etl_tasks.state.models import Chunk, Event, Migration, Stream, Verification, VerificationRange

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PlannedRange:
    stream_id: int
    chunk_id: int | None
    lower: list[Any] | None
    upper: list[Any] | None


def plan(rt: Runtime, verification_id: int) -> None:
    """Plan the ranges of a pending verification whose migration succeeded; else nothing."""
    with rt.db.reading() as s:
        v = s.get(Verification, verification_id)
        if v is None or v.planned or v.state != VerificationState.PENDING:
            return
        mig = s.get(Migration, v.migration_id)
        migration_id, state = v.migration_id, mig.state if mig else MigrationState.CANCELLED
    if state == MigrationState.CANCELLED:
        finish(rt, verification_id, VerificationState.FAILED, "the migration was cancelled")
        return
    if state != MigrationState.SUCCEEDED:
        return  # "verify": true waits for its migration
    try:
        ranges = _ranges(rt, migration_id)
    except TransientError as exc:
        log.warning("verification %s waits: %s", verification_id, exc)
        return  # the next sweep tries again
    except PermanentError as exc:
        finish(rt, verification_id, VerificationState.FAILED, str(exc))
        return
    _record(rt, verification_id, ranges)


def _ranges(rt: Runtime, migration_id: str) -> list[PlannedRange]:
    with rt.db.reading() as s:
        streams = list(
            s.scalars(
                select(Stream).where(Stream.migration_id == migration_id).order_by(Stream.position)
            )
        )
        chunks = s.execute(
            select(Chunk.stream_id, Chunk.id, Chunk.lower, Chunk.upper, Chunk.keys)
            .where(Chunk.migration_id == migration_id, Chunk.state == ChunkState.DONE)
            .order_by(Chunk.id)
        ).all()
    out: list[PlannedRange] = []
    for st in streams:
        # A key-set chunk's rows lie in the ranges of the chunks that deferred them.
        mine = [
            PlannedRange(st.id, cid, lo, up)
            for sid, cid, lo, up, keys in chunks
            if sid == st.id and not keys
        ]
        if not mine or not rt.binding(migration_id, st.name).identity_key:
            mine = [PlannedRange(st.id, None, None, None)]
        out += mine
    return out


def _record(rt: Runtime, verification_id: int, ranges: list[PlannedRange]) -> None:
    with rt.db.session() as s:
        v = s.get(Verification, verification_id, with_for_update=ROW_LOCK)
        if v is None or v.planned or v.state != VerificationState.PENDING:
            return  # another worker planned it meanwhile
        now = rt.db.now(s)
        seqs: dict[int, int] = {}
        for r in ranges:
            seqs[r.stream_id] = seq = seqs.get(r.stream_id, 0) + 1
            s.add(
                VerificationRange(
                    verification_id=v.id,
                    migration_id=v.migration_id,
                    stream_id=r.stream_id,
                    chunk_id=r.chunk_id,
                    seq=seq,
                    lower=r.lower,
                    upper=r.upper,
                    state=RangeState.PENDING,
                    attempts=0,
                    retries=0,
                    lease_token=0,
                    created_at=now,
                )
            )
        v.planned = True
        v.state = VerificationState.RUNNING
        v.started_at = v.updated_at = now
        message = f"verification {v.id} started: {len(ranges)} ranges"
        s.add(
            Event(migration_id=v.migration_id, kind="verification_started", message=message, at=now)
        )


def finish(rt: Runtime, verification_id: int, state: str, error: str | None = None) -> bool:
    """Move an unfinished verification to its final state, once; True if this call did."""
    with rt.db.session() as s:
        v = s.get(Verification, verification_id, with_for_update=ROW_LOCK)
        if v is None or VerificationState(v.state).finished:
            return False
        now = rt.db.now(s)
        v.state = state
        v.error = error[:2000] if error else None
        v.finished_at = v.updated_at = now
        message = f"verification {v.id} {state}" + (f": {error}" if error else "")
        s.add(
            Event(
                migration_id=v.migration_id,
                kind="verification_finished",
                message=message[:2000],
                at=now,
            )
        )
        return True
