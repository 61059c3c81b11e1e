"""boundary: state marker, sealed endpoints, owners, actors, worker capabilities

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 16:30:00
Phase: expand
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "baton_state_marker",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("migrations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sealed", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("owner", sa.String(length=200), nullable=True))
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("actor", sa.String(length=200), nullable=True))
    with op.batch_alter_table("workers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("capabilities", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("workers", schema=None) as batch_op:
        batch_op.drop_column("capabilities")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_column("actor")
    with op.batch_alter_table("migrations", schema=None) as batch_op:
        batch_op.drop_column("owner")
        batch_op.drop_column("sealed")
    op.drop_table("baton_state_marker")
