"""Extract: read one chunk's key range from the source and stage it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine
from sqlalchemy import exc as sa_exc

from etl_tasks import codec
from etl_tasks.budget import SUB_BATCH_ROWS, StepClock
from etl_tasks.chunk_lease import NOW, Claim, commit
from etl_tasks.connectors.sql.errors import error_reason, is_transient_error, transient
from etl_tasks.connectors.sql.queries import SqlSource
from etl_tasks.errors import PermanentError
from etl_tasks.publisher import publish_step
from etl_tasks.runtime import Runtime
from etl_tasks.splitting import commit_split, renew
from etl_tasks.steps.common import elapsed_ms, run_step
from etl_tasks.steps.ledger_first import finish_from_ledger

STAGE = "extracted"


def extract(rt: Runtime, chunk_id: int) -> str:
    return run_step(rt, chunk_id, "extract", lambda c: _extract(rt, c))


def _extract(rt: Runtime, c: Claim) -> None:
    if c.extracted and finish_from_ledger(rt, c):
        return  # its load committed already: a new extract could cut it elsewhere
    clock = StepClock(rt.settings.step_budget_s, rt.settings.lease_s)
    binding = rt.binding(c.migration_id, c.stream)
    engine = rt.source_reader(c.migration_id)

    def keep_lease() -> None:
        if clock.renewal_due():  # a slow source must not lose the chunk to another worker
            renew(rt, c)

    try:
        rows, cut = _read(engine, binding.source, c, clock, binding.key_width, keep_lease)
    except sa_exc.SQLAlchemyError as exc:
        if is_transient_error(exc):
            raise transient("source unavailable", exc) from exc
        raise PermanentError(f"source refused the read: {error_reason(exc)}") from exc
    rt.staging.put(c.chunk_id, c.token, STAGE, codec.encode_rows(binding.source.columns, rows))
    outcome = {
        "step": "transform",
        "stage_token": c.token,
        "rows_in": len(rows),
        "attempts": 0,
        "extract_ms": elapsed_ms(clock.started),
        "queued_at": NOW,
    }
    done = commit_split(rt, c, cut, **outcome) if cut else commit(rt, c, **outcome)
    if done:
        publish_step(rt.publisher, "transform", c.chunk_id)


def _rest_of_run(result: Any, rows: list[tuple[Any, ...]], key_width: int) -> bool:
    """Read on to the end of the run of rows sharing the last key (a key need not be unique
    with ``write: insert``), so a cut never separates them; whether rows remain after it."""
    last = rows[-1][:key_width]
    while (row := result.fetchone()) is not None:
        if tuple(row[:key_width]) != last:
            return True
        rows.append(tuple(row))
    return False


def _read(
    engine: Engine,
    source: SqlSource,
    c: Claim,
    clock: StepClock,
    key_width: int,
    between: Callable[[], None],
) -> tuple[list[tuple[Any, ...]], list[Any] | None]:
    """The chunk's rows in key order, stopping at the deadline: (rows, cut or None)."""
    rows: list[tuple[Any, ...]] = []
    stmt = source.select_range(codec.decode_key(c.lower), codec.decode_key(c.upper))
    with engine.connect() as conn:
        source.begin(conn)
        result = conn.execution_options(stream_results=True, yield_per=SUB_BATCH_ROWS).execute(stmt)
        for part in result.partitions(SUB_BATCH_ROWS):
            rows.extend(tuple(r) for r in part)
            if clock.expired() and _rest_of_run(result, rows, key_width):
                result.close()
                return rows, codec.encode_key(rows[-1][:key_width])
            between()
    return rows, None
