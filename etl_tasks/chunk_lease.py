"""Claiming, committing and releasing a chunk's lease in the state DB.

A step claims the chunk (owner, a new fencing token, an expiry by the DB's
clock), works, then commits its outcome *only if its token is still the
chunk's*: a step whose lease was taken over changes nothing. Attempts are
counted at claim, so a chunk that keeps killing its worker is failed after
``max_attempts`` without anyone having to catch anything.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, bindparam, exists, func, or_, select, update
from sqlalchemy.orm import Session

from etl_tasks.constants import FIRST_STEP, STEPS
from etl_tasks.metrics import LEASE_EXPIRIES
from etl_tasks.outbox import record_finish
from etl_tasks.runtime import Runtime, spec_digest
from etl_tasks.state import driver_statements
from etl_tasks.state.db import ROW_LOCK
from etl_tasks.state.enums import ChunkState, MigrationState, StreamState
from etl_tasks.state.models import (
    CHUNKS,
    MIGRATIONS,
    STREAMS,
    Chunk,
    Event,
    Migration,
    Stream,
    VerificationRange,
    step_timings,
)

log = logging.getLogger(__name__)

NOW: Any = object()  # placeholder in commit(): "the DB's clock at commit time"

#: The clock a worker times its leases by: Linux's boot-time clock, which keeps counting
#: while the machine sleeps (the monotonic clock stops), else the monotonic clock.
_LEASE_CLOCK = getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC)


def lease_clock() -> float:
    """Seconds by :data:`_LEASE_CLOCK`: a lease young by it is young by the state DB's."""
    return time.clock_gettime(_LEASE_CLOCK)


@dataclass(frozen=True)
class Claim:
    """A step's hold on a chunk: what it needs to do its work."""

    chunk_id: int
    migration_id: str
    stream: str
    step: str
    token: int
    stage_token: int | None
    lower: list[Any] | None
    upper: list[Any] | None
    attempts: int
    extracted: bool = False  # an extract of this chunk committed before (a load may have too)
    keys: list[Any] | None = None  # a key-set chunk's encoded source keys (a retry)
    timings: dict[str, int] = field(default_factory=dict)  # ms per step, steps done so far
    rows_in: int | None = None  # rows its extract staged, once it has
    # lease_clock(), read before the state DB's clock the lease was reckoned from (0: not
    # known, as if taken long ago): see splitting.confirm_lease.
    leased_at: float = 0.0


#: The columns a claim takes of its chunk (:func:`_claim_of`; step_timings' among them).
_CLAIMED = (
    "migration_id lease_token stage_token lower upper keys rows_in attempts "
    "timings extract_ms transform_ms load_ms"
).split()
#: A chunk with what a claim needs of its migration and stream, locked. Statements are
#: built once: a claim is the state DB's busiest transaction, and the ORM's unit of work
#: would cost more than the statements themselves.
_CLAIM_READ = (
    select(
        *(
            CHUNKS.c[name]
            for name in _CLAIMED
            + "stream_id step state lease_owner lease_expires_at not_before started_at "
            "last_error".split()
        ),
        MIGRATIONS.c.state.label("migration_state"),
        MIGRATIONS.c.updated_at.label("migration_updated_at"),
        STREAMS.c.name.label("stream"),
    )
    .select_from(
        CHUNKS.join(MIGRATIONS, MIGRATIONS.c.id == CHUNKS.c.migration_id).join(
            STREAMS, STREAMS.c.id == CHUNKS.c.stream_id
        )
    )
    .where(CHUNKS.c.id == bindparam("chunk"))
    .with_for_update(of=CHUNKS, **ROW_LOCK)
)
_SPEC_READ = select(MIGRATIONS.c.spec, MIGRATIONS.c.sealed).where(
    MIGRATIONS.c.id == bindparam("migration")
)
_MIGRATION_STATE = select(MIGRATIONS.c.state).where(MIGRATIONS.c.id == bindparam("migration"))
_BY_ID = update(CHUNKS).where(CHUNKS.c.id == bindparam("chunk"))
_FENCED = _BY_ID.where(CHUNKS.c.lease_token == bindparam("token"))
#: As _FENCED, while the chunk's migration runs (a chained step's claim).
_FENCED_RUNNING = _FENCED.where(
    exists().where(
        MIGRATIONS.c.id == CHUNKS.c.migration_id, MIGRATIONS.c.state == MigrationState.RUNNING
    )
)


_NOW = bindparam("now", type_=CHUNKS.c.started_at.type)
_OWNER = bindparam("owner", type_=CHUNKS.c.lease_owner.type)
#: What makes a locked chunk free to claim at once: no holder, not waiting out a retry, of
#: the step, its migration running, and attempts to spare (:data:`_CLAIM_FREE`).
FREE_TO_CLAIM = (
    CHUNKS.c.step == bindparam("claim_step"),
    CHUNKS.c.state == ChunkState.PENDING,
    CHUNKS.c.lease_owner.is_(None),
    or_(CHUNKS.c.not_before.is_(None), CHUNKS.c.not_before <= _NOW),
    CHUNKS.c.attempts < bindparam("max_attempts"),
    exists().where(
        MIGRATIONS.c.id == CHUNKS.c.migration_id,
        MIGRATIONS.c.state == MigrationState.RUNNING,
    ),
)
#: A fresh claim's columns, and what it reads back (:func:`taken`).
CLAIM_VALUES: dict[str, Any] = {
    "state": ChunkState.RUNNING,
    "attempts": CHUNKS.c.attempts + 1,
    "lease_token": CHUNKS.c.lease_token + 1,
    "lease_owner": _OWNER,
    "worker": _OWNER,
    "lease_expires_at": bindparam("expires"),
    "queued_at": None,
    "started_at": func.coalesce(CHUNKS.c.started_at, _NOW),
}
CLAIM_RETURNING = (
    CHUNKS.c.id,
    *(CHUNKS.c[name] for name in _CLAIMED),
    select(STREAMS.c.name)
    .where(STREAMS.c.id == CHUNKS.c.stream_id)
    .scalar_subquery()
    .label("stream"),
    select(MIGRATIONS.c.updated_at)
    .where(MIGRATIONS.c.id == CHUNKS.c.migration_id)
    .scalar_subquery()
    .label("migration_updated_at"),
)
#: A fresh claim of a chunk whose lock the caller holds, read back in the same statement.
#: Anything else goes the long way (:func:`claim_in`).
_CLAIM_FREE = _BY_ID.where(*FREE_TO_CLAIM).values(**CLAIM_VALUES).returning(*CLAIM_RETURNING)


def claim_params(rt: Runtime, step: str, now: datetime) -> dict[str, Any]:
    """The parameters of :data:`FREE_TO_CLAIM` and :data:`CLAIM_VALUES`."""
    return {
        "claim_step": step,
        "now": now,
        "max_attempts": rt.settings.max_attempts,
        "owner": rt.worker_name,
        "expires": now + timedelta(seconds=rt.settings.lease_s),
    }


def claim_locked(
    rt: Runtime, s: Session, chunk_id: int, step: str, now: datetime, leased_at: float
) -> Claim | None:
    """:func:`claim_in` for a chunk whose row lock ``s`` took just now (a ready chunk a
    finishing load goes on with): one statement where the state DB can return from an
    UPDATE and the chunk is free, :func:`claim_in` otherwise (a lease to judge, attempts
    used up, no migration running)."""
    conn = s.connection()
    if not conn.dialect.update_returning:
        return claim_in(rt, s, chunk_id, step, now, leased_at)[0]
    row = conn.execute(
        _CLAIM_FREE, {"chunk": chunk_id, **claim_params(rt, step, now)}
    ).one_or_none()
    if row is None:
        return claim_in(rt, s, chunk_id, step, now, leased_at)[0]
    return taken(rt, conn, row, step, leased_at)


def taken(rt: Runtime, conn: Connection, row: Any, step: str, leased_at: float) -> Claim:
    """The claim a row of :data:`CLAIM_RETURNING` stands for (the spec followed first, if a
    replay revised it)."""
    _follow_spec(rt, conn, row.migration_id, row.migration_updated_at)
    return _claim_of(row, row.id, step, row.lease_token, row.attempts, leased_at)


def _follow_spec(rt: Runtime, conn: Connection, migration_id: str, updated_at: datetime) -> None:
    """Read the migration's spec again if a replay may have revised it since this process
    last did."""
    if rt.spec_may_have_changed(migration_id, updated_at):
        stored, sealed = conn.execute(_SPEC_READ, {"migration": migration_id}).one()
        rt.follow_spec(migration_id, spec_digest(stored, sealed), updated_at)


def _claim_of(
    row: Any, chunk_id: int, step: str, token: int, attempts: int, leased_at: float
) -> Claim:
    """The claim of ``row`` (the chunk's columns of :data:`_CLAIMED` and its stream)."""
    return Claim(
        chunk_id,
        row.migration_id,
        row.stream,
        step,
        token,
        row.stage_token,
        row.lower,
        row.upper,
        attempts,
        row.rows_in is not None,
        row.keys,
        step_timings(row),
        row.rows_in,
        leased_at,
    )


def claim(rt: Runtime, chunk_id: int, step: str) -> Claim | None:
    """Take the chunk's lease for ``step``; ``None`` when this message has nothing to do."""
    with rt.db.session() as s:
        leased_at = lease_clock()
        taken, expired = claim_in(rt, s, chunk_id, step, rt.db.now(s), leased_at)
    if expired:  # counted once the claim is committed
        LEASE_EXPIRIES.labels("chunk").inc()
    return taken


def claim_in(
    rt: Runtime, s: Session, chunk_id: int, step: str, now: datetime, leased_at: float = 0.0
) -> tuple[Claim | None, bool]:
    """:func:`claim` in the caller's transaction ``s``; also says whether the lease it took
    had expired on another holder. ``leased_at``: :func:`lease_clock`, read before ``now``."""
    conn = s.connection()
    row = conn.execute(_CLAIM_READ, {"chunk": chunk_id}).one_or_none()
    if row is None or row.step != step or not _claimable(row, now):
        return None, False
    _follow_spec(rt, conn, row.migration_id, row.migration_updated_at)
    if row.attempts >= rt.settings.max_attempts:
        reason = f"{step} did not finish after {row.attempts} attempts"
        chunk = s.get(Chunk, chunk_id)
        assert chunk is not None
        fail_chunk(s, chunk, now, row.last_error or reason)
        return None, False
    taken = _claim_of(row, chunk_id, step, row.lease_token + 1, row.attempts + 1, leased_at)
    conn.execute(
        _BY_ID,
        {
            "chunk": chunk_id,
            "attempts": taken.attempts,
            "lease_token": taken.token,
            "lease_owner": rt.worker_name,
            "lease_expires_at": now + timedelta(seconds=rt.settings.lease_s),
            "state": ChunkState.RUNNING,
            "worker": rt.worker_name,
            "queued_at": None,
            "started_at": row.started_at or now,
        },
    )
    return taken, row.lease_owner is not None  # its holder never released it


def _claimable(row: Any, now: datetime) -> bool:
    if row.migration_state != MigrationState.RUNNING:
        return False
    if row.state not in (ChunkState.PENDING, ChunkState.RUNNING):
        return False
    if row.lease_owner and row.lease_expires_at and row.lease_expires_at > now:
        return False  # another step holds it and is alive
    return not (row.not_before and row.not_before > now)


def fenced_update(conn: Connection, c: Claim, values: dict[str, Any]) -> bool:
    """Set ``values`` on ``c``'s chunk if ``c``'s token is still the chunk's; say whether
    it was. One Core statement, compiled once per set of columns."""
    result = conn.execute(_FENCED, {"chunk": c.chunk_id, "token": c.token, **values})
    return bool(result.rowcount)


#: A released lease: no holder, no expiry.
RELEASED: dict[str, Any] = {"lease_owner": None, "lease_expires_at": None}


def commit(rt: Runtime, c: Claim, **values: Any) -> bool:
    """Write the step's outcome and release the lease, if the token is still ours."""
    with rt.db.one_statement() as conn:
        now = rt.db.now(conn)
        values = {**RELEASED, **values}
        return fenced_update(conn, c, {k: (now if v is NOW else v) for k, v in values.items()})


def commit_and_claim(rt: Runtime, c: Claim, step: str, **values: Any) -> tuple[bool, Claim | None]:
    """Commit ``c``'s outcome and, in the same transaction, take the chunk's lease for its
    next ``step`` on this worker, as :func:`claim` would when that step's message arrived
    here (a new fencing token, the attempt counted). The chunk keeps the spec revision its
    first step followed (a replay's amended columns apply from the chunks claimed after it):
    the migration's row is read for its state alone, not for the spec it holds.

    Returns ``(committed, claim)``: the claim is ``None`` when the migration no longer
    runs (paused, cancelled): the outcome is then committed as :func:`commit` does, for
    the caller to publish the step. Nothing is committed if the token is no longer ours.
    """
    with rt.db.one_statement() as conn:
        leased_at = lease_clock()
        now = rt.db.now(conn)
        values = {k: (now if v is NOW else v) for k, v in values.items()}
        claimed = {
            **values,
            "step": step,
            "state": ChunkState.RUNNING,
            "lease_token": c.token + 1,
            "lease_owner": rt.worker_name,
            "lease_expires_at": now + timedelta(seconds=rt.settings.lease_s),
            "worker": rt.worker_name,
            "attempts": 1,
            "queued_at": None,
        }
        fenced = {"chunk": c.chunk_id, "token": c.token}
        # The usual case in one statement: the token still ours, the migration running.
        # Otherwise it wrote nothing, and what follows is fenced on its own.
        if not driver_statements.execute(conn, _FENCED_RUNNING, {**fenced, **claimed}).rowcount:
            if conn.scalar(_MIGRATION_STATE, {"migration": c.migration_id}) == (
                MigrationState.RUNNING
            ):
                return False, None  # the token is no longer ours
            released = {**values, **RELEASED, "step": step, "queued_at": now}
            return fenced_update(conn, c, released), None
        values = claimed
    rows_in = values.get("rows_in", c.rows_in)
    return True, replace(
        c,
        step=step,
        token=c.token + 1,
        stage_token=values.get("stage_token", c.stage_token),
        attempts=1,
        extracted=c.extracted or rows_in is not None,
        timings=dict(values.get("timings", c.timings)),
        rows_in=rows_in,
        leased_at=leased_at,
    )


def retry_later(
    rt: Runtime,
    c: Claim,
    error: str,
    connection: bool = True,
    *,
    retry_after: float | None = None,
    jitter: bool = False,
) -> bool:
    """A transient failure: release the lease and set ``not_before`` (never a countdown);
    say whether the chunk will retry (not when its lease was lost, nor when it failed for
    having retried past the retry window).

    ``retry_after`` (the other side's ``Retry-After``) replaces the backoff; ``jitter``
    draws the backoff at random between nothing and its full length (full jitter).

    An error a working server gives (``connection`` False: a deadlock, a lock timeout)
    that repeats identically is the data's, not an outage: each such answer counts as an
    attempt, so after ``max_attempts`` of them the chunk fails with it instead of
    waiting out the retry window.
    """
    with rt.db.session() as s:
        now = rt.db.now(s)
        chunk = s.get(Chunk, c.chunk_id, with_for_update=ROW_LOCK)
        if chunk is None or chunk.lease_token != c.token:
            return False
        first = chunk.first_failure_at or now
        window = timedelta(seconds=rt.settings.retry_window_s)
        if now - first > window:
            fail_chunk(s, chunk, now, f"still failing after {window}: {error}")
            return False
        delay = min(rt.settings.retry_backoff_s * 2**chunk.retries, rt.settings.retry_backoff_max_s)
        if retry_after is not None:
            delay = max(0.0, retry_after)
        elif jitter:
            delay = random.uniform(0.0, delay)
        chunk.retries += 1
        if connection or chunk.last_error != error[:2000]:
            chunk.attempts = max(0, chunk.attempts - 1)  # it did not crash: not a lost attempt
        chunk.first_failure_at = first
        chunk.not_before = now + timedelta(seconds=delay)
        chunk.lease_owner = None
        chunk.lease_expires_at = None
        chunk.queued_at = None
        chunk.last_error = error[:2000]
        mig = s.get(Migration, c.migration_id)
        if mig is not None:
            mig.waiting_reason = error[:500]
            mig.updated_at = now
    log.warning("chunk will retry", extra={"chunk_id": c.chunk_id, "error": error})
    return True


def wait_for_slot(rt: Runtime, c: Claim, reason: str) -> None:
    """Every connection slot of the step's system is taken: give the chunk back, uncounted.

    Not a failure: no retry, no attempt is counted and the retry window does not start.
    The step that frees a slot wakes the chunk (:func:`wake`); ``not_before`` is only the
    fallback for a wake that was lost (the sweeper then sends the chunk again).
    """
    with rt.db.session() as s:
        now = rt.db.now(s)
        chunk = s.get(Chunk, c.chunk_id, with_for_update=ROW_LOCK)
        if chunk is None or chunk.lease_token != c.token:
            return
        fallback = rt.settings.sweep_interval_s * random.uniform(0.5, 1.0)
        chunk.attempts = max(0, chunk.attempts - 1)
        chunk.not_before = now + timedelta(seconds=fallback)
        chunk.lease_owner = None
        chunk.lease_expires_at = None
        chunk.queued_at = None
        mig = s.get(Migration, c.migration_id)
        if mig is not None and mig.waiting_reason != reason[:500]:
            mig.waiting_reason = reason[:500]
            mig.updated_at = now


def wake(rt: Runtime, chunk_id: int, step: str) -> bool:
    """Send a chunk that waits for a slot now; False when it no longer waits (another
    message or the sweeper took it, or it moved on)."""
    with rt.db.session() as s:
        now = rt.db.now(s)
        woken = s.execute(
            update(Chunk)
            .where(
                Chunk.id == chunk_id,
                Chunk.step == step,
                Chunk.state == ChunkState.RUNNING,
                Chunk.lease_owner.is_(None),
                Chunk.queued_at.is_(None),
            )
            .values(not_before=None, queued_at=now)
        )
        return bool(woken.rowcount)  # type: ignore[attr-defined]


def release_after_error(rt: Runtime, c: Claim, error: str) -> None:
    """An unexpected error: release the lease with a backoff; the attempt stays counted."""
    with rt.db.session() as s:
        now = rt.db.now(s)
        chunk = s.get(Chunk, c.chunk_id, with_for_update=ROW_LOCK)
        if chunk is None or chunk.lease_token != c.token:
            return
        delay = min(
            rt.settings.retry_backoff_s * 2 ** (chunk.attempts - 1), rt.settings.retry_backoff_max_s
        )
        chunk.not_before = now + timedelta(seconds=delay)
        chunk.lease_owner = None
        chunk.lease_expires_at = None
        chunk.queued_at = None
        chunk.last_error = error[:2000]


def fail_claimed(rt: Runtime, c: Claim, error: str) -> None:
    """A permanent failure of the step holding ``c``."""
    with rt.db.session() as s:
        now = rt.db.now(s)
        chunk = s.get(Chunk, c.chunk_id, with_for_update=ROW_LOCK)
        if chunk is not None and chunk.lease_token == c.token:
            fail_chunk(s, chunk, now, error)


def back_to_extract(rt: Runtime, c: Claim) -> bool:
    """The staged input is gone: the chunk starts over from extract (rows are re-read)."""
    return commit(rt, c, step=FIRST_STEP.name, stage_token=None, queued_at=NOW, attempts=0)


def timed(c: Claim, ms: int, skipped: tuple[str, ...] = ()) -> dict[str, Any]:
    """The columns that record that ``c``'s step took ``ms`` and each step in ``skipped``
    none, for :func:`commit`: their entries in ``timings``, and the columns older versions
    read them from, while they may run."""
    took = {c.step: ms, **dict.fromkeys(skipped, 0)}
    values: dict[str, Any] = {"timings": {**c.timings, **took}}
    for step, step_ms in took.items():
        legacy = STEPS[step].timing_column
        if legacy:
            values[legacy] = step_ms
    return values


def fail_chunk(s: Session, chunk: Chunk, now: datetime, error: str) -> None:
    """The chunk cannot succeed: fail it, its stream and its migration."""
    chunk.state = ChunkState.FAILED
    chunk.lease_owner = None
    chunk.lease_expires_at = None
    chunk.queued_at = None
    chunk.finished_at = now
    chunk.last_error = error[:2000]
    stream = s.get(Stream, chunk.stream_id)
    if stream is not None:
        stream.state = StreamState.FAILED
    fail_migration(s, chunk.migration_id, now, f"chunk {chunk.id} failed: {error}")
    s.add(
        Event(
            migration_id=chunk.migration_id,
            chunk_id=chunk.id,
            kind="chunk_failed",
            message=error[:2000],
            at=now,
        )
    )


def fail_migration(s: Session, migration_id: str, now: datetime, error: str) -> None:
    mig = s.get(Migration, migration_id, with_for_update=ROW_LOCK)
    if mig is None or mig.state in (
        MigrationState.FAILED,
        MigrationState.CANCELLED,
        MigrationState.SUCCEEDED,
    ):
        return
    mig.state = MigrationState.FAILED
    mig.error = error[:2000]
    mig.finished_at = now
    mig.updated_at = now
    # A failed migration has no running or pending stream: every stream not done fails
    # with it, the ones that never started too (control.retry starts them again).
    s.execute(
        update(Stream)
        .where(
            Stream.migration_id == migration_id,
            Stream.state.in_([StreamState.PENDING, StreamState.RUNNING]),
        )
        .values(state=StreamState.FAILED)
    )
    s.add(Event(migration_id=migration_id, kind="migration_failed", message=error[:2000], at=now))
    record_finish(s, mig, now)


def needs_message(
    model: type[Chunk] | type[VerificationRange], now: datetime, stale: datetime, broker_lost: bool
) -> ColumnElement[bool]:
    """Rows of ``model`` (chunks, verification ranges: both leased the same way) that no
    live message or lease covers."""
    no_live_lease = or_(model.lease_expires_at.is_(None), model.lease_expires_at <= now)
    due = or_(model.not_before.is_(None), model.not_before <= now)
    lost = model.queued_at.is_not(None) if broker_lost else model.queued_at <= stale
    running_unqueued = and_(model.state == ChunkState.RUNNING, model.queued_at.is_(None))
    return and_(
        model.state.in_([ChunkState.PENDING, ChunkState.RUNNING]),
        no_live_lease,
        due,
        or_(lost, running_unqueued),
    )
