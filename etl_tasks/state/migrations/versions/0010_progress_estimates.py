"""progress: each stream's row estimate, the migration's paused time; drain requests

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 14:00:00
Phase: expand

``streams.rows_estimate`` keeps the source's estimate of a stream's rows, taken
when the migration starts, so percent and ETA show before a stream is fully
planned. ``migrations.paused_at``, ``resumed_at`` and ``paused_s`` record the
latest pause and the paused time so far, so rows/s leaves paused seconds out.
``workers.drain_requested_at`` is a drain asked for through the API, which the
worker's heartbeat picks up (the API need not reach the worker's probe).

Why each step is safe while version N (the one before this script) still runs:
five new nullable columns, which N neither reads nor writes. A migration N's
workers started has no estimates (progress then counts planned chunks, as
before); a pause N's API made is not recorded (its seconds count as running);
a worker of version N ignores a drain request (drain it through its probe).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("streams", schema=None) as batch_op:
        batch_op.add_column(sa.Column("rows_estimate", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("migrations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("paused_at", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("resumed_at", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("paused_s", sa.Float(), nullable=True))
    with op.batch_alter_table("workers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("drain_requested_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("workers", schema=None) as batch_op:
        batch_op.drop_column("drain_requested_at")
    with op.batch_alter_table("migrations", schema=None) as batch_op:
        batch_op.drop_column("paused_s")
        batch_op.drop_column("resumed_at")
        batch_op.drop_column("paused_at")
    with op.batch_alter_table("streams", schema=None) as batch_op:
        batch_op.drop_column("rows_estimate")
