"""Splitting a chunk at its deadline: the part done is committed, the rest becomes a new chunk.

A step that reaches the step budget stops between sub-batches. Its chunk's
upper bound is narrowed to the last key it finished, and the remainder
(that key, the old upper bound] is planned as a new chunk, in the same
state-DB transaction. The cut is a key the source itself returned, so no
comparison is ever made outside the database (collations stay its business).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from etl_tasks.chunk_lease import NOW, Claim
from etl_tasks.errors import LeaseLost
from etl_tasks.runtime import Runtime
from etl_tasks.state.enums import ChunkState, Step
from etl_tasks.state.models import Chunk, Stream


def split(s: Session, chunk: Chunk, cut: list[Any], now: datetime) -> int | None:
    """Narrow ``chunk`` to end at ``cut`` and plan the remainder; idempotent (None if done)."""
    if chunk.upper == cut:
        return None
    stream = s.get(Stream, chunk.stream_id, with_for_update=True)  # serialises seq numbers
    assert stream is not None
    seq = (s.scalar(select(func.max(Chunk.seq)).where(Chunk.stream_id == chunk.stream_id)) or 0) + 1
    rest = Chunk(
        migration_id=chunk.migration_id,
        stream_id=chunk.stream_id,
        seq=seq,
        lower=cut,
        upper=chunk.upper,
        state=ChunkState.PENDING,
        step=Step.EXTRACT,
        attempts=0,
        retries=0,
        lease_token=0,
        created_at=now,
    )
    chunk.upper = cut
    s.add(rest)
    s.flush()
    return rest.id


def commit_split(rt: Runtime, c: Claim, cut: list[Any], **values: Any) -> bool:
    """Like :func:`~etl_tasks.chunk_lease.commit`, narrowing the chunk to ``cut`` as well."""
    with rt.db.session() as s:
        now = rt.db.now(s)
        chunk = s.get(Chunk, c.chunk_id, with_for_update=True)
        if chunk is None or chunk.lease_token != c.token:
            return False
        split(s, chunk, cut, now)
        values.setdefault("lease_owner", None)
        values.setdefault("lease_expires_at", None)
        for key, value in values.items():
            setattr(chunk, key, now if value is NOW else value)
        return True


def renew(rt: Runtime, c: Claim) -> None:
    """Extend the lease while a step works; a step whose token is stale must stop."""
    with rt.db.session() as s:
        now = rt.db.now(s)
        done = s.execute(
            update(Chunk)
            .where(Chunk.id == c.chunk_id, Chunk.lease_token == c.token)
            .values(lease_expires_at=now + timedelta(seconds=rt.settings.lease_s))
        ).rowcount  # type: ignore[attr-defined]
    if not done:
        raise LeaseLost()
