"""Recording a chunk whose load committed in the target: the state DB learns it from the ledger.

Whoever learns of the commit calls :func:`finish`: the load itself, a redelivered
load that met the ledger row, or a step whose staged input was gone and that read
the ledger first (:mod:`etl_tasks.steps.ledger_first`). Counts and quarantined rows
are copied from the ledger record, never incremented, and the record's cut (if the
load stopped at its deadline) becomes the chunk's bound.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from etl_tasks.budget import largest_chunk, next_chunk_rows
from etl_tasks.chunk_lease import Claim, claim_locked, fail_migration, lease_clock, timed
from etl_tasks.connectors.base import LedgerRecord
from etl_tasks.constants import FIRST_STEP
from etl_tasks.errors import BatonError
from etl_tasks.metrics import ROWS
from etl_tasks.plan_requests import request_plan
from etl_tasks.planning import plan_more
from etl_tasks.publisher import publish_step
from etl_tasks.ready_chunks import Queued, mark_queued, queue_ready
from etl_tasks.retries import record_deferred, settle_retry
from etl_tasks.runtime import Runtime
from etl_tasks.splitting import split
from etl_tasks.state.db import ROW_LOCK
from etl_tasks.state.enums import ChunkState, Step
from etl_tasks.state.models import CHUNKS, MIGRATIONS, STREAMS, Chunk, QuarantinedRow
from etl_tasks.steps import finish_statement as statement

log = logging.getLogger(__name__)

_planners: dict[int, threading.Lock] = {}  # by stream id: see _planned_here
_planners_lock = threading.Lock()

# Built once: every chunk's finish runs them.
_NOT_WAITING = (
    update(MIGRATIONS)
    .where(MIGRATIONS.c.id == bindparam("migration"), MIGRATIONS.c.waiting_reason.is_not(None))
    .values(waiting_reason=None)
)
_CHUNK_ROWS = select(STREAMS.c.chunk_rows).where(STREAMS.c.id == bindparam("stream"))
_SET_CHUNK_ROWS = update(STREAMS).where(STREAMS.c.id == bindparam("stream"))
_DONE = (
    update(CHUNKS)
    .where(CHUNKS.c.id == bindparam("chunk"), CHUNKS.c.lease_token == bindparam("token"))
    .returning(*statement.DONE_RETURNING)
)


def finish(
    rt: Runtime,
    c: Claim,
    record: LedgerRecord,
    load_ms: int | None,
    *,
    chain: bool = False,
    weight: float | None = None,
) -> Claim | None:
    """Record the committed chunk in the state DB, if ``c`` still holds it, and queue the
    migration's next chunks in its place (:mod:`etl_tasks.ready_chunks`); when the ready
    chunks run low, plan the stream's next ones here, or ask for an advance.

    ``chain``: the first of those chunks is claimed for its extract in the same
    transaction, and returned for this thread to run instead of being published.
    ``load_ms`` is None when the load that committed is not the one reporting it.
    ``weight``: what one of its rows took of the worker's memory, when known (the
    stream's chunks grow no larger than :data:`~etl_tasks.budget.CHUNK_BYTES` holds).
    """
    # Decided before the transaction: a first decision records an event of its own.
    ceiling = _largest_chunk(rt, c, weight)
    if chain and load_ms is not None and _plain(c, record) and statement.available(rt):
        queued, taken, stream_id = _record_at_once(rt, c, record, load_ms, ceiling)
    else:
        queued, taken, stream_id = _record(rt, c, record, load_ms, chain, ceiling)
    _send(rt, queued)
    if queued.running_low:
        if stream_id is not None and _planned_here(rt, c, stream_id):
            if taken is None:  # none was ready: take one of those just planned
                more, taken = _queue_next(rt, c.migration_id, chain)
                _send(rt, more)
        else:
            request_plan(rt, c.migration_id)
    return taken


def _send(rt: Runtime, queued: Queued) -> None:
    """Publish the extracts of the chunks queued just now (their transaction committed)."""
    for chunk_id in queued.ids:
        publish_step(rt.publisher, FIRST_STEP.name, chunk_id)


def _planned_here(rt: Runtime, c: Claim, stream_id: int) -> bool:
    """Plan the chunk's stream's next chunks on this thread; say whether the stream's
    planning is in hand: chunks added here or by another planner, or enough waiting.

    A message to plan them waits for a free thread, and every thread of a busy worker
    goes from chunk to chunk: the ready chunks ran out while it waited, and each thread
    that found none ended its task. Planners racing on one stream are harmless
    (:mod:`etl_tasks.planning`). Anything else an advance does (preparing the streams
    that come next, settling one that is done) still goes by message: when nothing was
    left to plan here, or planning failed (the advance deals with that failure). One
    thread of a process plans a stream at a time: another that finds it planning goes
    on, since the chunks it would plan are on their way. A planner of another worker that
    got there first needs no advance either: when two workers' loads run low at once,
    the one that lost asked for an advance each time, and advances became a tenth of the
    workers' CPU."""
    with _planners_lock:
        planner = _planners.setdefault(stream_id, threading.Lock())
    if not planner.acquire(blocking=False):
        return True
    try:
        return plan_more(rt, c.migration_id, stream_id) is not None
    except (BatonError, SQLAlchemyError) as exc:
        log.warning(
            "planning after a chunk failed (%s); an advance will",
            exc,
            extra={"chunk_id": c.chunk_id},
        )
        return False
    finally:
        planner.release()


def _queue_next(rt: Runtime, migration_id: str, chain: bool) -> tuple[Queued, Claim | None]:
    """Queue the migration's ready chunks in the free places, in a transaction of its own;
    the first one is claimed for this thread when ``chain`` (the others are for the caller
    to publish)."""
    with rt.db.session() as s:
        leased_at = lease_clock()
        now = rt.db.now(s)
        return _queue_in(rt, s, migration_id, now, leased_at, chain)


def _queue_in(
    rt: Runtime, s: Session, migration_id: str, now: datetime, leased_at: float, chain: bool
) -> tuple[Queued, Claim | None]:
    """:func:`~etl_tasks.ready_chunks.queue_ready` in ``s``, the first chunk claimed when
    ``chain`` (locked just now, ready: no lease of another holder to expire)."""
    queued = queue_ready(s.connection(), rt.settings, migration_id, now, claiming=chain)
    taken = None
    if chain and queued.ids:
        taken = claim_locked(rt, s, queued.ids[0], FIRST_STEP.name, now, leased_at)
        if taken is not None:
            queued = replace(queued, ids=queued.ids[1:])
        else:  # goes by message after all
            mark_queued(s.connection(), queued.ids[:1], now)
    return queued, taken


def _record_at_once(
    rt: Runtime, c: Claim, record: LedgerRecord, load_ms: int, ceiling: int
) -> tuple[Queued, Claim | None, int | None]:
    """:func:`_record` for a plain chunk whose thread goes on, in one statement
    (:mod:`etl_tasks.steps.finish_statement`), then what it leaves to do."""
    f = statement.finish_and_claim(rt, c, record, load_ms)
    if f.stream_id is None:
        return Queued([], running_low=True), None, None
    done = _Done(f.stream_id, f.waiting, f.rows, f.timings, f.chunk_rows)
    wanted = _wanted_rows(rt, done, f.chunk_rows, ceiling)
    if f.waiting or wanted is not None:
        with rt.db.one_statement() as conn:
            if wanted is not None:
                conn.execute(_SET_CHUNK_ROWS, {"stream": f.stream_id, "chunk_rows": wanted})
            if f.waiting:  # no longer: a chunk went through
                conn.execute(_NOT_WAITING, {"migration": c.migration_id})
    ROWS.labels("loaded").inc(record.rows_loaded)
    taken = f.claim
    if f.room and f.ready:  # room for more, or the ready chunk was not free to claim
        queued, more = _queue_next(rt, c.migration_id, taken is None)
        return queued, taken or more, f.stream_id
    return statement.queued(f, rt), taken, f.stream_id


def _largest_chunk(rt: Runtime, c: Claim, weight: float | None) -> int:
    """The largest chunk ``c``'s stream may grow to (:func:`largest_chunk`)."""
    spec = rt.spec(c.migration_id)
    try:  # known already after a load; a chunk finished from its ledger may ask first
        native = rt.native_copy(c.migration_id, c.stream)
    except (BatonError, SQLAlchemyError):  # the source's shape unknown now: the smaller size
        native = False
    return largest_chunk(spec.chunk_rows, spec.chunk_rows_given, native, weight)


def _record(
    rt: Runtime,
    c: Claim,
    record: LedgerRecord,
    load_ms: int | None,
    chain: bool,
    ceiling: int,
) -> tuple[Queued, Claim | None, int | None]:
    """Record the chunk done, its stream's next chunk size at most ``ceiling``; what was
    queued, what was claimed, and the chunk's stream (None when ``c`` no longer holds it)."""
    with rt.db.session() as s:
        leased_at = lease_clock()  # a chained chunk's lease starts at ``now``
        now = rt.db.now(s)
        if _plain(c, record) and s.get_bind().dialect.update_returning:
            done = _done_plain(s, c, record, load_ms, now)
            quarantined = 0
        else:
            done, quarantined = _done_orm(s, c, record, load_ms, now)
        if done is None:
            # A newer claim will find the same ledger row and finish the chunk.
            return Queued([], running_low=True), None, None
        _adapt_rows(rt, s, done, ceiling)
        if done.waiting:  # no longer: a chunk went through
            s.connection().execute(_NOT_WAITING, {"migration": c.migration_id})
        if quarantined:  # the count only grows with new quarantined rows
            _enforce_max_bad_rows(rt, s, c.migration_id, now)
            s.flush()  # a migration failed just now queues nothing
        queued, taken = _queue_in(rt, s, c.migration_id, now, leased_at, chain)
    # Counted once recorded: a chunk is finished once (its claim's token), whoever learns it.
    ROWS.labels("loaded").inc(record.rows_loaded)
    ROWS.labels("quarantined").inc(quarantined)
    return queued, taken, done.stream_id


@dataclass(frozen=True)
class _Done:
    """A chunk recorded done: its stream, whether its migration is marked waiting, and
    what sizes the stream's next chunks (:func:`_adapt_rows`)."""

    stream_id: int
    waiting: bool
    rows: int  # handled by the load (one cut at its deadline handled fewer than extracted)
    timings: dict[str, int]
    chunk_rows: int | None = None  # the stream's chunk size, when read already


def _done_orm(
    s: Session, c: Claim, record: LedgerRecord, load_ms: int | None, now: datetime
) -> tuple[_Done | None, int]:
    """Any chunk's finish through the ORM: its rows set aside, its cut, its row marked
    done. As :func:`_done_plain`'s result (the migration taken as waiting: not read, its
    row holds the whole spec), and how many rows were newly quarantined."""
    chunk = s.get(Chunk, c.chunk_id, with_for_update=ROW_LOCK)
    if chunk is None or chunk.lease_token != c.token:
        return None, 0
    if chunk.keys is not None:  # a key-set chunk: its rows were set aside before
        quarantined = settle_retry(s, chunk, record)
    else:
        quarantined = _record_quarantine(s, chunk, record, now)
        record_deferred(s, chunk, record, now)
    if record.cut is not None:
        split(s, chunk, record.cut, now)
    _mark_done(chunk, record, load_ms, now)
    s.flush()
    rows = min(chunk.rows_in or 0, (chunk.rows_out or 0) + (chunk.rows_quarantined or 0))
    return _Done(chunk.stream_id, True, rows, chunk.step_timings()), quarantined


def _record_quarantine(s: Session, chunk: Chunk, record: LedgerRecord, now: datetime) -> int:
    """Copy the record's quarantined rows, each once (a replay finds them there); return
    how many were new."""
    if not record.quarantine:
        return 0
    known = set(
        s.scalars(
            select(QuarantinedRow.key).where(
                QuarantinedRow.stream_id == chunk.stream_id, QuarantinedRow.chunk_id == chunk.id
            )
        )
    )
    added = 0
    for q in record.quarantine:
        if q.key in known:
            continue
        known.add(q.key)
        added += 1
        s.add(
            QuarantinedRow(
                migration_id=chunk.migration_id,
                stream_id=chunk.stream_id,
                chunk_id=chunk.id,
                key=q.key,
                reason=q.reason,
                row=q.row,
                fencing_token=record.fencing_token,
                created_at=now,
                source_key=q.source_key,
            )
        )
    return added


def _plain(c: Claim, record: LedgerRecord) -> bool:
    """A range chunk loaded whole with no row set aside: the usual chunk, whose finish
    touches nothing but its own row and its stream's size."""
    return c.keys is None and record.cut is None and not record.quarantine and not record.deferred


def _done_plain(
    s: Session, c: Claim, record: LedgerRecord, load_ms: int | None, now: datetime
) -> _Done | None:
    """:func:`_mark_done` for a plain chunk, in one fenced UPDATE instead of the ORM's read
    and flush (which also returns the stream's chunk size, and whether the migration is
    marked waiting); None when ``c`` no longer holds it. The
    timings are the claim's (as every step's commit writes them,
    :func:`~etl_tasks.chunk_lease.timed`)."""
    values: dict[str, Any] = {
        "state": ChunkState.DONE,
        "step": Step.LOAD,
        "finished_at": now,
        "rows_out": record.rows_loaded,
        "rows_quarantined": 0,
        "lease_owner": None,
        "lease_expires_at": None,
        "queued_at": None,
        **(timed(c, load_ms) if load_ms is not None else {}),
    }
    found = (
        s.connection()
        .execute(_DONE, {"chunk": c.chunk_id, "token": c.token, **values})
        .one_or_none()
    )
    if found is None:
        return None
    rows = min(found.rows_in or 0, record.rows_loaded)
    timings = values.get("timings", c.timings)
    return _Done(int(found.stream_id), bool(found.waiting), rows, timings, found.chunk_rows)


def _mark_done(chunk: Chunk, record: LedgerRecord, load_ms: int | None, now: datetime) -> None:
    chunk.state = ChunkState.DONE
    chunk.step = Step.LOAD
    chunk.finished_at = now
    chunk.rows_out = record.rows_loaded
    chunk.rows_quarantined = len(record.quarantine)
    if load_ms is not None:
        chunk.record_timing(Step.LOAD, load_ms)
    chunk.lease_owner = None
    chunk.lease_expires_at = None
    chunk.queued_at = None


def _enforce_max_bad_rows(rt: Runtime, s: Session, migration_id: str, now: datetime) -> None:
    bad = (
        s.scalar(
            select(func.count())
            .select_from(QuarantinedRow)
            .where(QuarantinedRow.migration_id == migration_id, QuarantinedRow.status.is_(None))
        )
        or 0
    )
    limit = rt.spec(migration_id).max_bad_rows
    if bad > limit:
        fail_migration(
            s, migration_id, now, f"{bad} rows quarantined, more than max_bad_rows ({limit})"
        )


def _adapt_rows(rt: Runtime, s: Session, done: _Done, ceiling: int) -> None:
    """Size the stream's next chunks so its slowest step fits the step budget, at most
    ``ceiling`` rows."""
    conn = s.connection()
    current = done.chunk_rows
    if current is None:
        current = conn.scalar(_CHUNK_ROWS, {"stream": done.stream_id})
    wanted = _wanted_rows(rt, done, current, ceiling)
    if wanted is not None:
        conn.execute(_SET_CHUNK_ROWS, {"stream": done.stream_id, "chunk_rows": wanted})


def _wanted_rows(rt: Runtime, done: _Done, current: int | None, ceiling: int) -> int | None:
    """The stream's next chunk size, when not ``current``."""
    if current is None or not done.rows:
        return None
    slowest = max(done.timings.values(), default=0)
    wanted = next_chunk_rows(current, done.rows, slowest, rt.settings.step_budget_s, ceiling)
    return None if wanted == current else wanted
