"""Moving a verification forward: plan it, publish its ranges, settle it.

``advance_verification`` is idempotent and cheap when there is nothing to do. It
runs in the plan task (the API publishes one after recording a request, and
``advance`` runs it for every verification of its migration), after every range
a ``baton.verify`` task records, and in the sweeper: a lost message costs one
sweep interval, never the verification.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from etl_tasks.publisher import publish_verify
from etl_tasks.runtime import Runtime
from etl_tasks.state.enums import RangeState, VerificationState
from etl_tasks.state.models import Verification, VerificationRange
from etl_tasks.verification.planning import finish, plan
from etl_tasks.verification.requests import ACTIVE

log = logging.getLogger(__name__)


def advance_verifications(rt: Runtime, migration_id: str) -> None:
    """Advance every pending or running verification of the migration."""
    with rt.db.reading() as s:
        ids = list(
            s.scalars(
                select(Verification.id).where(
                    Verification.migration_id == migration_id, Verification.state.in_(ACTIVE)
                )
            )
        )
    for verification_id in ids:
        advance_verification(rt, verification_id)


def advance_verification(rt: Runtime, verification_id: int) -> None:
    """Do whatever the verification needs next; safe to call any time, from anywhere."""
    plan(rt, verification_id)
    publish_ready(rt, verification_id)
    settle(rt, verification_id)


def publish_ready(rt: Runtime, verification_id: int) -> int:
    """Publish pending ranges, keeping at most ``max_queued_chunks`` queued or running."""
    with rt.db.session() as s:
        now = rt.db.now(s)
        room = rt.settings.max_queued_chunks - _busy(s, verification_id)
        ranges = _ready(s, verification_id, now, room) if room > 0 else []
        for r in ranges:
            r.queued_at = now
        ids = [r.id for r in ranges]
    for range_id in ids:
        publish_verify(rt.publisher, range_id)
    return len(ids)


def _busy(s: Session, verification_id: int) -> int:
    """Ranges running, or queued and not started yet."""
    queued = and_(
        VerificationRange.state == RangeState.PENDING, VerificationRange.queued_at.is_not(None)
    )
    query = (
        select(func.count())
        .select_from(VerificationRange)
        .where(
            VerificationRange.verification_id == verification_id,
            or_(VerificationRange.state == RangeState.RUNNING, queued),
        )
    )
    return s.scalar(query) or 0


def _ready(s: Session, verification_id: int, now: datetime, room: int) -> list[VerificationRange]:
    """Up to ``room`` pending ranges with no message out and no backoff, locked."""
    due = or_(VerificationRange.not_before.is_(None), VerificationRange.not_before <= now)
    return list(
        s.scalars(
            select(VerificationRange)
            .where(
                VerificationRange.verification_id == verification_id,
                VerificationRange.state == RangeState.PENDING,
                VerificationRange.queued_at.is_(None),
                due,
            )
            .order_by(VerificationRange.id)
            .limit(room)
            .with_for_update(skip_locked=True, key_share=True)  # as ROW_LOCK
        )
    )


def settle(rt: Runtime, verification_id: int) -> None:
    """Finish the verification once every range is compared: equal, different or failed."""
    with rt.db.reading() as s:
        v = s.get(Verification, verification_id)
        if v is None or v.state != VerificationState.RUNNING:
            return
        migration_id = v.migration_id
        counts, error, differs = _tally(s, verification_id)
    if counts.get(RangeState.FAILED):
        state, error = VerificationState.FAILED, error or "a range could not be compared"
    elif counts.get(RangeState.PENDING) or counts.get(RangeState.RUNNING):
        return
    else:
        state, error = (VerificationState.DIFFERENT if differs else VerificationState.EQUAL), None
    if finish(rt, verification_id, state, error):
        log.info(
            "verification %s: %s", verification_id, state, extra={"migration_id": migration_id}
        )
        rt.release(migration_id)


def _tally(s: Session, verification_id: int) -> tuple[dict[str, int], str | None, bool]:
    """Ranges by state, the first failed range's error, and whether any range differs."""
    mine = VerificationRange.verification_id == verification_id
    counts = dict(
        s.execute(
            select(VerificationRange.state, func.count())
            .where(mine)
            .group_by(VerificationRange.state)
        ).all()
    )
    error = s.scalar(
        select(VerificationRange.last_error)
        .where(mine, VerificationRange.state == RangeState.FAILED)
        .limit(1)
    )
    mismatches = (
        VerificationRange.missing + VerificationRange.unexpected + VerificationRange.different
    )
    differs = s.scalar(
        select(func.count()).select_from(VerificationRange).where(mine, mismatches > 0)
    )
    return counts, error, bool(differs)
