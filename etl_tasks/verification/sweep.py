"""The sweeper's share of verification: re-send lost ``baton.verify`` tasks, move on.

Called by :func:`etl_tasks.sweeper.sweep` under the sweeper lease. A range whose
lease expired (its worker was killed), whose ``not_before`` came, or whose
message the broker lost is published again, exactly as a chunk's step is
(:func:`etl_tasks.chunk_lease.needs_message`); then each verification under way
is advanced, which also plans the ones whose migration has just succeeded.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import and_, or_, select

from etl_tasks.chunk_lease import needs_message
from etl_tasks.publisher import publish_verify
from etl_tasks.runtime import Runtime
from etl_tasks.state.enums import MigrationState, VerificationState
from etl_tasks.state.models import Migration, Verification, VerificationRange
from etl_tasks.verification.progress import advance_verification


def sweep_verifications(rt: Runtime, broker_lost: bool) -> list[int]:
    """One pass over every verification that has work; return the ranges re-published."""
    republished: list[int] = []
    for verification_id in _with_work(rt):
        republished += republish_ranges(rt, verification_id, broker_lost)
        advance_verification(rt, verification_id)
    return republished


def _with_work(rt: Runtime) -> list[int]:
    """Running verifications, and pending ones whose migration ended (to plan or fail)."""
    ended = [MigrationState.SUCCEEDED, MigrationState.CANCELLED]
    with rt.db.reading() as s:
        return list(
            s.scalars(
                select(Verification.id)
                .join(Migration, Migration.id == Verification.migration_id)
                .where(
                    or_(
                        Verification.state == VerificationState.RUNNING,
                        and_(
                            Verification.state == VerificationState.PENDING,
                            Migration.state.in_(ended),
                        ),
                    )
                )
                .order_by(Verification.id)
            )
        )


def republish_ranges(rt: Runtime, verification_id: int, broker_lost: bool) -> list[int]:
    """Re-publish every range of the verification that no live message or lease covers."""
    with rt.db.session() as s:
        now = rt.db.now(s)
        stale = now - timedelta(seconds=rt.settings.requeue_after_s)
        ranges = list(
            s.scalars(
                select(VerificationRange)
                .where(
                    VerificationRange.verification_id == verification_id,
                    needs_message(VerificationRange, now, stale, broker_lost),
                )
                .with_for_update(skip_locked=True, key_share=True)  # as ROW_LOCK
            )
        )
        for r in ranges:
            r.queued_at = now
        ids = [r.id for r in ranges]
    for range_id in ids:
        publish_verify(rt.publisher, range_id)
    return ids
