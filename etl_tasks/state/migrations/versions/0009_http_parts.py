"""the request layout of an HTTP target's chunks

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 13:30:00
Phase: expand

A load of a chunk into an HTTP API that runs again must send the rows in the
same requests as before, under the same Idempotency-Keys, even when the
stream's batch size was lowered (a 413) in between: otherwise a request whose
answer was lost is sent again as other requests the API cannot recognise.
``http_parts`` records each request's place in the chunk (its first row's
extract position and its row count) before it is sent, and how many of its
sends got no answer (a dropped connection, a timeout).

Why each step is safe while version N (the one before this script) still runs:
one new table, which N neither reads nor writes.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "http_parts",
        sa.Column("migration_id", sa.String(32), nullable=False),
        sa.Column("stream", sa.String(200), nullable=False),
        sa.Column("chunk_id", BigId, nullable=False, autoincrement=False),
        sa.Column("first_position", sa.Integer(), nullable=False, autoincrement=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("unanswered", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("planned_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["migration_id"], ["migrations.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("migration_id", "stream", "chunk_id", "first_position"),
    )


def downgrade() -> None:
    op.drop_table("http_parts")
