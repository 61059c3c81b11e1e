"""The outbox of webhook notifications: a row written where a migration ends.

:func:`record_finish` runs in the transaction that moves a migration to a
finished state (:mod:`etl_tasks.advance`, :mod:`etl_tasks.chunk_lease`,
:mod:`etl_tasks.control`), so a notification exists exactly when the end does;
:mod:`etl_tasks.notifications` delivers it. Kept apart from the delivery so that
the state changes need nothing but the state models.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy.orm import Session

from etl_tasks.state.enums import MigrationState
from etl_tasks.state.models import Migration, Notification

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
#: The ends a spec's ``notify`` announces when its ``on`` is left out.
NOTIFY_ALL = (MigrationState.SUCCEEDED, MigrationState.FAILED, MigrationState.CANCELLED)


def record_finish(s: Session, mig: Migration, now: datetime) -> bool:
    """Add the notification of ``mig``'s end in the caller's transaction, when its spec
    asks for one for this state; say whether it did."""
    if not mig.notify or mig.state not in NOTIFY_ALL:
        return False
    if mig.state not in mig.notify.get("on", list(NOTIFY_ALL)):
        return False
    s.add(
        Notification(
            id=uuid.uuid4().hex,  # the delivery id receivers de-duplicate by
            migration_id=mig.id,
            state=mig.state,
            finished_at=mig.finished_at,
            status=PENDING,
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        )
    )
    return True
