"""Load: commit the chunk's rows and its ledger record in one target transaction."""

from __future__ import annotations

from etl_tasks import codec
from etl_tasks.budget import StepClock
from etl_tasks.chunk_lease import Claim
from etl_tasks.connectors.base import QuarantineEntry
from etl_tasks.connectors.sql.target import LoadRequest
from etl_tasks.errors import StagingMissing
from etl_tasks.publisher import publish_plan
from etl_tasks.runtime import Runtime
from etl_tasks.splitting import renew
from etl_tasks.steps import transform as transform_step
from etl_tasks.steps.common import elapsed_ms, run_step
from etl_tasks.steps.finish import finish


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
        # A load that stalled past its lease must not commit: the chunk may have gone back
        # to extract meanwhile (its staged rows lost, no ledger row yet) and be cut anew.
        before_commit=lambda: renew(rt, c),
    )
    record = rt.target(c.migration_id, c.stream).load(request)
    finish(rt, c, record, elapsed_ms(clock.started))
    rt.staging.delete(c.chunk_id, c.stage_token, transform_step.STAGE)
    publish_plan(rt.publisher, c.migration_id)
