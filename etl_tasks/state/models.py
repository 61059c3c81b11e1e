"""SQLAlchemy 2 models of the state DB.

Timestamps are naive UTC and always come from the database's clock (see
:func:`etl_tasks.state.db.db_now`), never a worker's. Schema changes go through
Alembic, expand-then-contract, so versions N and N+1 can share this DB.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from etl_tasks.constants import PIPELINE, STEPS

BigId = BigInteger().with_variant(Integer, "sqlite")


class Base(DeclarativeBase):
    pass


class Migration(Base):
    __tablename__ = "migrations"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16), index=True)
    waiting_reason: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    request_hash: Mapped[str | None] = mapped_column(String(64))
    # The spec's source and target, encrypted as a whole (Fernet), when the spec is sealed;
    # ``spec`` then holds ``{"sealed": true}`` in their place.
    sealed: Mapped[str | None] = mapped_column(Text)
    owner: Mapped[str | None] = mapped_column(String(200))  # who submitted it (token name)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    started_at: Mapped[datetime | None] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)
    # The latest pause (or wait between a failure and its retry): the recent rate leaves
    # it out. ``resumed_at`` is None while it lasts; ``paused_s`` sums every pause so far.
    paused_at: Mapped[datetime | None] = mapped_column(DateTime)
    resumed_at: Mapped[datetime | None] = mapped_column(DateTime)
    paused_s: Mapped[float | None] = mapped_column(Float)
    # The spec's "notify" (kept beside the spec, not in it, so that a worker of the version
    # before it still reads the spec): where a finished migration is announced.
    notify: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # When retention removed its details (chunks, events, quarantine); ``summary`` then holds
    # the counts per stream the views answer from (:mod:`etl_tasks.retention`).
    pruned_at: Mapped[datetime | None] = mapped_column(DateTime)
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class Stream(Base):
    __tablename__ = "streams"
    __table_args__ = (UniqueConstraint("migration_id", "name"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    migration_id: Mapped[str] = mapped_column(ForeignKey("migrations.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    position: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))
    prepared: Mapped[bool] = mapped_column(Boolean, default=False)
    key_columns: Mapped[list[str]] = mapped_column(JSON)
    planned_until: Mapped[list[Any] | None] = mapped_column(JSON)  # typed key, see keys.py
    fully_planned: Mapped[bool] = mapped_column(Boolean, default=False)
    plan_seq: Mapped[int] = mapped_column(Integer, default=0)  # optimistic lock for planning
    chunk_rows: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime | None] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    # The source's own estimate of the stream's rows (Source.estimate_rows), taken once
    # when the migration starts; -1: the source could not tell. Only feeds progress.
    rows_estimate: Mapped[int | None] = mapped_column(BigInteger)


class Chunk(Base):
    __tablename__ = "chunks"
    __table_args__ = (
        UniqueConstraint("stream_id", "seq"),
        Index("ix_chunks_migration_state", "migration_id", "state"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    migration_id: Mapped[str] = mapped_column(ForeignKey("migrations.id", ondelete="CASCADE"))
    stream_id: Mapped[int] = mapped_column(ForeignKey("streams.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    lower: Mapped[list[Any] | None] = mapped_column(JSON)  # exclusive; None: from the start
    upper: Mapped[list[Any] | None] = mapped_column(JSON)  # inclusive; None: open-ended
    # A key-set chunk's rows, by their encoded source keys (a retry); its lower and upper are
    # then both its first key, an empty range to a version that does not know key sets.
    keys: Mapped[list[Any] | None] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16))
    step: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # claims of the current step
    retries: Mapped[int] = mapped_column(Integer, default=0)  # transient failures so far
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_token: Mapped[int] = mapped_column(Integer, default=0)  # fencing token
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime)
    not_before: Mapped[datetime | None] = mapped_column(DateTime)
    queued_at: Mapped[datetime | None] = mapped_column(DateTime)
    stage_token: Mapped[int | None] = mapped_column(Integer)  # token under which input is staged
    rows_in: Mapped[int | None] = mapped_column(Integer)
    rows_out: Mapped[int | None] = mapped_column(Integer)
    rows_quarantined: Mapped[int | None] = mapped_column(Integer)
    worker: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime)
    started_at: Mapped[datetime | None] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    first_failure_at: Mapped[datetime | None] = mapped_column(DateTime)
    extract_ms: Mapped[int | None] = mapped_column(Integer)
    transform_ms: Mapped[int | None] = mapped_column(Integer)
    load_ms: Mapped[int | None] = mapped_column(Integer)
    #: Milliseconds each step took, by step name: a new step needs no column of its own.
    #: ``extract_ms``, ``transform_ms`` and ``load_ms`` are written too, for the versions
    #: before this one, which read only them.
    timings: Mapped[dict[str, int] | None] = mapped_column(JSON)
    last_error: Mapped[str | None] = mapped_column(Text)

    def step_timings(self) -> dict[str, int]:
        """Milliseconds per step, including what an older version recorded in its columns."""
        return step_timings(self)

    def record_timing(self, step: str, ms: int) -> None:
        self.timings = {**(self.timings or {}), step: ms}
        legacy = STEPS[step].timing_column
        if legacy:
            setattr(self, legacy, ms)


#: The tables behind the models, for the hot paths' Core statements (built once, run
#: without the ORM's unit of work).
MIGRATIONS: Table = Migration.__table__  # type: ignore[assignment]
STREAMS: Table = Stream.__table__  # type: ignore[assignment]
CHUNKS: Table = Chunk.__table__  # type: ignore[assignment]


def step_timings(chunk: Any) -> dict[str, int]:
    """Milliseconds per step of ``chunk`` (a :class:`Chunk` or a row of its columns),
    including what an older version recorded in its per-step columns."""
    out: dict[str, int] = {}
    for step in PIPELINE:
        legacy = getattr(chunk, step.timing_column) if step.timing_column else None
        if legacy is not None:
            out[step.name] = legacy
    out.update(chunk.timings or {})
    return out


def quarantine_key_hash(key: str) -> str:
    """What makes a quarantined row unique within its chunk: SHA-256 of its key, in hex.

    Keys can be of any length, and PostgreSQL's btree cannot index a long text."""
    return hashlib.sha256(key.encode()).hexdigest()


def _key_hash_default(context: Any) -> str:
    return quarantine_key_hash(context.get_current_parameters()["key"])


class QuarantinedRow(Base):
    __tablename__ = "quarantine"
    __table_args__ = (
        Index("uq_quarantine_key_hash", "stream_id", "chunk_id", "key_hash", unique=True),
        # Deleting a chunk (retention) checks its quarantined rows by chunk alone.
        Index("ix_quarantine_chunk_id", "chunk_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    migration_id: Mapped[str] = mapped_column(
        ForeignKey("migrations.id", ondelete="CASCADE"), index=True
    )
    stream_id: Mapped[int] = mapped_column(ForeignKey("streams.id", ondelete="CASCADE"))
    chunk_id: Mapped[int] = mapped_column(ForeignKey("chunks.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(Text)  # the row's key, JSON-encoded
    # Null only on rows an older version wrote (migration 0003 and 0004 fill those in).
    key_hash: Mapped[str | None] = mapped_column(String(64), default=_key_hash_default)
    reason: Mapped[str] = mapped_column(Text)
    row: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    fencing_token: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    status: Mapped[str | None] = mapped_column(String(16))  # QuarantineStatus; NULL: for good
    source_key: Mapped[str | None] = mapped_column(Text)  # encoded source key, for a retry


class Event(Base):
    __tablename__ = "events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    migration_id: Mapped[str | None] = mapped_column(String(32), index=True)
    chunk_id: Mapped[int | None] = mapped_column(BigId)
    kind: Mapped[str] = mapped_column(String(50))
    message: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(DateTime)
    actor: Mapped[str | None] = mapped_column(String(200))  # who asked for it, when someone did


class NamedLease(Base):
    """A lease on a singleton duty (the sweeper), judged by the DB clock."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(50), primary_key=True)
    owner: Mapped[str | None] = mapped_column(String(200))
    token: Mapped[int] = mapped_column(Integer, default=0)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime)
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class Worker(Base):
    __tablename__ = "workers"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    version: Mapped[str] = mapped_column(String(50))
    host: Mapped[str] = mapped_column(String(200))
    pid: Mapped[int] = mapped_column(Integer)
    probe_url: Mapped[str | None] = mapped_column(String(200))
    state: Mapped[str] = mapped_column(String(16))
    in_flight: Mapped[int] = mapped_column(Integer, default=0)
    steps_done: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime] = mapped_column(DateTime)
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime)
    # What this version can do (sealed specs, endpoint kinds, message schemas): the API
    # only asks for what every live worker supports.
    capabilities: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # An operator asked (through the API) that this worker drain and leave; its heartbeat
    # picks the request up. Cleared when a worker of that name registers again.
    drain_requested_at: Mapped[datetime | None] = mapped_column(DateTime)


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime)


class StateMarker(Base):
    """Marks a database as a Baton state DB, so no spec can name it as a source or target.

    Any role that can connect sees the table in the catalog; preflight and every worker
    refuse an endpoint that has one (:mod:`etl_tasks.boundary.identity`).
    """

    __tablename__ = "baton_state_marker"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)


class Verification(Base):
    """One comparison of a migration's target with its source, in key ranges."""

    __tablename__ = "verifications"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    migration_id: Mapped[str] = mapped_column(
        ForeignKey("migrations.id", ondelete="CASCADE"), index=True
    )
    state: Mapped[str] = mapped_column(String(16), index=True)  # the sweeper's question
    trigger: Mapped[str] = mapped_column(String(16))  # "operator", or "spec" ("verify": true)
    requested_by: Mapped[str | None] = mapped_column(String(200))  # the actor who asked
    planned: Mapped[bool] = mapped_column(Boolean, default=False)  # its ranges exist
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    started_at: Mapped[datetime | None] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)


class VerificationRange(Base):
    """One key range of one stream, compared by one ``baton.verify`` task; leased like a chunk.

    Its result columns are written once, by the claim whose fencing token is still the
    range's (:mod:`etl_tasks.verification.lease`).
    """

    __tablename__ = "verification_ranges"
    __table_args__ = (
        UniqueConstraint("verification_id", "stream_id", "seq"),
        Index("ix_verification_ranges_verification_state", "verification_id", "state"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    verification_id: Mapped[int] = mapped_column(ForeignKey("verifications.id", ondelete="CASCADE"))
    migration_id: Mapped[str] = mapped_column(ForeignKey("migrations.id", ondelete="CASCADE"))
    stream_id: Mapped[int] = mapped_column(ForeignKey("streams.id", ondelete="CASCADE"))
    chunk_id: Mapped[int | None] = mapped_column(BigId)  # the chunk whose range it is
    seq: Mapped[int] = mapped_column(Integer)
    lower: Mapped[list[Any] | None] = mapped_column(JSON)  # exclusive; None: from the start
    upper: Mapped[list[Any] | None] = mapped_column(JSON)  # inclusive; None: open-ended
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    retries: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_token: Mapped[int] = mapped_column(Integer, default=0)
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime)
    not_before: Mapped[datetime | None] = mapped_column(DateTime)
    queued_at: Mapped[datetime | None] = mapped_column(DateTime)
    first_failure_at: Mapped[datetime | None] = mapped_column(DateTime)
    worker: Mapped[str | None] = mapped_column(String(200))
    last_error: Mapped[str | None] = mapped_column(Text)
    # The result, written once (None until then).
    source_rows: Mapped[int | None] = mapped_column(Integer)
    target_rows: Mapped[int | None] = mapped_column(Integer)
    expected_absent: Mapped[int | None] = mapped_column(Integer)  # quarantined source rows
    compared: Mapped[int | None] = mapped_column(Integer)  # rows found on both sides
    missing: Mapped[int | None] = mapped_column(Integer)
    unexpected: Mapped[int | None] = mapped_column(Integer)
    different: Mapped[int | None] = mapped_column(Integer)
    samples: Mapped[list[Any] | None] = mapped_column(JSON)  # a few rows that differ
    recorded_token: Mapped[int | None] = mapped_column(Integer)  # the claim that wrote it
    verify_ms: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)


class HttpBatch(Base):
    """One request an HTTP target confirmed (2xx): the ledger of a target without
    transactions lives here, in the state DB (:mod:`etl_tasks.connectors.http.ledger`).

    A load of the chunk that runs again sends only the rows no confirmed batch holds.
    """

    __tablename__ = "http_batches"

    migration_id: Mapped[str] = mapped_column(
        ForeignKey("migrations.id", ondelete="CASCADE"), primary_key=True
    )
    stream: Mapped[str] = mapped_column(String(200), primary_key=True)
    chunk_id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=False)
    batch_key: Mapped[str] = mapped_column(String(200), primary_key=True)  # Idempotency-Key
    rows: Mapped[int] = mapped_column(Integer)
    # Each row's identity (a digest of its source key and its values), in request order.
    row_ids: Mapped[list[Any]] = mapped_column(JSON)
    fencing_token: Mapped[int] = mapped_column(Integer)
    confirmed_at: Mapped[datetime] = mapped_column(DateTime)


class HttpPart(Base):
    """One request's place in an HTTP target's chunk, recorded before it is first sent: a
    load of the chunk that runs again cuts its rows into the same requests (the same
    Idempotency-Keys), whatever the stream's batch size has become since."""

    __tablename__ = "http_parts"

    migration_id: Mapped[str] = mapped_column(
        ForeignKey("migrations.id", ondelete="CASCADE"), primary_key=True
    )
    stream: Mapped[str] = mapped_column(String(200), primary_key=True)
    chunk_id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=False)
    # The extract position of the request's first row, and how many rows of the chunk it took
    first_position: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    rows: Mapped[int] = mapped_column(Integer)
    # Sends of it that got no answer (dropped, timed out): each may have been applied
    unanswered: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    planned_at: Mapped[datetime] = mapped_column(DateTime)


class HttpChunk(Base):
    """An HTTP target's ledger record of a chunk, written once all its batches are confirmed:
    what ``baton_ledger`` is to a SQL target (counts, quarantine, cut, deferred rows)."""

    __tablename__ = "http_chunks"

    migration_id: Mapped[str] = mapped_column(
        ForeignKey("migrations.id", ondelete="CASCADE"), primary_key=True
    )
    stream: Mapped[str] = mapped_column(String(200), primary_key=True)
    chunk_id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=False)
    fencing_token: Mapped[int] = mapped_column(Integer)
    rows_loaded: Mapped[int] = mapped_column(Integer)
    rows_quarantined: Mapped[int] = mapped_column(Integer)
    quarantine: Mapped[list[Any]] = mapped_column(JSON)
    cut_key: Mapped[list[Any] | None] = mapped_column(JSON)
    deferred: Mapped[list[Any] | None] = mapped_column(JSON)
    committed_at: Mapped[datetime] = mapped_column(DateTime)


class Notification(Base):
    """One webhook delivery of a finished migration: the outbox the sweeper sends from.

    Written in the transaction that finishes the migration; ``id`` is the delivery id a
    receiver de-duplicates by (delivery is at least once) (:mod:`etl_tasks.notifications`).
    """

    __tablename__ = "notifications"
    __table_args__ = (
        UniqueConstraint("migration_id", "state", "finished_at"),
        Index("ix_notifications_status_due", "status", "next_attempt_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    migration_id: Mapped[str] = mapped_column(ForeignKey("migrations.id", ondelete="CASCADE"))
    state: Mapped[str] = mapped_column(String(16))  # the migration's state it announces
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)  # the migration's, then
    status: Mapped[str] = mapped_column(String(16))  # pending, delivered, failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime)
    body: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # fixed at the first attempt
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime)
