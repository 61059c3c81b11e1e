"""A verification as operators read it: per stream, what was compared and what differs.

Counts are summed over the ranges compared so far, never kept as counters; a
stream is ``equal`` only when every one of its ranges is compared and none
differs. Sample values are canonical text (the form compared, see
docs/spec.md, "Canonical forms"); a viewer sees them masked as quarantined
rows are (:mod:`etl_tasks.masking`), keys and column names as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select

from etl_tasks.errors import NotFound
from etl_tasks.masking import MASK
from etl_tasks.state.db import StateDB
from etl_tasks.state.enums import RangeState, VerificationState
from etl_tasks.state.models import Migration, Stream, Verification, VerificationRange

COUNTS = ("source_rows", "target_rows", "expected_absent", "compared")
MISMATCHES = ("missing", "unexpected", "different")
SAMPLES_PER_STREAM = 5
RANGES_LISTED = 20  # mismatching ranges listed per stream; the total is given too


def report_url(migration_id: str) -> str:
    return f"/api/v1/migrations/{migration_id}/verify"


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat() + "Z"


def latest_report(db: StateDB, migration_id: str, *, masked: bool = False) -> dict[str, Any]:
    """The migration's newest verification; :class:`NotFound` when there is none."""
    with db.reading() as s:
        if s.get(Migration, migration_id) is None:
            raise NotFound(f"no migration {migration_id}")
        v = s.scalar(
            select(Verification)
            .where(Verification.migration_id == migration_id)
            .order_by(Verification.id.desc())
            .limit(1)
        )
        if v is None:
            raise NotFound(f"migration {migration_id} has not been verified")
        streams = list(
            s.scalars(
                select(Stream).where(Stream.migration_id == migration_id).order_by(Stream.position)
            )
        )
        ranges = list(
            s.scalars(
                select(VerificationRange)
                .where(VerificationRange.verification_id == v.id)
                .order_by(VerificationRange.stream_id, VerificationRange.seq)
            )
        )
    items = [
        _stream(st.name, [r for r in ranges if r.stream_id == st.id], v, masked) for st in streams
    ]
    return {**_summary(v), **_totals(ranges), "streams": items}


def _summary(v: Verification) -> dict[str, Any]:
    return {
        "id": v.id,
        "migration_id": v.migration_id,
        "state": v.state,
        "equal": v.state == VerificationState.EQUAL,
        "trigger": v.trigger,
        "requested_by": v.requested_by,
        "error": v.error,
        "report_url": report_url(v.migration_id),
        "created_at": _iso(v.created_at),
        "started_at": _iso(v.started_at),
        "finished_at": _iso(v.finished_at),
    }


def _totals(ranges: Sequence[VerificationRange]) -> dict[str, int]:
    return {
        "ranges_total": len(ranges),
        "ranges_done": sum(r.state == RangeState.DONE for r in ranges),
        "ranges_failed": sum(r.state == RangeState.FAILED for r in ranges),
    }


def _stream(
    name: str, ranges: list[VerificationRange], v: Verification, masked: bool
) -> dict[str, Any]:
    done = [r for r in ranges if r.state == RangeState.DONE]
    counts = {c: sum(getattr(r, c) or 0 for r in done) for c in COUNTS + MISMATCHES}
    bad = [r for r in done if any(getattr(r, c) for c in MISMATCHES)]
    samples = [x for r in bad for x in r.samples or []][:SAMPLES_PER_STREAM]
    failed = [r.last_error for r in ranges if r.state == RangeState.FAILED]
    return {
        "name": name,
        "state": _stream_state(ranges, v, bool(bad)),
        "equal": bool(ranges) and len(done) == len(ranges) and not bad,
        **counts,
        **_totals(ranges),
        "mismatched_ranges": [_range(r) for r in bad[:RANGES_LISTED]],
        "mismatched_ranges_total": len(bad),
        "samples": [_masked(x) for x in samples] if masked else samples,
        "error": failed[0] if failed else None,
    }


def _stream_state(ranges: list[VerificationRange], v: Verification, differs: bool) -> str:
    states = {r.state for r in ranges}
    if RangeState.FAILED in states:
        return VerificationState.FAILED
    if not ranges:  # not planned yet, or failed before it was
        return VerificationState.FAILED if v.state == VerificationState.FAILED else v.state
    if states != {RangeState.DONE}:
        claimed = states & {RangeState.RUNNING, RangeState.DONE}
        return VerificationState.RUNNING if claimed else VerificationState.PENDING
    return VerificationState.DIFFERENT if differs else VerificationState.EQUAL


def _range(r: VerificationRange) -> dict[str, Any]:
    return {
        "seq": r.seq,
        "chunk_id": r.chunk_id,
        "lower": r.lower,
        "upper": r.upper,
        **{c: getattr(r, c) or 0 for c in MISMATCHES},
    }


def _masked(sample: dict[str, Any]) -> dict[str, Any]:
    out = dict(sample)
    for side in ("expected", "found"):
        values = sample.get(side)
        if values is not None:
            out[side] = {c: None if v is None else MASK for c, v in values.items()}
    return out
