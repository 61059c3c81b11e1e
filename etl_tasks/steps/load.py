"""Load: write the chunk's rows and its ledger record together, once, into any target.

The loop is the same for every target (:class:`~etl_tasks.connectors.base.Target`):
sub-batches of ``SUB_BATCH_ROWS`` rows (or of the target's own ``batch_rows``), a
stop at the step's deadline (the rest of the chunk becomes a new chunk, cut at a
key the source returned; a stream whose key may repeat is never cut), and quarantine by
bisection: a batch the target refuses for a row it does not name is halved until
the row is alone. A target only writes a batch whole or not at all, and commits the
chunk with its ledger record.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from etl_tasks import codec
from etl_tasks import native_stage as staged_native
from etl_tasks.budget import SUB_BATCH_ROWS, StepClock, row_bytes
from etl_tasks.chunk_lease import Claim
from etl_tasks.connectors.base import (
    Batch,
    ChunkRef,
    ChunkWrite,
    LedgerRecord,
    Native,
    NativePart,
    Pace,
    QuarantineEntry,
    Refused,
)
from etl_tasks.constants import STEPS, native_stage
from etl_tasks.errors import BadRowError, PermanentError, StagingMissing
from etl_tasks.runtime import Runtime
from etl_tasks.splitting import StepPace, confirm_lease
from etl_tasks.steps.common import (
    elapsed_ms,
    give_back_slot,
    go_on_with,
    may_take_next_chunk,
    run_step,
)
from etl_tasks.steps.finish import finish

STEP = STEPS["load"]


def load(rt: Runtime, chunk_id: int) -> str:
    return run_step(rt, chunk_id, STEP.name, lambda c: load_claimed(rt, c))


def load_claimed(rt: Runtime, c: Claim) -> None:
    clock = StepClock(rt.settings.step_budget_s, rt.settings.lease_s)
    if c.stage_token is None:
        raise StagingMissing()
    kind, blob = STEP.input_stage, None
    if rt.native_copy(c.migration_id, c.stream):  # a pass-through chunk: COPY text
        kind = native_stage(STEP.input_stage)
        blob = rt.staging.get(c.chunk_id, c.stage_token, kind)
    if blob is None:
        kind = STEP.input_stage
        blob = rt.staging.get(c.chunk_id, c.stage_token, kind)
    if blob is None:
        raise StagingMissing()
    if kind == STEP.input_stage:  # the transform's rows: from memory when it ran just now
        held = rt.staging.held_rows(c.chunk_id, c.stage_token, kind)
        columns, rows, extra = held or codec.decode_rows(blob)
        batch = Batch(columns, rows, extra["source_keys"], extra["positions"])
    else:
        columns, native = staged_native.decode(blob)
        batch = Batch(columns, [], native=native)
        extra = {"quarantine": []}  # the transform passed every row through
    bounds = (codec.decode_key(c.lower), codec.decode_key(c.upper))
    deadline = clock.started + clock.budget_s
    chunk = ChunkRef(
        c.migration_id, c.stream, c.chunk_id, c.token, None if c.keys else bounds, deadline
    )
    retry = c.keys is not None  # a key-set chunk: rows read again after a foreign key refused them
    # Only the source can tell where a run of equal keys ends (to MariaDB's default
    # collation 'm', 'M' and 'm ' are one key): a key that may repeat is never cut here.
    whole = retry or not rt.binding(c.migration_id, c.stream).unique_key
    pace = StepPace(rt, c, clock)
    target = rt.target(c.migration_id, c.stream)
    job = Job(
        batch=batch,
        # Set aside by the transform, by their source key.
        earlier=[(QuarantineEntry(k, r, d, k), pos) for k, r, d, pos in extra["quarantine"]],
        key=None if retry else target.key,
        fail_on_bad=rt.spec(c.migration_id).on_bad_row == "fail",
        # A key set is never cut (its rows are not a range), and is small enough not to be.
        pace=WithoutDeadline(pace) if whole else pace,
        defer=not retry,
        # A load that stalled past its lease must not commit: the chunk may have gone back
        # to extract meanwhile (its staged rows lost, no ledger row yet) and be cut anew.
        before_commit=lambda: confirm_lease(rt, c),
        parse=getattr(target, "parse_native", None),
    )
    with target.begin_chunk(chunk) as tx:
        job.batch_rows = lambda: _batch_rows(tx, target)
        record = tx.committed or write_chunk(tx, c.token, job)
    load_ms = elapsed_ms(clock.started)  # the load's work: up to its target commit
    give_back_slot(rt, c)
    taken = finish(rt, c, record, load_ms, chain=may_take_next_chunk(rt), weight=row_bytes(batch))
    rt.staging.delete(c.chunk_id, c.stage_token, kind)
    if taken is not None:
        go_on_with(taken)


@dataclass
class Job:
    """What one load writes, and the rules it writes by."""

    batch: Batch  # the transformed rows, with their source keys and extract positions
    earlier: list[tuple[QuarantineEntry, int]]  # set aside by the transform: (entry, position)
    # The target's key columns, by which a refused row is quarantined; None: by its source
    # key (a key-set chunk's rows, matched with the rows it reads again).
    key: list[str] | None
    fail_on_bad: bool  # on_bad_row "fail": one refused row fails the chunk
    pace: Pace
    before_commit: Callable[[], None] = lambda: None
    defer: bool = True  # a row refused for a foreign key waits for the end of its stream
    # Rows per sub-batch, asked before each one: a target may lower it while it loads.
    batch_rows: Callable[[], int] = lambda: SUB_BATCH_ROWS
    # A pass-through part's rows as values, from its position in the chunk: the target's
    # ``parse_native``, to bisect a part it refused.
    parse: Callable[[Batch, int], Batch] | None = None


def _batch_rows(tx: object, target: object) -> int:
    """The chunk write's own sub-batch size (an HTTP API's requests, cut as a load of the
    chunk cut them before), else the target's, else the step's."""
    for owner in (tx, target):
        rows = getattr(owner, "batch_rows", None)
        if isinstance(rows, int):
            return max(1, rows)
    return SUB_BATCH_ROWS


@dataclass
class WithoutDeadline:
    """A pace that renews the lease but never stops the step."""

    pace: Pace

    def expired(self, ahead_s: float = 0.0) -> bool:
        return False

    def tick(self) -> None:
        self.pace.tick()


def write_chunk(tx: ChunkWrite, token: int, job: Job) -> LedgerRecord:
    """Write sub-batch by sub-batch until done or the deadline; commit with the ledger record.

    A cut falls between two source keys, so the job of a stream whose key may repeat
    comes with a pace that never expires (only the source knows where a run of equal
    keys ends): :func:`_load` decides which."""
    batch, pace = job.batch, job.pace
    bad: list[Refused] = []
    written = 0
    native = _pass_through(batch)
    parts = [] if native is None else native.parts
    per_row_s = 0.0  # a pass-through write's time per row, once one was timed
    last: tuple[Any, int] = (None, -1)  # the last written row's source key and position
    while written < len(batch):
        began = time.monotonic()
        if native is None:
            part = batch.take(written, written + job.batch_rows())
            refused, handled = write_bisecting(tx, part, stop=lambda: pace.expired(0.0))
            size = len(part)
            if handled:
                last = (part.keys[handled - 1], part.positions[handled - 1])
        else:
            group = _next_parts(parts, per_row_s, pace)
            parts = parts[len(group) :]
            refused, handled, size, last = _write_native(tx, job, group, written)
            per_row_s = (time.monotonic() - began) / size
        bad += rescue(tx, batch.columns, refused)
        written += handled
        final = [r for r in bad if not _deferred(job, r)]
        if final and job.fail_on_bad:
            raise PermanentError(f"the target refused a row: {final[0].reason}")
        if written < len(batch) and (handled < size or pace.expired(time.monotonic() - began)):
            break
        pace.tick()
    cut = None
    kept = job.earlier
    if written < len(batch):  # stopped at the deadline: the rest becomes a new chunk
        cut = last[0]
        kept = [(q, pos) for q, pos in job.earlier if pos <= last[1]]
    quarantine = [q for q, _ in kept]
    quarantine += [_entry(batch.columns, job.key, r) for r in bad if not _deferred(job, r)]
    deferred = [_entry(batch.columns, None, r) for r in bad if _deferred(job, r)]
    record = LedgerRecord(token, written - len(bad), quarantine, cut, deferred)
    job.before_commit()
    tx.commit(record)
    return record


def _pass_through(batch: Batch) -> Native | None:
    """The chunk's pass-through payload, if it travels as one (no rows then)."""
    return batch.native if isinstance(batch.native, Native) and not batch.rows else None


def _next_parts(parts: list[NativePart], per_row_s: float, pace: Pace) -> list[NativePart]:
    """The pass-through parts to write at once: the first alone (to time it), then as many
    as the pace says would still fit, so a chunk is a few COPYs, not one per 1,000 rows."""
    group = parts[:1]
    rows = group[0].rows
    while per_row_s and len(group) < len(parts):
        more = parts[len(group)]
        if pace.expired(per_row_s * (rows + more.rows)):
            break
        group.append(more)
        rows += more.rows
    return group


def _write_native(
    tx: ChunkWrite, job: Job, parts: list[NativePart], written: int
) -> tuple[list[Refused], int, int, tuple[Any, int]]:
    """Parts of a pass-through chunk, as they are; refused, their rows parsed and bisected.
    Returns the rows refused, how many were handled, how many were given, and the last
    handled row's source key and position (a pass-through chunk's rows keep their extract
    order)."""
    native = _pass_through(job.batch)
    assert native is not None
    one = Batch(job.batch.columns, [], native=Native(native.format, parts, native.meta))
    size = sum(p.rows for p in parts)
    try:
        tx.write(one)
        return [], size, size, (parts[-1].last_key, written + size - 1)
    except BadRowError:
        if job.parse is None:
            raise PermanentError("the target cannot parse the rows it refused") from None
    rows = job.parse(one, written)
    refused, handled = write_bisecting(tx, rows, stop=lambda: job.pace.expired(0.0))
    return refused, handled, len(rows), (rows.keys[handled - 1], rows.positions[handled - 1])


def write_bisecting(
    tx: ChunkWrite, batch: Batch, stop: Callable[[], bool]
) -> tuple[list[Refused], int]:
    """Write ``batch``; return the rows the target refused (each with its reason) and how
    many leading rows were handled: all, unless ``stop()`` said so during a bisection.

    Halves are handled in order, so what is done is always a prefix; ``stop`` is asked
    only after a half is done, so every call handles at least one row.
    """
    if not len(batch):
        return [], 0
    try:
        return tx.write(batch), len(batch)
    except BadRowError as exc:
        if len(batch) == 1:
            key = batch.keys[0] if batch.keys else None
            return [Refused(batch.rows[0], exc.reason, key, exc.retry_later)], 1
    first, second = batch.split()
    bad, done = write_bisecting(tx, first, stop)
    if done < len(first) or stop():
        return bad, done
    more, done = write_bisecting(tx, second, stop)
    return bad + more, len(first) + done


def rescue(tx: ChunkWrite, columns: list[str], refused: list[Refused]) -> list[Refused]:
    """Write again, one by one, the rows refused for a reference to a row not there yet:
    the row they point at may have been written since (later in the chunk, or in the
    other half of a bisection). Passes alternate between the two orders, so a chain of
    references in either direction loads in two; they stop when one writes nothing.
    Returns the rows still refused."""
    pending = [r for r in refused if r.retry_later]
    final = [r for r in refused if not r.retry_later]
    backwards = True
    while pending:
        still: list[Refused] = []
        for r in reversed(pending) if backwards else pending:
            try:
                tx.write(Batch(columns, [r.row], [r.source_key]))
            except BadRowError as exc:
                still.append(Refused(r.row, exc.reason, r.source_key, exc.retry_later))
        if len(still) == len(pending):
            break
        pending = still[::-1] if backwards else still
        backwards = not backwards
    return final + pending


def _deferred(job: Job, refused: Refused) -> bool:
    return job.defer and refused.retry_later and refused.source_key is not None


def _entry(columns: list[str], key: list[str] | None, refused: Refused) -> QuarantineEntry:
    """The refused row as quarantined: by its target key, or (``key`` None) its source key."""
    by_name = dict(zip(columns, refused.row, strict=True))
    if key is None:
        name = codec.quarantine_key(codec.decode_key(refused.source_key) or ())
    else:
        name = codec.dumps([by_name[k] for k in key])
    source = None
    if refused.source_key is not None:
        source = codec.quarantine_key(codec.decode_key(refused.source_key) or ())
    return QuarantineEntry(
        name, refused.reason, {c: codec.encode_value(v) for c, v in by_name.items()}, source
    )
