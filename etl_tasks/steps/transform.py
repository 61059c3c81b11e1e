"""Transform: map staged source rows to target rows; set aside the rows that fail."""

from __future__ import annotations

import time
from typing import Any

from etl_tasks import codec
from etl_tasks.chunk_lease import NOW, Claim, commit
from etl_tasks.connectors.ledger import QuarantineEntry
from etl_tasks.errors import BadRowError, PermanentError, StagingMissing
from etl_tasks.publisher import publish_step
from etl_tasks.runtime import Runtime
from etl_tasks.steps import extract as extract_step
from etl_tasks.steps.common import elapsed_ms, run_step
from etl_tasks.transforms import RowMapper

STAGE = "transformed"


def transform(rt: Runtime, chunk_id: int) -> str:
    return run_step(rt, chunk_id, "transform", lambda c: _transform(rt, c))


def _transform(rt: Runtime, c: Claim) -> None:
    started = time.monotonic()
    if c.stage_token is None:
        raise StagingMissing()
    blob = rt.staging.get(c.chunk_id, c.stage_token, extract_step.STAGE)
    if blob is None:
        raise StagingMissing()
    columns, rows, _ = codec.decode_rows(blob)
    binding = rt.binding(c.migration_id, c.stream)
    good, bad = map_rows(binding.mapper, columns, rows, binding.key_width)
    if bad and rt.spec(c.migration_id).on_bad_row == "fail":
        raise PermanentError(f"bad row {bad[0].key}: {bad[0].reason}")
    quarantine = [[q.key, q.reason, q.row] for q in bad]
    out = codec.encode_rows(binding.mapper.target_columns, good, quarantine=quarantine)
    rt.staging.put(c.chunk_id, c.token, STAGE, out)
    if commit(
        rt,
        c,
        step="load",
        stage_token=c.token,
        attempts=0,
        transform_ms=elapsed_ms(started),
        queued_at=NOW,
    ):
        rt.staging.delete(c.chunk_id, c.stage_token, extract_step.STAGE)
        publish_step(rt.publisher, "load", c.chunk_id)


def map_rows(
    mapper: RowMapper, columns: list[str], rows: list[tuple[Any, ...]], key_width: int
) -> tuple[list[tuple[Any, ...]], list[QuarantineEntry]]:
    """Target rows for the rows that map, quarantine entries for those that do not."""
    good: list[tuple[Any, ...]] = []
    bad: list[QuarantineEntry] = []
    map_row = mapper.map_row
    for row in rows:
        try:
            good.append(map_row(row))
        except BadRowError as exc:
            key = codec.dumps(list(row[:key_width]))
            record = {c: codec.encode_value(v) for c, v in zip(columns, row, strict=True)}
            bad.append(QuarantineEntry(key, str(exc), record))
    return good, bad
