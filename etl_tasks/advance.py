"""Moving a migration forward: prepare streams, plan chunks, publish them, settle states.

``advance`` is idempotent and cheap when there is nothing to do. It runs in
the plan task (sent by the API at submit and by every finished load) and in
the sweeper, so a lost message only costs one sweep interval.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import exists, func, select
from sqlalchemy.orm import Session

from etl_tasks import planning
from etl_tasks.chunk_lease import fail_migration
from etl_tasks.constants import FIRST_STEP
from etl_tasks.errors import PermanentError, TransientError
from etl_tasks.outbox import record_finish
from etl_tasks.plan_requests import plan_started
from etl_tasks.publisher import publish_step
from etl_tasks.ready_chunks import queue_ready
from etl_tasks.runtime import Runtime
from etl_tasks.state.db import ROW_LOCK
from etl_tasks.state.enums import ChunkState, MigrationState, StreamState
from etl_tasks.state.models import Chunk, Event, Migration, Stream, Verification
from etl_tasks.stream_finish import finish_streams
from etl_tasks.verification.progress import advance_verifications
from etl_tasks.verification.requests import ACTIVE

log = logging.getLogger(__name__)


def advance(rt: Runtime, migration_id: str) -> None:
    """Do whatever the migration (and any verification of it) needs next; safe to call any
    time, from anywhere."""
    plan_started(rt, migration_id)  # before any read: see etl_tasks.plan_requests
    verifying = True
    for _ in range(3):  # again when a stream finished: the streams after it may start now
        snap = _snapshot(rt, migration_id)
        verifying = snap.verifying or snap.state == MigrationState.SUCCEEDED
        if not _advance_once(rt, migration_id, snap):
            break
    if verifying:  # plans "verify": true once the migration succeeded
        advance_verifications(rt, migration_id)


@dataclass(frozen=True)
class _Snapshot:
    """What one read tells of a migration: enough to skip every part of an advance that
    has nothing to do (most advances, while chunks flow, only plan and publish)."""

    state: str | None  # the migration's; None: it does not exist
    streams: list[Any]  # rows of (id, state, rows_estimate, fully_planned)
    verifying: bool  # a verification of it is pending or running

    def any_stream(self, test: Callable[[Any], bool]) -> bool:
        return any(test(st) for st in self.streams)


def _snapshot(rt: Runtime, migration_id: str) -> _Snapshot:
    with rt.db.reading() as s:
        state = s.scalar(select(Migration.state).where(Migration.id == migration_id))
        streams = list(
            s.execute(
                select(Stream.id, Stream.state, Stream.rows_estimate, Stream.fully_planned)
                .where(Stream.migration_id == migration_id)
                .order_by(Stream.position)
            )
        )
        verifying = bool(
            s.scalar(
                select(
                    exists().where(
                        Verification.migration_id == migration_id,
                        Verification.state.in_(ACTIVE),
                    )
                )
            )
        )
    return _Snapshot(state, streams, verifying)


def _advance_once(rt: Runtime, migration_id: str, snap: _Snapshot) -> bool:
    if snap.state != MigrationState.RUNNING and not _start(rt, migration_id):
        return False
    if not _guarded(rt, migration_id, lambda: _prepare_and_plan(rt, migration_id, snap)):
        return False
    finished: set[int] = set()

    def finish() -> None:
        finished.update(finish_streams(rt, migration_id))

    may_finish = snap.any_stream(lambda st: st.state == StreamState.RUNNING and st.fully_planned)
    if may_finish and not _guarded(rt, migration_id, finish):
        return False
    publish_ready(rt, migration_id)
    return settle(rt, migration_id, finished)


def _prepare_and_plan(rt: Runtime, migration_id: str, snap: _Snapshot) -> None:
    """Estimate, prepare and plan, each only when the snapshot shows it has work."""
    live = (StreamState.PENDING, StreamState.RUNNING)
    if snap.any_stream(lambda st: st.rows_estimate is None and st.state in live):
        _estimate_streams(rt, migration_id)
    to_plan = [
        st.id for st in snap.streams if st.state == StreamState.RUNNING and not st.fully_planned
    ]
    if snap.any_stream(lambda st: st.state == StreamState.PENDING):
        _prepare_ready_streams(rt, migration_id)
        to_plan = _streams_to_plan(rt, migration_id)  # with the streams that just started
    for stream_id in to_plan:
        planning.plan_more(rt, migration_id, stream_id)


def _guarded(rt: Runtime, migration_id: str, work: Callable[[], object]) -> bool:
    """Run ``work``: a transient error makes the migration wait, a permanent one fails it
    (and returns False)."""
    try:
        work()
    except TransientError as exc:
        _set_waiting(rt, migration_id, str(exc))
    except PermanentError as exc:
        with rt.db.session() as s:
            fail_migration(s, migration_id, rt.db.now(s), str(exc))
        return False
    return True


def _start(rt: Runtime, migration_id: str) -> bool:
    with rt.db.session() as s:
        mig = s.get(Migration, migration_id)
        if mig is None:
            return False
        if mig.state == MigrationState.PENDING:
            now = rt.db.now(s)
            mig.state = MigrationState.RUNNING
            mig.started_at = now
            mig.updated_at = now
        return mig.state == MigrationState.RUNNING


UNKNOWN_ESTIMATE = -1  # the source cannot tell: not asked again


def _estimate_streams(rt: Runtime, migration_id: str) -> None:
    """Ask the source how many rows each stream has, once, when the migration starts: the
    progress shows percent and ETA from the first chunks, long before planning ends."""
    with rt.db.session() as s:
        todo = list(
            s.execute(
                select(Stream.id, Stream.name).where(
                    Stream.migration_id == migration_id,
                    Stream.rows_estimate.is_(None),
                    Stream.state.in_([StreamState.PENDING, StreamState.RUNNING]),
                )
            )
        )
    for stream_id, name in todo:
        try:
            estimate = rt.source(migration_id, name).estimate_rows()
        except TransientError:
            continue  # the source is away: ask again on the next pass
        except PermanentError:
            estimate = None  # planning reports the cause
        with rt.db.session() as s:
            row = s.get(Stream, stream_id)
            if row is not None:
                row.rows_estimate = UNKNOWN_ESTIMATE if estimate is None else max(estimate, 0)


def _set_waiting(rt: Runtime, migration_id: str, reason: str) -> None:
    with rt.db.session() as s:
        mig = s.get(Migration, migration_id)
        if mig is not None:
            mig.waiting_reason = reason[:500]


def _prepare_ready_streams(rt: Runtime, migration_id: str) -> None:
    """Prepare each stream whose predecessors are done: ledger, and its table if asked."""
    with rt.db.session() as s:
        streams = list(
            s.scalars(
                select(Stream)
                .where(Stream.migration_id == migration_id)
                .order_by(Stream.position)  # in the spec's order, whatever index is used
            )
        )
    done = {st.name for st in streams if st.state == StreamState.DONE}
    spec = rt.spec(migration_id)
    for st in streams:
        if st.state != StreamState.PENDING or not set(spec.stream(st.name).after) <= done:
            continue
        prepare(rt, migration_id, st.name)
        with rt.db.session() as s:
            row = s.get(Stream, st.id)
            if row is not None and row.state == StreamState.PENDING:
                row.state = StreamState.RUNNING
                row.prepared = True
                row.started_at = rt.db.now(s)


def prepare(rt: Runtime, migration_id: str, stream: str) -> None:
    """What the stream's target needs before its first chunk (the ledger; the table with
    ``create_target``): once, under the target's own lock."""
    rt.target(migration_id, stream).prepare()


def _streams_to_plan(rt: Runtime, migration_id: str) -> list[int]:
    with rt.db.session() as s:
        return list(
            s.scalars(
                select(Stream.id)
                .where(
                    Stream.migration_id == migration_id,
                    Stream.state == StreamState.RUNNING,
                    Stream.fully_planned.is_(False),
                )
                .order_by(Stream.position)
            )
        )


def publish_ready(rt: Runtime, migration_id: str) -> int:
    """Publish pending chunks, keeping at most ``max_queued_chunks`` queued or running."""
    with rt.db.session() as s:
        ids = queue_ready(s.connection(), rt.settings, migration_id, rt.db.now(s)).ids
    for chunk_id in ids:
        publish_step(rt.publisher, FIRST_STEP.name, chunk_id)
    return len(ids)


def settle(rt: Runtime, migration_id: str, ready: set[int]) -> bool:
    """Finish streams whose chunks are all done, and the migration when every stream is.

    Only the streams in ``ready`` (their target's part done, see
    :mod:`etl_tasks.stream_finish`) may be marked done. Returns True when a stream
    finished and others still wait to start.
    """
    if not _may_settle(rt, migration_id):
        return False
    finished = False
    newly_done = False
    with rt.db.session() as s:
        mig = s.get(Migration, migration_id, with_for_update=ROW_LOCK)
        if mig is None or mig.state != MigrationState.RUNNING:
            return False
        now = rt.db.now(s)
        streams = list(s.scalars(select(Stream).where(Stream.migration_id == migration_id)))
        for st in streams:
            if st.state == StreamState.RUNNING and st.fully_planned:
                _settle_stream(s, st, now, st.id in ready)
                newly_done = newly_done or st.state == StreamState.DONE
        if any(st.state == StreamState.FAILED for st in streams):
            fail_migration(s, migration_id, now, mig.error or "a stream failed")
        elif all(st.state == StreamState.DONE for st in streams):
            mig.state = MigrationState.SUCCEEDED
            mig.finished_at = now
            mig.updated_at = now
            mig.waiting_reason = None
            s.add(
                Event(
                    migration_id=migration_id,
                    kind="migration_succeeded",
                    message="all streams done",
                    at=now,
                )
            )
            record_finish(s, mig, now)
            finished = True
    if finished:
        log.info("migration succeeded", extra={"migration_id": migration_id})
        rt.release(migration_id)
        return False
    return newly_done and any(st.state == StreamState.PENDING for st in streams)


def _may_settle(rt: Runtime, migration_id: str) -> bool:
    """Whether :func:`settle` could change anything: a stream fully planned (it may have
    finished), a failed one, or every one done. Most chunks of a migration end while
    their stream is still being planned; for them this read, which takes no lock and
    writes nothing, spares the state DB a row lock on the migration and a commit. A
    stale answer only defers the settling to the next pass (every load and every sweep
    advances the migration)."""
    with rt.db.reading() as s:
        streams = list(
            s.execute(
                select(Stream.state, Stream.fully_planned).where(
                    Stream.migration_id == migration_id
                )
            )
        )
    return (
        any(state == StreamState.RUNNING and planned for state, planned in streams)
        or any(state == StreamState.FAILED for state, _ in streams)
        or all(state == StreamState.DONE for state, _ in streams)
    )


def _settle_stream(s: Session, st: Stream, now: object, ready: bool) -> None:
    counts = dict(
        s.execute(
            select(Chunk.state, func.count()).where(Chunk.stream_id == st.id).group_by(Chunk.state)
        ).all()
    )
    if counts.get(ChunkState.FAILED):
        st.state = StreamState.FAILED
    elif ready and not counts.get(ChunkState.PENDING) and not counts.get(ChunkState.RUNNING):
        st.state = StreamState.DONE
        st.finished_at = now  # type: ignore[assignment]
