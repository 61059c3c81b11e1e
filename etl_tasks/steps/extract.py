"""Extract: read one chunk's key range from the source and stage it."""

from __future__ import annotations

import time

from sqlalchemy import exc as sa_exc

from etl_tasks import codec
from etl_tasks.chunk_lease import NOW, Claim, commit
from etl_tasks.connectors.sql_target import error_reason, is_transient_error
from etl_tasks.errors import PermanentError, TransientError
from etl_tasks.publisher import publish_step
from etl_tasks.runtime import Runtime
from etl_tasks.steps.common import elapsed_ms, run_step

STAGE = "extracted"


def extract(rt: Runtime, chunk_id: int) -> str:
    return run_step(rt, chunk_id, "extract", lambda c: _extract(rt, c))


def _extract(rt: Runtime, c: Claim) -> None:
    started = time.monotonic()
    binding = rt.binding(c.migration_id, c.stream)
    engine = rt.engines.get(rt.source_url(c.migration_id))
    try:
        with engine.connect() as conn:
            rows = binding.source.read_range(
                conn, codec.decode_key(c.lower), codec.decode_key(c.upper)
            )
    except sa_exc.SQLAlchemyError as exc:
        if is_transient_error(exc):
            raise TransientError(f"source unavailable: {error_reason(exc)}") from exc
        raise PermanentError(f"source refused the read: {error_reason(exc)}") from exc
    rt.staging.put(c.chunk_id, c.token, STAGE, codec.encode_rows(binding.source.columns, rows))
    if commit(
        rt,
        c,
        step="transform",
        stage_token=c.token,
        rows_in=len(rows),
        attempts=0,
        extract_ms=elapsed_ms(started),
        queued_at=NOW,
    ):
        publish_step(rt.publisher, "transform", c.chunk_id)
