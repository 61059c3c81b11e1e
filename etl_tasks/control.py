"""What operators do to migrations: submit, pause, resume, cancel, retry.

Every function takes the state DB explicitly, and the actor it acts for (how the
migration's events name who asked: ``token 3 (alice)``, ``local``); publishing
the plan task afterwards is the caller's job (a lost message only costs one
sweep, see :mod:`etl_tasks.sweeper`).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import case, select, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session

from etl_tasks.errors import Conflict, NotFound
from etl_tasks.outbox import record_finish
from etl_tasks.spec import MigrationSpec
from etl_tasks.state.db import ROW_LOCK, StateDB
from etl_tasks.state.enums import ChunkState, MigrationState, Step, StreamState
from etl_tasks.state.models import Chunk, Event, Migration, Stream
from etl_tasks.verification.requests import SPEC, add_request


def request_hash(body: Any) -> str:
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


def scoped_key(scope: str, key: str) -> str:
    """How an ``Idempotency-Key`` is stored: a hash of who sent it and the key itself.

    Two callers sending the same key never meet (nor learn of each other's
    migration), and the stored value is 64 hex characters whatever the key.
    """
    return hashlib.sha256(orjson.dumps([scope, key])).hexdigest()


def create_migration(
    db: StateDB,
    spec: MigrationSpec,
    keys: Mapping[str, Sequence[str]],
    *,
    idempotency_key: str | None = None,
    body_hash: str | None = None,
    storage: tuple[dict[str, Any], str | None] | None = None,
    owner: str | None = None,
    actor: str | None = None,
    notes: Sequence[str] = (),
) -> tuple[str, bool]:
    """Record a validated, preflighted spec; return ``(id, created)``.

    ``storage`` is the spec as it is kept (see
    :func:`etl_tasks.boundary.sealing.storage_form`); by default, as submitted.
    With an idempotency key (see :func:`scoped_key`), the same key and body return
    the first migration again; the same key with another body is a :class:`Conflict`.
    ``owner`` is who submitted it (a token's name), ``actor`` how its events name them;
    ``notes`` (what preflight found worth saying) become events.
    """
    if idempotency_key:
        existing = _by_key(db, idempotency_key, body_hash)
        if existing:
            return existing, False
    migration_id = uuid.uuid4().hex
    stored, sealed = storage or (spec.to_stored(), None)
    try:
        with db.session() as s:
            now = db.now(s)
            s.add(
                Migration(
                    id=migration_id,
                    name=spec.name,
                    state=MigrationState.PENDING,
                    spec=stored,
                    sealed=sealed,
                    idempotency_key=idempotency_key,
                    request_hash=body_hash,
                    owner=owner,
                    notify=None if spec.notify is None else spec.notify.model_dump(mode="json"),
                    created_at=now,
                    updated_at=now,
                )
            )
            s.flush()
            for position, st in enumerate(spec.streams):
                s.add(
                    Stream(
                        migration_id=migration_id,
                        name=st.stream_name,
                        position=position,
                        state=StreamState.PENDING,
                        prepared=False,
                        key_columns=list(keys[st.stream_name]),
                        fully_planned=False,
                        plan_seq=0,
                        chunk_rows=spec.chunk_rows,
                    )
                )
            s.add(
                Event(
                    migration_id=migration_id,
                    kind="submitted",
                    message=spec.name,
                    at=now,
                    actor=actor,
                )
            )
            for note in notes:
                s.add(Event(migration_id=migration_id, kind="preflight_note", message=note, at=now))
            if spec.verify:  # planned by a worker once the migration has succeeded
                add_request(s, migration_id, SPEC, actor, now)
    except sa_exc.IntegrityError:
        if idempotency_key:
            existing = _by_key(db, idempotency_key, body_hash)
            if existing:
                return existing, False
        raise
    return migration_id, True


def find_replay(db: StateDB, key: str, body_hash: str | None) -> str | None:
    """The migration an ``Idempotency-Key`` already created (Conflict if the body differs)."""
    return _by_key(db, key, body_hash)


def _by_key(db: StateDB, key: str, body_hash: str | None) -> str | None:
    with db.session() as s:
        mig = s.scalar(select(Migration).where(Migration.idempotency_key == key))
        if mig is None:
            return None
        if mig.request_hash != body_hash:
            raise Conflict("this Idempotency-Key was used with a different request body")
        return mig.id


def _load(db: StateDB, migration_id: str) -> Migration:
    with db.session() as s:
        mig = s.get(Migration, migration_id)
        if mig is None:
            raise NotFound(f"no migration {migration_id}")
        return mig


def _transition(
    db: StateDB, migration_id: str, allowed: set[str], to: str, kind: str, actor: str
) -> None:
    with db.session() as s:
        mig = s.get(Migration, migration_id, with_for_update=ROW_LOCK)
        if mig is None:
            raise NotFound(f"no migration {migration_id}")
        if mig.state not in allowed:
            raise Conflict(f"cannot {kind} a migration that is {mig.state}")
        now = db.now(s)
        mig.state = to
        mig.updated_at = now
        if to in (MigrationState.CANCELLED,):
            mig.finished_at = now
        if to == MigrationState.PAUSED:
            mig.paused_at, mig.resumed_at = now, None
        elif kind == "resume":
            _end_pause(mig, mig.paused_at, now)
        s.add(_event(migration_id, kind, actor, now))
        record_finish(s, mig, now)


def _end_pause(mig: Migration, since: datetime | None, now: datetime) -> None:
    """Record a pause (or a failed migration's wait for its retry) that ends now, so the
    recent rate leaves its seconds out (:mod:`etl_tasks.progress`)."""
    if since is None:
        return
    mig.paused_at, mig.resumed_at = since, now
    mig.paused_s = (mig.paused_s or 0.0) + max((now - since).total_seconds(), 0.0)


def _event(migration_id: str, kind: str, actor: str, at: datetime) -> Event:
    return Event(
        migration_id=migration_id, kind=kind, message=f"{kind} by {actor}", at=at, actor=actor
    )


def pause(db: StateDB, migration_id: str, actor: str) -> None:
    """Steps in hand finish; no new step starts until resume."""
    _transition(
        db,
        migration_id,
        {MigrationState.PENDING, MigrationState.RUNNING},
        MigrationState.PAUSED,
        "pause",
        actor,
    )


def resume(db: StateDB, migration_id: str, actor: str) -> None:
    _transition(db, migration_id, {MigrationState.PAUSED}, MigrationState.RUNNING, "resume", actor)
    forget_queued(db, migration_id)


def cancel(db: StateDB, migration_id: str, actor: str) -> None:
    _transition(
        db,
        migration_id,
        {MigrationState.PENDING, MigrationState.RUNNING, MigrationState.PAUSED},
        MigrationState.CANCELLED,
        "cancel",
        actor,
    )


def retry(db: StateDB, migration_id: str, actor: str) -> None:
    """A failed migration runs again from its failed chunks; done chunks stay done."""
    with db.session() as s:
        mig = s.get(Migration, migration_id, with_for_update=ROW_LOCK)
        if mig is None:
            raise NotFound(f"no migration {migration_id}")
        if mig.state != MigrationState.FAILED:
            raise Conflict(f"cannot retry a migration that is {mig.state}")
        if mig.summary is not None:  # retention is removing or has removed its chunks
            raise Conflict("cannot retry a migration whose details retention has removed")
        now = db.now(s)
        reopen_failed(s, migration_id)
        _end_pause(mig, mig.finished_at, now)
        mig.state = MigrationState.RUNNING
        mig.error = None
        mig.finished_at = None
        mig.updated_at = now
        s.add(_event(migration_id, "retry", actor, now))
    forget_queued(db, migration_id)


def reopen_failed(s: Session, migration_id: str) -> None:
    """A failed migration's failed chunks start again from extract; done chunks stay done."""
    s.execute(
        update(Chunk)
        .where(Chunk.migration_id == migration_id, Chunk.state == ChunkState.FAILED)
        .values(
            state=ChunkState.PENDING,
            step=Step.EXTRACT,
            attempts=0,
            retries=0,
            lease_owner=None,
            lease_expires_at=None,
            not_before=None,
            queued_at=None,
            first_failure_at=None,
            stage_token=None,
        )
    )
    # A stream that was never prepared (it failed with its migration before it
    # started) is pending again, so that it is prepared before it is planned.
    s.execute(
        update(Stream)
        .where(Stream.migration_id == migration_id, Stream.state == StreamState.FAILED)
        .values(
            state=case((Stream.prepared.is_(True), StreamState.RUNNING), else_=StreamState.PENDING)
        )
    )


def forget_queued(db: StateDB, migration_id: str) -> None:
    """Messages dropped while paused are gone: let the planner and sweeper resend them."""
    with db.session() as s:
        s.execute(
            update(Chunk)
            .where(
                Chunk.migration_id == migration_id,
                Chunk.state.in_([ChunkState.PENDING, ChunkState.RUNNING]),
            )
            .values(queued_at=None)
        )
