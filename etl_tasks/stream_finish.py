"""Finishing a stream: what happens in its target before the stream is marked done.

A stream is complete when it is fully planned and every chunk of it is done.
Before :func:`etl_tasks.advance.settle` marks it done, the key generators of its
target table (PostgreSQL sequences of serial and identity columns, MariaDB's
AUTO_INCREMENT) are moved past the keys it loaded, so the application's first
INSERT after the migration does not collide; a stream whose spec says
``advance_sequences: false`` is left as it is. This runs outside any state-DB
transaction and is idempotent (a generator never moves backwards), so the plan
task and the sweeper may both do it.
"""

from __future__ import annotations

import logging

from sqlalchemy import exc as sa_exc
from sqlalchemy import select

from etl_tasks.connectors.sql.errors import error_reason, is_transient_error
from etl_tasks.connectors.sql.sequences import advance_sequences
from etl_tasks.errors import PermanentError, TransientError
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
    spec = rt.spec(migration_id)
    ready: set[int] = set()
    for stream_id, name in complete_streams(rt, migration_id):
        stream = spec.stream(name)
        if stream.advance_sequences:
            _advance(rt, migration_id, name, stream.target_table)
        ready.add(stream_id)
    return ready


def _advance(rt: Runtime, migration_id: str, stream: str, table: str) -> None:
    try:
        moved = advance_sequences(rt.target_engine(migration_id), table)
    except sa_exc.SQLAlchemyError as exc:
        if is_transient_error(exc):
            raise TransientError(f"target unavailable: {error_reason(exc)}") from exc
        raise PermanentError(
            f"cannot advance the sequences of {table!r}: {error_reason(exc)}"
        ) from exc
    if moved:
        log.info(
            "advanced %s past the loaded keys",
            ", ".join(moved),
            extra={"migration_id": migration_id, "stream": stream},
        )
