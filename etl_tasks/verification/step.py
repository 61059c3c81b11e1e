"""The ``baton.verify`` task's work: compare one key range and record its result once.

Claim the range (a lease with a fencing token, as a chunk's), read the range
from the source and the target and compare them in canonical form
(:class:`etl_tasks.verify.StreamComparer`), record the counts and samples if
the token is still the range's, then advance the verification (publish more
ranges, settle it when the last one is in). Failures are classified by type, as
a step's are.
"""

from __future__ import annotations

import logging
import time

from sqlalchemy import exc as sa_exc
from sqlalchemy import select

from etl_tasks import codec
from etl_tasks.budget import StepClock
from etl_tasks.connectors.sql.engines import for_reading
from etl_tasks.connectors.sql.errors import error_reason, is_transient_error
from etl_tasks.connectors.sql.target import SqlTarget
from etl_tasks.endpoints import FileEndpoint
from etl_tasks.errors import LeaseLost, PermanentError, TransientError
from etl_tasks.runtime import Runtime
from etl_tasks.state.models import QuarantinedRow
from etl_tasks.verification.checks import Key, RangeCheck
from etl_tasks.verification.lease import (
    RangeClaim,
    claim,
    fail_claimed,
    record,
    release_after_error,
    renew,
    retry_later,
)
from etl_tasks.verification.progress import advance_verification
from etl_tasks.verification.results import result_columns
from etl_tasks.verify import StreamComparer, decode_key_text

log = logging.getLogger("etl_tasks.steps")


def verify_range(rt: Runtime, range_id: int) -> str:
    """Compare one range; return what happened, for logs."""
    c = claim(rt, range_id)
    if c is None:
        return "skipped"
    ids = {"migration_id": c.migration_id, "stream": c.stream, "range_id": range_id}
    started = time.monotonic()
    try:
        check = compare_claimed(rt, c)
    except LeaseLost:
        log.warning("lease lost; another worker has the range", extra=ids)
        return "lease_lost"
    except TransientError as exc:
        retry_later(rt, c, str(exc))
        return "retry"
    except PermanentError as exc:
        log.error("verification range failed: %s", exc, extra=ids)
        fail_claimed(rt, c, str(exc))
        advance_verification(rt, c.verification_id)
        return "failed"
    except Exception as exc:
        log.exception("verification range crashed", extra=ids)
        release_after_error(rt, c, f"{type(exc).__name__}: {exc}")
        return "error"
    elapsed = int((time.monotonic() - started) * 1000)
    if not record(rt, c, **result_columns(check, elapsed)):
        log.warning("lease lost; another worker has the range", extra=ids)
        return "lease_lost"
    log.info("verify done in %d ms: %d mismatches", elapsed, len(check.mismatches), extra=ids)
    advance_verification(rt, c.verification_id)
    return "done"


def compare_claimed(rt: Runtime, c: RangeClaim) -> RangeCheck:
    """The range compared, with the database errors turned into Baton's."""
    target = rt.target(c.migration_id, c.stream)
    if not isinstance(target, SqlTarget):
        raise PermanentError(f"verify compares SQL targets only, not {target.kind} ones")
    if isinstance(rt.spec(c.migration_id).source, FileEndpoint):
        raise PermanentError("verify compares a SQL source with the target, not files")
    source = rt.source_reader(c.migration_id)
    comparer = StreamComparer(
        rt.binding(c.migration_id, c.stream),
        rt.value_path(c.migration_id, c.stream),
        target.table,
        target.types,
        target.key,
        (source.dialect.name, target.engine.dialect.name),
    )
    lower, upper = codec.decode_key(c.lower), codec.decode_key(c.upper)
    clock = StepClock(rt.settings.step_budget_s, rt.settings.lease_s)

    def keep_lease() -> None:  # a whole-stream range can take longer than a lease
        if clock.renewal_due():
            renew(rt, c)

    try:
        return comparer.compare(
            source, for_reading(target.engine), lower, upper, _quarantined(rt, c), keep_lease
        )
    except sa_exc.SQLAlchemyError as exc:
        if is_transient_error(exc):
            raise TransientError(f"cannot read for verification: {error_reason(exc)}") from exc
        raise PermanentError(f"cannot compare: {error_reason(exc)}") from exc


def _quarantined(rt: Runtime, c: RangeClaim) -> list[Key]:
    """The keys quarantined in this range: with its chunk, or anywhere in a whole stream."""
    query = select(QuarantinedRow.key).where(QuarantinedRow.stream_id == c.stream_id)
    if c.chunk_id is not None:
        query = query.where(QuarantinedRow.chunk_id == c.chunk_id)
    with rt.db.reading() as s:
        return [decode_key_text(k) for k in s.scalars(query)]
