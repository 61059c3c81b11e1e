"""An HTTP target's ledger, kept in the state DB (the API has no transaction to hold it).

``http_batches`` holds one row per request the API confirmed: a load of the chunk
that runs again (a redelivery, a retry after an outage, a worker that died) sends
only the rows no confirmed batch holds. ``http_parts`` holds where each request of
the chunk began and how many rows it took, written before it is first sent, so
that a load that runs again sends the same requests under the same keys.
``http_chunks`` holds the chunk's
:class:`~etl_tasks.connectors.base.LedgerRecord`, written once every batch of the
chunk is confirmed: the ledger-first rule reads it as it reads a SQL target's.
Every write here is one short transaction of its own; none is held across a request.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from sqlalchemy import exc as sa_exc
from sqlalchemy import select, update

from etl_tasks.connectors.base import ChunkRef, LedgerRecord, QuarantineEntry
from etl_tasks.errors import TransientError
from etl_tasks.state.db import StateDB
from etl_tasks.state.models import HttpBatch, HttpChunk, HttpPart

UNAVAILABLE = "state DB unavailable"


def confirmed_rows(db: StateDB, chunk: ChunkRef) -> Counter[str]:
    """The identities of the chunk's rows the API confirmed, counted (equal rows may repeat)."""
    with _errors(), db.reading() as s:
        rows = s.scalars(
            select(HttpBatch.row_ids).where(
                HttpBatch.migration_id == chunk.migration_id,
                HttpBatch.stream == chunk.stream,
                HttpBatch.chunk_id == chunk.chunk_id,
            )
        )
        found: Counter[str] = Counter()
        for ids in rows:
            found.update(str(i) for i in ids or [])
        return found


def confirm(db: StateDB, chunk: ChunkRef, batch_key: str, row_ids: list[str], rows: int) -> None:
    """Record a batch the API confirmed; recording it twice changes nothing."""
    with _errors():
        try:
            with db.session() as s:
                if s.get(HttpBatch, (chunk.migration_id, chunk.stream, chunk.chunk_id, batch_key)):
                    return
                s.add(
                    HttpBatch(
                        migration_id=chunk.migration_id,
                        stream=chunk.stream,
                        chunk_id=chunk.chunk_id,
                        batch_key=batch_key,
                        rows=rows,
                        row_ids=row_ids,
                        fencing_token=chunk.token,
                        confirmed_at=db.now(s),
                    )
                )
        except sa_exc.IntegrityError:
            return  # another load of the chunk confirmed the same batch


def parts(db: StateDB, chunk: ChunkRef) -> dict[int, int]:
    """The chunk's requests as first sent: first row's extract position → row count."""
    with _errors(), db.reading() as s:
        found = s.execute(
            select(HttpPart.first_position, HttpPart.rows).where(*_of(chunk, HttpPart))
        )
        return {int(p): int(n) for p, n in found}


def plan(db: StateDB, chunk: ChunkRef, first_position: int, rows: int) -> int:
    """Record a request's place before it is first sent; return the row count recorded
    (another load's, if one recorded it first)."""
    with _errors():
        try:
            with db.session() as s:
                key = (chunk.migration_id, chunk.stream, chunk.chunk_id, first_position)
                found = s.get(HttpPart, key)
                if found is not None:
                    return int(found.rows)
                s.add(
                    HttpPart(
                        migration_id=chunk.migration_id,
                        stream=chunk.stream,
                        chunk_id=chunk.chunk_id,
                        first_position=first_position,
                        rows=rows,
                        unanswered=0,
                        planned_at=db.now(s),
                    )
                )
                return rows
        except sa_exc.IntegrityError:
            return parts(db, chunk).get(first_position, rows)


def unanswered(db: StateDB, chunk: ChunkRef, first_position: int) -> None:
    """A send of the request got no answer: the API may have applied it."""
    with _errors(), db.session() as s:
        s.execute(
            update(HttpPart)
            .where(*_of(chunk, HttpPart), HttpPart.first_position == first_position)
            .values(unanswered=HttpPart.unanswered + 1)
        )


def commit(db: StateDB, chunk: ChunkRef, record: LedgerRecord) -> None:
    """Write the chunk's ledger record; a record already there stays (the first one wins)."""
    with _errors():
        try:
            with db.session() as s:
                if s.get(HttpChunk, (chunk.migration_id, chunk.stream, chunk.chunk_id)):
                    return
                s.add(
                    HttpChunk(
                        migration_id=chunk.migration_id,
                        stream=chunk.stream,
                        chunk_id=chunk.chunk_id,
                        fencing_token=record.fencing_token,
                        rows_loaded=record.rows_loaded,
                        rows_quarantined=len(record.quarantine),
                        quarantine=_entries(record.quarantine),
                        cut_key=record.cut,
                        deferred=_entries(record.deferred) if record.deferred else None,
                        committed_at=db.now(s),
                    )
                )
        except sa_exc.IntegrityError:
            return


def read(db: StateDB, chunk: ChunkRef) -> LedgerRecord | None:
    with _errors(), db.reading() as s:
        row = s.get(HttpChunk, (chunk.migration_id, chunk.stream, chunk.chunk_id))
        if row is None:
            return None
        return LedgerRecord(
            row.fencing_token,
            row.rows_loaded,
            _parse(row.quarantine),
            row.cut_key,
            _parse(row.deferred),
        )


def _of(chunk: ChunkRef, table: Any) -> list[Any]:
    return [
        table.migration_id == chunk.migration_id,
        table.stream == chunk.stream,
        table.chunk_id == chunk.chunk_id,
    ]


def _entries(entries: list[QuarantineEntry]) -> list[Any]:
    return [[q.key, q.reason, q.row] for q in entries]


def _parse(items: list[Any] | None) -> list[QuarantineEntry]:
    return [QuarantineEntry(k, r, d) for k, r, d in items or []]


class _errors:
    """The state DB failing is a reason to retry later, like the target failing."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError):
            raise TransientError(f"{UNAVAILABLE}: {type(exc.orig).__name__}") from exc
