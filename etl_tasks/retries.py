"""Rows a target refused for a foreign key: read again once the rest of their stream has loaded.

A row that references a row of its own stream not loaded yet (an employee whose
manager comes later in key order, a cycle broken at a nullable foreign key)
is refused by the target's foreign key, and would be quarantined although
nothing is wrong with it. So the load defers it instead: its ledger record lists
it apart (``deferred``), and the state DB keeps it set aside as ``deferred``.
When every chunk of the stream is done, the deferred rows are read again from
the source by their keys, in key-set chunks of at most ``RETRY_KEYS`` keys (one
sub-batch: a key set is never cut), through the same extract, transform and
load, exactly once like any chunk. A row that loads then leaves the quarantine;
one refused again is set aside for good, with the target's reason; one no
longer in the source is marked ``gone``.

A key-set chunk's ``lower`` and ``upper`` are both its first key: an empty range
to a worker of the previous version, which reads and loads nothing for it; the
rows it should have read are then set aside for good when the stream finishes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from etl_tasks import codec
from etl_tasks.chunk_lease import Claim
from etl_tasks.connectors.base import LedgerRecord
from etl_tasks.planning import add_chunks
from etl_tasks.runtime import Runtime
from etl_tasks.state.db import ROW_LOCK
from etl_tasks.state.enums import QuarantineStatus
from etl_tasks.state.models import Chunk, Event, QuarantinedRow, Stream, quarantine_key_hash

log = logging.getLogger(__name__)

RETRY_KEYS = 1000  # keys per key-set chunk: the rows fit one sub-batch
NOT_READ_AGAIN = " (not read again: a worker of another version took its retry)"


def record_deferred(s: Session, chunk: Chunk, record: LedgerRecord, now: datetime) -> None:
    """Keep the record's deferred rows set aside until their retry, each once."""
    if not record.deferred:
        return
    known = set(
        s.scalars(
            select(QuarantinedRow.key).where(
                QuarantinedRow.stream_id == chunk.stream_id, QuarantinedRow.chunk_id == chunk.id
            )
        )
    )
    for q in record.deferred:
        if q.key in known:
            continue
        known.add(q.key)
        s.add(
            QuarantinedRow(
                migration_id=chunk.migration_id,
                stream_id=chunk.stream_id,
                chunk_id=chunk.id,
                key=q.key,
                source_key=q.key,
                reason=q.reason,
                row=q.row,
                fencing_token=record.fencing_token,
                created_at=now,
                status=QuarantineStatus.DEFERRED,
            )
        )


def _retrying(s: Session, stream_id: int, keys: Sequence[str]) -> list[QuarantinedRow]:
    hashes = [quarantine_key_hash(k) for k in keys]
    rows: list[QuarantinedRow] = []
    for start in range(0, len(hashes), 500):
        rows += s.scalars(
            select(QuarantinedRow).where(
                QuarantinedRow.stream_id == stream_id,
                QuarantinedRow.status == QuarantineStatus.RETRYING,
                QuarantinedRow.key_hash.in_(hashes[start : start + 500]),
            )
        )
    return rows


def asked(chunk_keys: Sequence[Any]) -> list[str]:
    """The quarantine keys of a key-set chunk's rows."""
    return [codec.quarantine_key(codec.decode_key(k) or ()) for k in chunk_keys]


def settle_retry(s: Session, chunk: Chunk, record: LedgerRecord) -> int:
    """A key-set chunk committed: its rows that loaded leave the quarantine, those refused
    again stay, for good, with the target's new reason (rows gone from the source were
    marked so by the extract). Returns how many stay."""
    refused = {q.key: q for q in record.quarantine}
    stay = 0
    for row in _retrying(s, chunk.stream_id, asked(chunk.keys or [])):
        again = refused.get(row.key)
        if again is None:
            s.delete(row)  # it loaded
            continue
        stay += 1
        row.status = None
        row.reason = again.reason
        row.row = again.row
        row.fencing_token = record.fencing_token
    return stay


def mark_gone(rt: Runtime, c: Claim, gone: Sequence[str]) -> None:
    """Rows a key-set chunk asked for that the source no longer has (idempotent)."""
    with rt.db.session() as s:
        chunk = s.get(Chunk, c.chunk_id, with_for_update=ROW_LOCK)
        if chunk is None or chunk.lease_token != c.token:
            return
        for row in _retrying(s, chunk.stream_id, gone):
            row.status = QuarantineStatus.GONE


def add_key_set_chunks(
    s: Session,
    migration_id: str,
    stream_id: int,
    source_keys: Sequence[str],
    now: datetime,
    bound: list[Any] | None = None,
) -> int:
    """Key-set chunks of at most ``RETRY_KEYS`` keys each for these rows, by their quarantine
    keys (:func:`etl_tasks.codec.quarantine_key`); returns how many. Each chunk's ``lower``
    and ``upper`` are ``bound`` (an encoded planned bound, wider than a key), else its first
    key. The caller holds the stream row's lock (see :func:`etl_tasks.planning.add_chunks`)."""
    keys = list(dict.fromkeys(source_keys))
    for start in range(0, len(keys), RETRY_KEYS):
        encoded = [codec.encode_key(codec.key_of(k)) for k in keys[start : start + RETRY_KEYS]]
        edge = bound if bound is not None else encoded[0]
        add_chunks(s, migration_id, stream_id, [(edge, edge)], now, keys=[encoded])
    return -(-len(keys) // RETRY_KEYS)


def plan_retries(rt: Runtime, migration_id: str, stream_id: int) -> bool:
    """Plan key-set chunks for the stream's deferred rows; True when some were planned.

    Called once every chunk of the stream is done. Rows still ``retrying`` then were in
    a key-set chunk that did not read them (a worker of another version): they are set
    aside for good.
    """
    with rt.db.session() as s:
        now = rt.db.now(s)
        s.get(Stream, stream_id, with_for_update=ROW_LOCK)  # one planner at a time
        s.execute(
            update(QuarantinedRow)
            .where(
                QuarantinedRow.stream_id == stream_id,
                QuarantinedRow.status == QuarantineStatus.RETRYING,
            )
            .values(status=None, reason=QuarantinedRow.reason + NOT_READ_AGAIN)
        )
        rows = s.execute(
            select(QuarantinedRow.id, QuarantinedRow.source_key)
            .where(
                QuarantinedRow.stream_id == stream_id,
                QuarantinedRow.status == QuarantineStatus.DEFERRED,
            )
            .order_by(QuarantinedRow.id)
        ).all()
        if not rows:
            return False
        add_key_set_chunks(s, migration_id, stream_id, [k for _, k in rows if k is not None], now)
        s.execute(
            update(QuarantinedRow)
            .where(QuarantinedRow.id.in_([i for i, _ in rows]))
            .values(status=QuarantineStatus.RETRYING)
        )
        s.add(
            Event(
                migration_id=migration_id,
                kind="rows_retried",
                message=f"{len(rows)} rows refused for a foreign key are read again",
                at=now,
            )
        )
    log.info(
        "%d rows refused for a foreign key are read again",
        len(rows),
        extra={"migration_id": migration_id, "stream_id": stream_id},
    )
    return True
