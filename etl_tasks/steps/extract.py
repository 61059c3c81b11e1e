"""Extract: read one chunk's key range from the source and stage it.

The source reads until the step's deadline and says where it stopped; the rest
of the range becomes a new chunk in the same state-DB transaction.
"""

from __future__ import annotations

from etl_tasks import codec, retries
from etl_tasks.budget import StepClock
from etl_tasks.chunk_lease import NOW, Claim, timed
from etl_tasks.connectors.base import Batch, Native, Source
from etl_tasks.constants import STEPS, step_after
from etl_tasks.metrics import ROWS
from etl_tasks.publisher import publish_step
from etl_tasks.runtime import Runtime
from etl_tasks.splitting import StepPace, commit_split
from etl_tasks.steps.common import elapsed_ms, hand_on, may_chain, run_step
from etl_tasks.steps.ledger_first import finish_from_ledger
from etl_tasks.steps.transform import relabelled_native, relabelling_only

STEP = STEPS["extract"]
NEXT = step_after(STEP.name)


def extract(rt: Runtime, chunk_id: int) -> str:
    return run_step(rt, chunk_id, STEP.name, lambda c: extract_claimed(rt, c))


def extract_claimed(rt: Runtime, c: Claim) -> None:
    if c.extracted and finish_from_ledger(rt, c):
        return  # its load committed already: a new extract could cut it elsewhere
    clock = StepClock(rt.settings.step_budget_s, rt.settings.lease_s)
    source = rt.source(c.migration_id, c.stream)
    if c.keys is not None:
        batch, cut = _read_keys(rt, c, source), None
    else:
        lower, upper = codec.decode_key(c.lower), codec.decode_key(c.upper)
        batch, cut = source.read_range(lower, upper, StepPace(rt, c, clock))
    # A source's refused records travel with the rows (only when there are some: a previous
    # version's transform then reads the same blob as before).
    refused = {"malformed": sorted(batch.malformed.items())} if batch.malformed else {}
    # A chunk the transform would only relabel skips it: staged here as the load reads it.
    rows: codec.Staged | None = None  # the rows as the next step reads them, kept in memory
    then = step_after(NEXT.name)  # the load, unless the chunk needs the transform
    if isinstance(batch.native, Native):  # a pass-through chunk: its bytes, as they are
        kind, blob = relabelled_native(rt, c, batch.native)
    else:
        if may_chain(rt) or rt.value_path(c.migration_id, c.stream).mapper.identity:
            blob, rows = codec.encode_rows_kept(batch.columns, batch.rows, **refused)
        else:
            blob = codec.encode_rows(batch.columns, batch.rows, **refused)
        relabelled = relabelling_only(rt, c, blob, rows)
        if relabelled is None:
            then, kind = NEXT, STEP.output_stage
        else:
            kind, (blob, rows) = NEXT.output_stage, relabelled
    skipped = then is not NEXT
    rt.staging.put(
        c.chunk_id, c.token, kind, blob, rows if may_chain(rt) else None, held_only=may_chain(rt)
    )
    outcome = {
        "stage_token": c.token,
        "rows_in": len(batch),
        "attempts": 0,
        **timed(c, elapsed_ms(clock.started), skipped=(NEXT.name,) if skipped else ()),
    }
    cut_key = codec.encode_key(cut)
    if cut_key:  # the rest of the range is a new chunk: this one goes on by message
        rt.staging.write_held()
        done = commit_split(rt, c, cut_key, step=then.name, queued_at=NOW, **outcome)
        if done:
            publish_step(rt.publisher, then.name, c.chunk_id)
    else:
        done = hand_on(rt, c, then.name, **outcome)
    if done:
        ROWS.labels("extracted").inc(len(batch))
        if skipped:
            ROWS.labels("transformed").inc(len(batch))


def _read_keys(rt: Runtime, c: Claim, source: Source) -> Batch:
    """A key-set chunk's rows; the keys the source no longer has are marked gone."""
    wanted = [codec.decode_key(k) or () for k in c.keys or []]
    width = len(wanted[0]) if wanted else 0
    # A replay's chunk of a file stream carries the bound its file was planned with.
    bound = codec.decode_key(c.upper)
    batch = source.read_keys(wanted, [bound] if bound is not None and len(bound) > width else [])
    found = {codec.quarantine_key(row[:width]) for row in batch.rows}
    gone = [k for k in retries.asked(c.keys or []) if k not in found]
    if gone:
        retries.mark_gone(rt, c, gone)
    return batch
