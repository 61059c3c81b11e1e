"""Replaying quarantined rows: read them again from the source, by their keys, once more.

An operator fixes the source (or the spec's column mapping) and asks for a
replay. Each stream's rows set aside for good become key-set chunks of at most
:data:`etl_tasks.retries.RETRY_KEYS` keys, the same chunks that read again the
rows a target refused for a foreign key (:mod:`etl_tasks.retries`), so they go
through the same extract, transform and load, exactly once by the target's
ledger like any chunk. The migration runs again (``running``, then it finishes):

- a row that loads leaves the quarantine (its row is deleted: the target holds it
  now, and counts are derived from the quarantine, so ``rows_quarantined`` falls
  and ``rows_loaded`` rises by the key-set chunk's own count);
- a row refused again stays quarantined, with the new reason;
- a row the source no longer has stays listed, marked ``gone`` (counted apart).

A row is read by its source key: the one recorded with it when the step that set
it aside knew it, else the key it was quarantined under (the source key for a row
the source or the transform refused; the target key, which holds the source key's
values when the target key is mapped straight from it, for a row the target
refused before this version). Rows whose key is NULL cannot be read by key and
stay as they are. A file stream's rows are read again in one chunk per file,
pinned by a bound its chunks were planned with: a file changed since fails the
read (its record numbers may name other records now). A replay may come with a
spec revision (amended ``columns`` of some streams, checked like a submission by
the caller): it is stored in the same transaction, and every worker reads it at
its next claim
(:meth:`etl_tasks.runtime.Runtime.follow_spec`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from etl_tasks import codec
from etl_tasks.control import forget_queued, reopen_failed
from etl_tasks.errors import Conflict, NotFound
from etl_tasks.retries import add_key_set_chunks
from etl_tasks.state.db import ROW_LOCK, StateDB
from etl_tasks.state.enums import MigrationState, QuarantineStatus, StreamState
from etl_tasks.state.models import (
    Chunk,
    Event,
    Migration,
    QuarantinedRow,
    Stream,
    quarantine_key_hash,
)

log = logging.getLogger(__name__)

#: A migration in one of these states may replay its quarantined rows.
REPLAYABLE = (MigrationState.RUNNING, MigrationState.SUCCEEDED, MigrationState.FAILED)


@dataclass(frozen=True)
class Revision:
    """A spec revision that comes with a replay: the spec as it is to be kept (see
    :func:`etl_tasks.boundary.sealing.storage_form`), and each amended stream's columns
    before and after."""

    stored: dict[str, Any]
    sealed: str | None
    columns: Mapping[str, tuple[Any, Any]]


@dataclass
class Replay:
    """What a replay asked for: rows read again, per stream, in how many chunks."""

    migration_id: str
    rows: int = 0
    chunks: int = 0
    streams: dict[str, int] = field(default_factory=dict)
    not_replayable: int = 0  # rows whose key is NULL: they cannot be read by key
    revised: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "migration_id": self.migration_id,
            "rows": self.rows,
            "chunks": self.chunks,
            "streams": self.streams,
            "not_replayable": self.not_replayable,
            "revised_streams": self.revised,
        }


def check_replayable(db: StateDB, migration_id: str) -> dict[str, Any]:
    """The migration's stored spec and sealed endpoints, if a replay may start now
    (:class:`NotFound`, :class:`Conflict` otherwise): asked before a revision is checked,
    so a refusal costs no preflight."""
    with db.reading() as s:
        mig = _replayable(s, migration_id)
        return {"spec": mig.spec, "sealed": mig.sealed}


def _replayable(s: Session, migration_id: str, lock: bool = False) -> Migration:
    mig = s.get(Migration, migration_id, with_for_update=ROW_LOCK if lock else None)
    if mig is None:
        raise NotFound(f"no migration {migration_id}")
    if mig.state not in REPLAYABLE:
        raise Conflict(f"cannot replay the quarantine of a migration that is {mig.state}")
    if s.scalar(select(exists().where(_rows_of(migration_id, QuarantineStatus.RETRYING)))):
        raise Conflict(
            "a replay of this migration's quarantined rows (or a re-read of rows refused for a "
            "foreign key) is already running"
        )
    if not s.scalar(select(exists().where(_rows_of(migration_id, None)))):
        raise Conflict("this migration has no quarantined row to replay")
    return mig


def _rows_of(migration_id: str, status: str | None) -> Any:
    by_status = (
        QuarantinedRow.status.is_(None) if status is None else QuarantinedRow.status == status
    )
    return (QuarantinedRow.migration_id == migration_id) & by_status


def replay(db: StateDB, migration_id: str, actor: str, revision: Revision | None = None) -> Replay:
    """Plan the replay of the migration's quarantined rows and set it running.

    Refused whole (nothing changes) with :class:`NotFound` or :class:`Conflict`: a
    migration that is pending, paused or cancelled, one whose replay (or retry of rows
    refused for a foreign key) is still running, or one with nothing quarantined. Publishing
    the plan task afterwards is the caller's job.
    """
    out = Replay(migration_id)
    with db.session() as s:
        now = db.now(s)
        mig = _replayable(s, migration_id, lock=True)
        streams = {
            st.id: st
            for st in s.scalars(
                select(Stream).where(Stream.migration_id == migration_id).with_for_update()
            )
        }
        rows = list(
            s.scalars(
                select(QuarantinedRow)
                .where(_rows_of(migration_id, None))
                .order_by(QuarantinedRow.id)
            )
        )
        keys = _mark_retrying(rows, out)
        if not keys:
            raise Conflict("no quarantined row of this migration can be read again by its key")
        for stream_id, stream_keys in keys.items():
            st = streams[stream_id]
            for bound, group in _by_planned_file(s, st, stream_keys):
                out.chunks += add_key_set_chunks(s, migration_id, stream_id, group, now, bound)
            out.streams[st.name] = len(stream_keys)
            out.rows += len(stream_keys)
            if st.state == StreamState.DONE:
                st.state = StreamState.RUNNING
                st.finished_at = None
        was = mig.state
        if was == MigrationState.FAILED:
            reopen_failed(s, migration_id)
        if revision is not None:
            mig.spec = revision.stored
            mig.sealed = revision.sealed
            out.revised = sorted(revision.columns)
            s.add(_revision_event(migration_id, revision, actor, now))
        mig.state = MigrationState.RUNNING
        mig.error = None
        mig.finished_at = None
        mig.updated_at = now
        s.add(
            Event(
                migration_id=migration_id,
                kind="quarantine_replay",
                message=f"{out.rows} quarantined rows are read again in {out.chunks} "
                f"chunk{'' if out.chunks == 1 else 's'} by {actor}",
                at=now,
                actor=actor,
            )
        )
    if was == MigrationState.FAILED:
        forget_queued(db, migration_id)
    log.info(
        "quarantined rows are read again",
        extra={"migration_id": migration_id, "rows": out.rows, "chunks": out.chunks},
    )
    return out


def _mark_retrying(rows: list[QuarantinedRow], out: Replay) -> dict[int, list[str]]:
    """Set the rows ``retrying`` under their source key; return those keys by stream."""
    keys: dict[int, list[str]] = {}
    for row in rows:
        source_key = _source_key(row)
        if source_key is None:
            out.not_replayable += 1
            continue
        if row.key != source_key or row.key_hash is None:  # matched by it when read again
            row.key = source_key
            row.key_hash = quarantine_key_hash(source_key)
        row.source_key = source_key
        row.status = QuarantineStatus.RETRYING
        keys.setdefault(row.stream_id, []).append(source_key)
    return keys


def _source_key(row: QuarantinedRow) -> str | None:
    """The key to read the row again by (see the module's docstring); None: it has none."""
    text = row.source_key or row.key
    try:
        values = codec.key_of(text)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
    if not values or any(v is None for v in values):
        return None  # a NULL key matches no row
    return codec.quarantine_key(values)


def _by_planned_file(
    s: Session, st: Stream, keys: list[str]
) -> list[tuple[list[Any] | None, list[str]]]:
    """The keys in groups, each with the planned bound that pins its rows' source. A bound
    wider than a key is a file source's (its file, the record, where to start, and the
    file's fingerprint): one group per file then, with a bound of that file, so a file
    changed since fails the replay's read. Otherwise one group and no bound."""
    width = len(codec.key_of(keys[0]))
    pins: dict[str, list[Any]] = {}
    bounds = s.execute(
        select(Chunk.lower, Chunk.upper)
        .where(Chunk.stream_id == st.id, Chunk.keys.is_(None))
        .order_by(Chunk.id)
    ).all()
    for pair in bounds:
        for bound in pair:
            if bound is not None and len(bound) > width:
                pins[str(bound[0])] = list(bound)
    if not pins:
        return [(None, keys)]
    groups: dict[str, list[str]] = {}
    for key in keys:
        groups.setdefault(str(codec.key_of(key)[0]), []).append(key)
    return [(pins.get(name), group) for name, group in sorted(groups.items())]


def _revision_event(migration_id: str, revision: Revision, actor: str, now: Any) -> Event:
    change = {
        name: {"previous": before, "revised": after}
        for name, (before, after) in sorted(revision.columns.items())
    }
    return Event(
        migration_id=migration_id,
        kind="spec_revised",
        message=orjson.dumps({"columns": change}).decode(),
        at=now,
        actor=actor,
    )
