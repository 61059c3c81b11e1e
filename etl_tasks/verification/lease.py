"""Claiming a verification range, recording its result once, releasing it on failure.

The same rules as a chunk's lease (:mod:`etl_tasks.chunk_lease`): a claim takes
a new fencing token and an expiry by the state DB's clock, attempts are
counted at claim (a range that keeps killing its worker fails after
``max_attempts``), backoff is ``not_before``, never a countdown, and the result
is written only by the claim whose token is still the range's, and only once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from etl_tasks.errors import LeaseLost
from etl_tasks.metrics import LEASE_EXPIRIES
from etl_tasks.runtime import Runtime
from etl_tasks.state.db import ROW_LOCK
from etl_tasks.state.enums import RangeState, VerificationState
from etl_tasks.state.models import Stream, Verification, VerificationRange

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RangeClaim:
    """A task's hold on a range: what it needs to compare it."""

    range_id: int
    verification_id: int
    migration_id: str
    stream_id: int
    stream: str
    chunk_id: int | None
    token: int
    lower: list[Any] | None
    upper: list[Any] | None


def claim(rt: Runtime, range_id: int) -> RangeClaim | None:
    """Take the range's lease; ``None`` when this message has nothing to do."""
    with rt.db.session() as s:
        now = rt.db.now(s)
        r = s.get(VerificationRange, range_id, with_for_update=ROW_LOCK)
        if r is None or not _claimable(r, s.get(Verification, r.verification_id), now):
            return None
        if r.attempts >= rt.settings.max_attempts:
            reason = f"range {r.id} was not compared after {r.attempts} attempts"
            fail_range(s, r, now, r.last_error or reason)
            return None
        expired = r.lease_owner is not None  # its holder never released it
        r.attempts += 1
        r.lease_token += 1
        r.lease_owner = rt.worker_name
        r.lease_expires_at = now + timedelta(seconds=rt.settings.lease_s)
        r.state = RangeState.RUNNING
        r.worker = rt.worker_name
        r.queued_at = None
        stream = s.get(Stream, r.stream_id)
        assert stream is not None
        taken = RangeClaim(
            r.id,
            r.verification_id,
            r.migration_id,
            r.stream_id,
            stream.name,
            r.chunk_id,
            r.lease_token,
            r.lower,
            r.upper,
        )
    if expired:  # counted once the claim is committed
        LEASE_EXPIRIES.labels("range").inc()
    return taken


def _claimable(r: VerificationRange, v: Verification | None, now: datetime) -> bool:
    if v is None or v.state != VerificationState.RUNNING:
        return False
    if r.state not in (RangeState.PENDING, RangeState.RUNNING):
        return False
    if r.lease_owner and r.lease_expires_at and r.lease_expires_at > now:
        return False  # another task holds it and is alive
    return not (r.not_before and r.not_before > now)


def record(rt: Runtime, c: RangeClaim, **result: Any) -> bool:
    """Write the range's result and finish it, if the token is still ours and nothing was
    recorded yet: a range's result is written exactly once."""
    with rt.db.session() as s:
        now = rt.db.now(s)
        done = s.execute(
            update(VerificationRange)
            .where(
                VerificationRange.id == c.range_id,
                VerificationRange.lease_token == c.token,
                VerificationRange.state == RangeState.RUNNING,
            )
            .values(
                **result,
                state=RangeState.DONE,
                recorded_token=c.token,
                finished_at=now,
                lease_owner=None,
                lease_expires_at=None,
                queued_at=None,
            )
        )
        return bool(done.rowcount)  # type: ignore[attr-defined]


def renew(rt: Runtime, c: RangeClaim) -> None:
    """Extend the lease while a long range is compared; raise :class:`LeaseLost` when the
    range has a newer token (another task took it over: this one must stop)."""
    with rt.db.session() as s:
        now = rt.db.now(s)
        done = s.execute(
            update(VerificationRange)
            .where(VerificationRange.id == c.range_id, VerificationRange.lease_token == c.token)
            .values(lease_expires_at=now + timedelta(seconds=rt.settings.lease_s))
        ).rowcount  # type: ignore[attr-defined]
    if not done:
        raise LeaseLost()


def retry_later(rt: Runtime, c: RangeClaim, error: str) -> None:
    """A transient failure: release the lease and set ``not_before``."""
    with rt.db.session() as s:
        now = rt.db.now(s)
        r = _held(s, c)
        if r is None:
            return
        first = r.first_failure_at or now
        window = timedelta(seconds=rt.settings.retry_window_s)
        if now - first > window:
            fail_range(s, r, now, f"still failing after {window}: {error}")
            return
        delay = min(rt.settings.retry_backoff_s * 2**r.retries, rt.settings.retry_backoff_max_s)
        r.retries += 1
        r.attempts = max(0, r.attempts - 1)  # it did not crash: not a lost attempt
        r.first_failure_at = first
        _release(r, now + timedelta(seconds=delay), error)
    log.warning("verification range will retry", extra={"range_id": c.range_id, "error": error})


def release_after_error(rt: Runtime, c: RangeClaim, error: str) -> None:
    """An unexpected error: release the lease with a backoff; the attempt stays counted."""
    with rt.db.session() as s:
        now = rt.db.now(s)
        r = _held(s, c)
        if r is not None:
            backoff = rt.settings.retry_backoff_s * 2 ** max(r.attempts - 1, 0)
            delay = min(backoff, rt.settings.retry_backoff_max_s)
            _release(r, now + timedelta(seconds=delay), error)


def fail_claimed(rt: Runtime, c: RangeClaim, error: str) -> None:
    """A permanent failure of the task holding ``c``."""
    with rt.db.session() as s:
        r = _held(s, c)
        if r is not None:
            fail_range(s, r, rt.db.now(s), error)


def fail_range(s: Session, r: VerificationRange, now: datetime, error: str) -> None:
    """The range cannot be compared; the verification fails when it settles."""
    r.state = RangeState.FAILED
    r.finished_at = now
    r.last_error = error[:2000]
    r.lease_owner = None
    r.lease_expires_at = None
    r.queued_at = None


def _held(s: Session, c: RangeClaim) -> VerificationRange | None:
    r = s.get(VerificationRange, c.range_id, with_for_update=ROW_LOCK)
    return r if r is not None and r.lease_token == c.token else None


def _release(r: VerificationRange, not_before: datetime, error: str) -> None:
    r.not_before = not_before
    r.lease_owner = None
    r.lease_expires_at = None
    r.queued_at = None
    r.last_error = error[:2000]
