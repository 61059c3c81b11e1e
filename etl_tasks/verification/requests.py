"""Asking for a verification: a row in the state DB, nothing read from the source or target.

The API records an operator's request; submitting a spec with ``"verify": true``
records one that waits for its migration to succeed. Workers plan and run it
(:mod:`etl_tasks.verification.planning`), so a request needs no worker to be
alive and survives any deploy.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from etl_tasks.errors import Conflict, NotFound
from etl_tasks.state.db import ROW_LOCK, StateDB
from etl_tasks.state.enums import MigrationState, VerificationState
from etl_tasks.state.models import Event, Migration, Verification

OPERATOR, SPEC = "operator", "spec"  # who asked: an operator, or the spec ("verify": true)
ACTIVE = (VerificationState.PENDING, VerificationState.RUNNING)


def add_request(
    s: Session, migration_id: str, trigger: str, actor: str | None, now: datetime
) -> Verification:
    """A new pending verification of the migration, in the caller's transaction."""
    v = Verification(
        migration_id=migration_id,
        state=VerificationState.PENDING,
        trigger=trigger,
        requested_by=actor,
        planned=False,
        created_at=now,
        updated_at=now,
    )
    s.add(v)
    s.flush()
    s.add(
        Event(
            migration_id=migration_id,
            kind="verification_requested",
            message=f"verification {v.id} requested" + (f" by {actor}" if actor else ""),
            at=now,
            actor=actor,
        )
    )
    return v


def request_verification(db: StateDB, migration_id: str, actor: str) -> tuple[int, bool]:
    """Record an operator's request; return ``(id, created)``.

    Only a succeeded migration is verified (a :class:`Conflict` otherwise): before it
    succeeds some rows are not loaded yet, and would all read as missing. While a
    verification of it is pending or running, that one is returned instead of a second.
    """
    with db.session() as s:
        mig = s.get(Migration, migration_id, with_for_update=ROW_LOCK)
        if mig is None:
            raise NotFound(f"no migration {migration_id}")
        if mig.state != MigrationState.SUCCEEDED:
            raise Conflict(
                f"cannot verify a migration that is {mig.state}: "
                "verification compares a migration that has succeeded"
            )
        if mig.summary is not None:  # its chunks, whose ranges a verification compares, went
            raise Conflict("cannot verify a migration whose details retention has removed")
        active = s.scalar(
            select(Verification.id)
            .where(Verification.migration_id == migration_id, Verification.state.in_(ACTIVE))
            .order_by(Verification.id.desc())
            .limit(1)
        )
        if active is not None:
            return active, False
        return add_request(s, migration_id, OPERATOR, actor, db.now(s)).id, True
