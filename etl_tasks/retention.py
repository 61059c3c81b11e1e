"""Retention and purging: finished migrations' details removed, their summaries kept.

``BATON_RETENTION_DAYS`` (default 30; 0 keeps everything) after a migration
finished, the sweeper (:func:`prune_expired`) removes its chunks, events,
quarantined rows (whose values are personal data), verification ranges (their
samples are values too), HTTP-target ledger rows, sent notifications and any
rows still staged in Redis. The migration row stays, with ``summary`` (its
counts per stream, kept first, so the views answer the same before and after)
and ``pruned_at``: ``baton status`` then says the details were pruned. Deletes
go in batches of :data:`BATCH` rows, one short transaction each, never one long
lock; a pass that stops half-way is finished by the next one.

``baton quarantine ID --purge`` and the dashboard's admin control
(:func:`purge_quarantine`) remove a finished migration's quarantined values at
once: each row's values and key, and the values its reason quotes (masked as a
viewer sees them); the counts and the masked reasons stay, and an event names
who purged.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from etl_tasks.errors import Conflict, NotFound, TransientError
from etl_tasks.masking import mask_reason
from etl_tasks.outbox import NOTIFY_ALL, PENDING
from etl_tasks.runtime import Runtime
from etl_tasks.state.db import ROW_LOCK, StateDB
from etl_tasks.state.enums import MigrationState, QuarantineStatus, VerificationState
from etl_tasks.state.models import (
    Chunk,
    Event,
    HttpBatch,
    HttpChunk,
    Migration,
    Notification,
    QuarantinedRow,
    Verification,
    VerificationRange,
)
from etl_tasks.verification.requests import ACTIVE

log = logging.getLogger(__name__)

BATCH = 500  # rows one delete statement removes
MIGRATIONS_PER_PASS = 5  # migrations one sweeper pass prunes at most
PURGED_KEY = "null"  # a purged row's key (JSON): the key may be personal data too
COUNTS = ("rows_loaded", "rows_quarantined", "chunks_total", "chunks_done", "chunks_failed")


def prune_expired(rt: Runtime) -> list[str]:
    """Prune the migrations that finished more than ``retention_days`` ago; their ids."""
    days = rt.settings.retention_days
    if days <= 0:
        return []
    with rt.db.reading() as s:
        cutoff = rt.db.now(s) - timedelta(days=days)
        due = list(
            s.scalars(
                select(Migration.id)
                .where(
                    Migration.state.in_(list(NOTIFY_ALL)),
                    Migration.finished_at < cutoff,
                    Migration.pruned_at.is_(None),
                )
                .order_by(Migration.finished_at)
                .limit(MIGRATIONS_PER_PASS)
            )
        )
    return [m for m in due if prune(rt, m, cutoff, days)]


def prune(rt: Runtime, migration_id: str, cutoff: datetime, days: float) -> bool:
    """Remove one migration's details, keeping its summary; False if it no longer qualifies
    (retried since, say)."""
    from etl_tasks.views import migration_view

    view = migration_view(rt.db, migration_id)  # before the summary: counts from chunks
    with rt.db.session() as s:
        mig = s.get(Migration, migration_id, with_for_update=ROW_LOCK)
        if mig is None or mig.state not in NOTIFY_ALL or mig.pruned_at is not None:
            return False
        if mig.finished_at is None or mig.finished_at >= cutoff:
            return False
        if _verifying(s, mig, rt.db.now(s)):
            return False  # its ranges are being compared: pruned by a later pass
        if mig.summary is None:  # set once: a pass that stopped half-way keeps the first
            mig.summary = _summary(view, days)
        chunk_ids = list(s.scalars(select(Chunk.id).where(Chunk.migration_id == migration_id)))
    try:
        rt.staging.forget(chunk_ids)
    except TransientError as exc:  # the staging TTL removes them anyway
        log.warning("staged rows not removed: %s", exc, extra={"migration_id": migration_id})
    _delete_all(rt.db, QuarantinedRow.id, QuarantinedRow.migration_id == migration_id)
    for batch in _batches(chunk_ids):
        with rt.db.session() as s:
            s.execute(
                delete(HttpBatch).where(
                    HttpBatch.migration_id == migration_id, HttpBatch.chunk_id.in_(batch)
                )
            )
            s.execute(
                delete(HttpChunk).where(
                    HttpChunk.migration_id == migration_id, HttpChunk.chunk_id.in_(batch)
                )
            )
            s.execute(delete(Chunk).where(Chunk.id.in_(batch)))
    _delete_all(rt.db, VerificationRange.id, VerificationRange.migration_id == migration_id)
    _delete_all(rt.db, Event.id, Event.migration_id == migration_id)
    _delete_all(
        rt.db,
        Notification.id,
        Notification.migration_id == migration_id,
        Notification.status != PENDING,
    )
    with rt.db.session() as s:
        mig = s.get(Migration, migration_id, with_for_update=ROW_LOCK)
        if mig is None:
            return False
        now = rt.db.now(s)
        mig.pruned_at = now
        s.add(
            Event(
                migration_id=migration_id,
                kind="pruned",
                message=f"details pruned {days:g} days after the migration finished "
                "(chunks, events, quarantined rows); its counts are kept",
                at=now,
            )
        )
    log.info("pruned a finished migration", extra={"migration_id": migration_id})
    return True


def _verifying(s: Session, mig: Migration, now: datetime) -> bool:
    """Whether a verification of ``mig`` runs or will (it succeeded); one that waits for a
    failed or cancelled migration to succeed never will once its chunks are gone: failed."""
    active = list(
        s.scalars(
            select(Verification)
            .where(Verification.migration_id == mig.id, Verification.state.in_(ACTIVE))
            .with_for_update()
        )
    )
    if any(v.state == VerificationState.RUNNING for v in active):
        return True
    if active and mig.state == MigrationState.SUCCEEDED:
        return True
    for v in active:
        v.state = VerificationState.FAILED
        v.error = "the migration's details were pruned before it could be verified"
        v.finished_at = v.updated_at = now
    return False


def _summary(view: dict[str, Any], days: float) -> dict[str, Any]:
    """What stays of a migration's progress: each stream's counts, and the totals."""
    return {
        "retention_days": days,
        "streams": {st["name"]: {k: st[k] for k in COUNTS} for st in view["streams"]},
    }


def _batches(ids: Sequence[Any]) -> list[Sequence[Any]]:
    return [ids[i : i + BATCH] for i in range(0, len(ids), BATCH)]


def _delete_all(db: StateDB, id_column: InstrumentedAttribute[Any], *where: Any) -> int:
    """Delete the rows ``where`` selects, :data:`BATCH` at a time, each batch committed."""
    deleted = 0
    while True:
        with db.session() as s:
            ids = list(s.scalars(select(id_column).where(*where).limit(BATCH)))
            if not ids:
                return deleted
            s.execute(delete(id_column.class_).where(id_column.in_(ids)))
            deleted += len(ids)


def quarantine_holds_values(db: StateDB, migration_id: str) -> bool:
    """Whether a quarantined row of the migration still holds values or a key that
    :func:`purge_quarantine` would remove (the dashboard offers the purge only then)."""
    with db.reading() as s:
        # a purge sets the key with the values, and a JSON null row is not SQL NULL
        held = (QuarantinedRow.key != PURGED_KEY) | QuarantinedRow.source_key.is_not(None)
        return (
            s.scalar(
                select(QuarantinedRow.id)
                .where(QuarantinedRow.migration_id == migration_id, held)
                .limit(1)
            )
            is not None
        )


def purge_quarantine(db: StateDB, migration_id: str, actor: str) -> int:
    """Remove a finished migration's quarantined values now; return how many rows held some.

    Rows still waiting to be read again (deferred, retrying) are quarantined for good: with
    their keys gone they can no longer be found in the source."""
    with db.session() as s:
        mig = s.get(Migration, migration_id, with_for_update=ROW_LOCK)
        if mig is None:
            raise NotFound(f"no migration {migration_id}")
        if mig.state not in NOTIFY_ALL:
            raise Conflict(
                f"cannot purge the quarantine of a migration that is {mig.state}: "
                "it may still quarantine rows; cancel it or wait for its end"
            )
    purged, after = 0, 0
    while True:
        with db.session() as s:
            rows = list(
                s.scalars(
                    select(QuarantinedRow)
                    .where(QuarantinedRow.migration_id == migration_id, QuarantinedRow.id > after)
                    .order_by(QuarantinedRow.id)
                    .limit(BATCH)
                )
            )
            if not rows:
                break
            for q in rows:
                if q.row is not None or q.key != PURGED_KEY or q.source_key is not None:
                    purged += 1
                q.row = None
                q.key = PURGED_KEY
                q.source_key = None
                q.reason = mask_reason(q.reason)
                if q.status in (QuarantineStatus.DEFERRED, QuarantineStatus.RETRYING):
                    q.status = None
            after = rows[-1].id
    with db.session() as s:
        s.add(
            Event(
                migration_id=migration_id,
                kind="quarantine_purged",
                message=f"quarantined values of {purged} rows purged by {actor}",
                at=db.now(s),
                actor=actor,
            )
        )
    return purged
