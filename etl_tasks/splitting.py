"""Splitting a chunk at its deadline: the part done is committed, the rest becomes a new chunk.

A step that reaches the step budget stops between sub-batches. Its chunk's
upper bound is narrowed to the last key it finished, and the remainder
(that key, the old upper bound] is planned as a new chunk, in the same
state-DB transaction. The cut is a key the source itself returned, so no
comparison is ever made outside the database (collations stay its business).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from etl_tasks.budget import StepClock
from etl_tasks.chunk_lease import NOW, RELEASED, Claim, fenced_update, lease_clock
from etl_tasks.errors import LeaseLost
from etl_tasks.planning import add_chunks
from etl_tasks.runtime import Runtime
from etl_tasks.state.db import CLOCK_READ_S, ROW_LOCK
from etl_tasks.state.models import Chunk, Stream
from etl_tasks.system_slots import holder_of


def split(s: Session, chunk: Chunk, cut: list[Any], now: datetime) -> None:
    """Narrow ``chunk`` to end at ``cut`` and plan the remainder; idempotent."""
    if chunk.upper == cut:
        return
    s.get(Stream, chunk.stream_id, with_for_update=ROW_LOCK)  # serialises chunk numbers
    add_chunks(s, chunk.migration_id, chunk.stream_id, [(cut, chunk.upper)], now)
    chunk.upper = cut


def commit_split(rt: Runtime, c: Claim, cut: list[Any], **values: Any) -> bool:
    """Like :func:`~etl_tasks.chunk_lease.commit`, narrowing the chunk to ``cut`` as well."""
    with rt.db.session() as s:
        now = rt.db.now(s)
        chunk = s.get(Chunk, c.chunk_id, with_for_update=ROW_LOCK)
        if chunk is None or chunk.lease_token != c.token:
            return False
        split(s, chunk, cut, now)
        for key, value in {**RELEASED, **values}.items():
            setattr(chunk, key, now if value is NOW else value)
        return True


def confirm_lease(rt: Runtime, c: Claim) -> None:
    """Before a target commit: ``c``'s lease must still be the chunk's. Only a claim whose
    lease ran out can take a chunk over, and a lease taken less than
    :data:`~etl_tasks.state.db.CLOCK_READ_S` ago (and under a third of its length) has
    not run out: :func:`~etl_tasks.chunk_lease.lease_clock` was read before the state
    DB's clock the lease was reckoned from, keeps counting while the machine sleeps, and
    every process extrapolates the state DB's clock over that long anyway. An older lease
    is renewed, which proves the token is still the chunk's (:class:`LeaseLost` if not)."""
    fresh_s = min(CLOCK_READ_S, rt.settings.lease_s / 3)
    if c.leased_at and lease_clock() - c.leased_at < fresh_s:
        return
    renew(rt, c)


def renew(rt: Runtime, c: Claim) -> None:
    """Extend the lease while a step works; a step whose token is stale must stop."""
    with rt.db.one_statement() as conn:
        now = rt.db.now(conn)
        done = fenced_update(
            conn, c, {"lease_expires_at": now + timedelta(seconds=rt.settings.lease_s)}
        )
    if not done:
        raise LeaseLost()


@dataclass
class StepPace:
    """A claimed step's clock as a connector sees it (:class:`~etl_tasks.connectors.base.Pace`):
    its deadline, and a lease renewed whenever a third of it has passed."""

    rt: Runtime
    claim: Claim
    clock: StepClock

    def expired(self, ahead_s: float = 0.0) -> bool:
        return self.clock.expired(ahead_s)

    def tick(self) -> None:
        if self.clock.renewal_due():
            renew(self.rt, self.claim)
            self.rt.slots.renew(
                holder_of(self.rt.worker_name, self.claim.chunk_id, self.claim.token)
            )
