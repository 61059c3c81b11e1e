"""Finishing a stream: what happens in its target before the stream is marked done.

A stream is complete when it is fully planned and every chunk of it is done.
Before :func:`etl_tasks.advance.settle` marks it done, its target finishes
(:meth:`~etl_tasks.connectors.base.Target.finish`): a SQL target moves the key
generators of its table (PostgreSQL sequences of serial and identity columns,
MariaDB's AUTO_INCREMENT) past the keys it loaded, so the application's first
INSERT after the migration does not collide, unless the spec says
``advance_sequences: false``. This runs outside any state-DB transaction and is
idempotent (a generator never moves backwards), so the plan task and the sweeper
may both do it.
"""

from __future__ import annotations

import logging

from sqlalchemy import select

from etl_tasks.retries import plan_retries
from etl_tasks.runtime import Runtime
from etl_tasks.state.enums import ChunkState, StreamState
from etl_tasks.state.models import Chunk, Stream

log = logging.getLogger(__name__)


def complete_streams(rt: Runtime, migration_id: str) -> list[tuple[int, str]]:
    """(id, name) of each running stream that is fully planned and has every chunk done."""
    with rt.db.reading() as s:
        streams = s.execute(
            select(Stream.id, Stream.name).where(
                Stream.migration_id == migration_id,
                Stream.state == StreamState.RUNNING,
                Stream.fully_planned.is_(True),
            )
        ).all()
        unfinished = set(
            s.scalars(
                select(Chunk.stream_id)
                .where(Chunk.migration_id == migration_id, Chunk.state != ChunkState.DONE)
                .distinct()
            )
        )
    return [(int(i), str(name)) for i, name in streams if i not in unfinished]


def finish_streams(rt: Runtime, migration_id: str) -> set[int]:
    """Do the target's part of finishing each complete stream; return those now ready."""
    ready: set[int] = set()
    for stream_id, name in complete_streams(rt, migration_id):
        if plan_retries(rt, migration_id, stream_id):
            continue  # rows refused for a foreign key are read again first
        did = rt.target(migration_id, name).finish()
        if did:
            log.info(
                "finished the target: %s",
                ", ".join(did),
                extra={"migration_id": migration_id, "stream": name},
            )
        ready.add(stream_id)
    return ready
