"""webhook notifications and retention: an outbox, and what pruning leaves behind

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 14:00:00
Phase: expand

``notifications`` is the outbox of webhook deliveries: a row is written in the
transaction that finishes a migration and sent by the sweeper. ``migrations``
gains ``notify`` (the spec's "notify", kept beside the spec), ``pruned_at`` and
``summary`` (what retention keeps once it removed a migration's chunks, events
and quarantined values). ``quarantine`` gains an index on ``chunk_id``: deleting a
chunk makes the database look for its quarantined rows (the foreign key's
cascade), which without it reads the whole table once per chunk. Building it
holds writes to ``quarantine`` back for as long as it takes (seconds per million
rows).

Why each step is safe while version N (the one before this script) still runs:
one new table, three new nullable columns and an index, none of which N reads or
writes (the index only serves this version's deletes).
A migration N finishes gets no outbox row from N; the sweeper of this version
adds the missing ones (:func:`etl_tasks.notifications.enqueue_missing`).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("migrations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("notify", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("pruned_at", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("summary", sa.JSON(), nullable=True))
    op.create_table(
        "notifications",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("migration_id", sa.String(32), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=False),
        sa.Column("body", sa.JSON(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("delivered_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["migration_id"], ["migrations.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("migration_id", "state", "finished_at"),
    )
    op.create_index("ix_notifications_status_due", "notifications", ["status", "next_attempt_at"])
    op.create_index("ix_quarantine_chunk_id", "quarantine", ["chunk_id"])


def downgrade() -> None:
    op.drop_index("ix_quarantine_chunk_id", table_name="quarantine")
    op.drop_index("ix_notifications_status_due", table_name="notifications")
    op.drop_table("notifications")
    with op.batch_alter_table("migrations", schema=None) as batch_op:
        batch_op.drop_column("summary")
        batch_op.drop_column("pruned_at")
        batch_op.drop_column("notify")
