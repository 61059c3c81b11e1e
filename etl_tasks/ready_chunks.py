"""Queueing a migration's next chunks: at most ``max_queued_chunks`` queued or running.

Both an advance and every finished chunk queue ready chunks. A chunk that finishes frees
its place, and the load that finished it fills the place in the transaction that records
it: chunks keep flowing without an advance per chunk. When the ready chunks run low,
the load plans the next ones (:func:`etl_tasks.steps.finish.finish`), or asks for an
advance when none is left to plan (a stream or the migration may be done: see
:mod:`etl_tasks.plan_requests`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, and_, bindparam, exists, func, or_, select, update

from etl_tasks.settings import Settings
from etl_tasks.state.enums import ChunkState, MigrationState
from etl_tasks.state.models import CHUNKS, MIGRATIONS

# Built once: they run at every finished chunk and every advance.
BUSY = (
    select(func.count())
    .select_from(CHUNKS)
    .where(
        CHUNKS.c.migration_id == bindparam("migration"),
        or_(
            CHUNKS.c.state == ChunkState.RUNNING,
            and_(CHUNKS.c.state == ChunkState.PENDING, CHUNKS.c.queued_at.is_not(None)),
        ),
    )
)
READY_WHERE = (
    CHUNKS.c.migration_id == bindparam("migration"),
    CHUNKS.c.state == ChunkState.PENDING,
    CHUNKS.c.queued_at.is_(None),
    or_(CHUNKS.c.not_before.is_(None), CHUNKS.c.not_before <= bindparam("now")),
    # A paused or cancelled migration's chunks stay unqueued (a resume queues them).
    exists().where(
        MIGRATIONS.c.id == CHUNKS.c.migration_id,
        MIGRATIONS.c.state == MigrationState.RUNNING,
    ),
)
_READY = (
    select(CHUNKS.c.id)
    .where(*READY_WHERE)
    .order_by(CHUNKS.c.id)
    .limit(bindparam("limit"))
    .with_for_update(of=CHUNKS, skip_locked=True, key_share=True)  # as ROW_LOCK
)
#: The chunks queued or running, and how many are ready up to a limit, whoever holds
#: them locked (locking none): one round trip.
READY_COUNT = (
    select(func.count())
    .select_from(select(CHUNKS.c.id).where(*READY_WHERE).limit(bindparam("ready_limit")).subquery())
    .scalar_subquery()
)
_COUNTS = select(BUSY.scalar_subquery(), READY_COUNT)
_QUEUED = update(CHUNKS).where(CHUNKS.c.id.in_(bindparam("ids", expanding=True)))


@dataclass(frozen=True)
class Queued:
    """The chunks just queued (to publish once committed), and whether too few ready
    chunks are left after them."""

    ids: list[int]
    running_low: bool


def queue_ready(
    conn: Connection,
    settings: Settings,
    migration_id: str,
    now: datetime,
    *,
    claiming: bool = False,
) -> Queued:
    """Mark the migration's next ready chunks queued, as many as there is room for. The
    ready ones are running low when fewer than half of ``plan_ahead`` are left.
    ``claiming``: the caller claims the first of them in this transaction, so it is left
    unmarked (a claim clears the mark; :func:`mark_queued` if the claim fails).

    Only the chunks to queue are locked (``SKIP LOCKED``): loads finishing at the same
    moment each take the next free ones. Those left are counted without locks, so a
    chunk another load holds still counts as ready (when each locked every chunk it
    looked at, they locked the same first ones, found none, and each asked for an
    advance and left its place to a message)."""
    spare = spare_chunks(settings)
    counted = {"migration": migration_id, "now": now, "ready_limit": ready_limit(settings)}
    busy, ready = conn.execute(_COUNTS, counted).one()
    room = max(0, settings.max_queued_chunks - busy)
    ids = (
        list(conn.scalars(_READY, {"migration": migration_id, "now": now, "limit": room}))
        if room
        else []
    )
    mark_queued(conn, ids[1:] if claiming else ids, now)
    # those just queued were among the ready ones counted (all of them, or more than
    # room + spare were counted)
    return Queued(ids, ready - len(ids) < spare)


def spare_chunks(settings: Settings) -> int:
    """Ready chunks below which they run low: half of ``plan_ahead``."""
    return max(1, settings.plan_ahead // 2)


def ready_limit(settings: Settings) -> int:
    """How many ready chunks are counted at most: enough to tell whether they run low."""
    return spare_chunks(settings) + settings.max_queued_chunks


def mark_queued(conn: Connection, ids: list[int], now: datetime) -> None:
    """Mark these chunks queued (their messages are sent once committed)."""
    if ids:
        conn.execute(_QUEUED, {"ids": ids, "queued_at": now})
