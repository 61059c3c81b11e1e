"""Load: commit the chunk's rows and its ledger record in one target transaction."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from etl_tasks import codec
from etl_tasks.budget import StepClock, next_chunk_rows
from etl_tasks.chunk_lease import Claim, fail_migration
from etl_tasks.connectors.ledger import LedgerRecord, QuarantineEntry
from etl_tasks.connectors.sql_target import LoadRequest
from etl_tasks.errors import StagingMissing
from etl_tasks.publisher import publish_plan
from etl_tasks.runtime import Runtime
from etl_tasks.splitting import renew, split
from etl_tasks.state.db import ROW_LOCK
from etl_tasks.state.enums import ChunkState
from etl_tasks.state.models import Chunk, Migration, QuarantinedRow, Stream
from etl_tasks.steps import transform as transform_step
from etl_tasks.steps.common import elapsed_ms, run_step


def load(rt: Runtime, chunk_id: int) -> str:
    return run_step(rt, chunk_id, "load", lambda c: _load(rt, c))


def _load(rt: Runtime, c: Claim) -> None:
    clock = StepClock(rt.settings.step_budget_s, rt.settings.lease_s)
    if c.stage_token is None:
        raise StagingMissing()
    blob = rt.staging.get(c.chunk_id, c.stage_token, transform_step.STAGE)
    if blob is None:
        raise StagingMissing()
    columns, rows, extra = codec.decode_rows(blob)
    request = LoadRequest(
        migration_id=c.migration_id,
        stream=c.stream,
        chunk_id=c.chunk_id,
        token=c.token,
        columns=columns,
        rows=rows,
        quarantine=[(QuarantineEntry(k, r, d), pos) for k, r, d, pos in extra["quarantine"]],
        key_range=(codec.decode_key(c.lower), codec.decode_key(c.upper)),
        fail_on_bad=rt.spec(c.migration_id).on_bad_row == "fail",
        positions=extra["positions"],
        source_keys=extra["source_keys"],
        expired=clock.expired,
        between_batches=lambda: renew(rt, c) if clock.renewal_due() else None,
    )
    record = rt.target(c.migration_id, c.stream).load(request)
    finish(rt, c, record, elapsed_ms(clock.started))
    rt.staging.delete(c.chunk_id, c.stage_token, transform_step.STAGE)
    publish_plan(rt.publisher, c.migration_id)


def finish(rt: Runtime, c: Claim, record: LedgerRecord, load_ms: int) -> None:
    """Record the committed chunk in the state DB; counts come from the ledger, not increments."""
    with rt.db.session() as s:
        now = rt.db.now(s)
        chunk = s.get(Chunk, c.chunk_id, with_for_update=ROW_LOCK)
        if chunk is None or chunk.lease_token != c.token:
            return  # a newer claim will find the same ledger row and finish the chunk
        known = set(
            s.scalars(
                select(QuarantinedRow.key).where(
                    QuarantinedRow.stream_id == chunk.stream_id, QuarantinedRow.chunk_id == chunk.id
                )
            )
        )
        for q in record.quarantine:
            if q.key not in known:
                known.add(q.key)
                s.add(
                    QuarantinedRow(
                        migration_id=c.migration_id,
                        stream_id=chunk.stream_id,
                        chunk_id=chunk.id,
                        key=q.key,
                        reason=q.reason,
                        row=q.row,
                        fencing_token=record.fencing_token,
                        created_at=now,
                    )
                )
        if record.cut is not None:
            split(s, chunk, record.cut, now)
        chunk.state = ChunkState.DONE
        chunk.finished_at = now
        chunk.rows_out = record.rows_loaded
        chunk.rows_quarantined = len(record.quarantine)
        chunk.load_ms = load_ms
        chunk.lease_owner = None
        chunk.lease_expires_at = None
        chunk.queued_at = None
        _adapt_chunk_rows(rt, s, chunk)
        mig = s.get(Migration, c.migration_id)
        if mig is not None and mig.waiting_reason:
            mig.waiting_reason = None
        s.flush()
        bad = (
            s.scalar(
                select(func.count())
                .select_from(QuarantinedRow)
                .where(QuarantinedRow.migration_id == c.migration_id)
            )
            or 0
        )
        limit = rt.spec(c.migration_id).max_bad_rows
        if bad > limit:
            fail_migration(
                s, c.migration_id, now, f"{bad} rows quarantined, more than max_bad_rows ({limit})"
            )


def _adapt_chunk_rows(rt: Runtime, s: Session, chunk: Chunk) -> None:
    """Size the stream's next chunks so its slowest step fits the step budget."""
    stream = s.get(Stream, chunk.stream_id)
    slowest = max(chunk.extract_ms or 0, chunk.transform_ms or 0, chunk.load_ms or 0)
    # A load cut at its deadline handled fewer rows than were extracted: count those.
    rows = min(chunk.rows_in or 0, (chunk.rows_out or 0) + (chunk.rows_quarantined or 0))
    if stream is None or not rows:
        return
    ceiling = rt.spec(chunk.migration_id).chunk_rows
    stream.chunk_rows = next_chunk_rows(
        stream.chunk_rows, rows, slowest, rt.settings.step_budget_s, ceiling
    )
