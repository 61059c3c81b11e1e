"""the ledger of HTTP targets: confirmed batches and chunk records

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 09:00:00
Phase: expand

An HTTP API has no transaction to hold a ledger row beside the rows, so an HTTP
target keeps its ledger here: ``http_batches`` holds one row per request the API
confirmed (its Idempotency-Key and a digest of each of its rows), and
``http_chunks`` one ledger record per chunk whose batches are all confirmed.

Why each step is safe while version N (the one before this script) still runs:
two new tables, which N neither reads nor writes (N has no HTTP connector, so a
migration with an HTTP target waits for a worker of this version).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "http_batches",
        sa.Column("migration_id", sa.String(32), nullable=False),
        sa.Column("stream", sa.String(200), nullable=False),
        sa.Column("chunk_id", BigId, nullable=False, autoincrement=False),
        sa.Column("batch_key", sa.String(200), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("row_ids", sa.JSON(), nullable=False),
        sa.Column("fencing_token", sa.Integer(), nullable=False),
        sa.Column("confirmed_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["migration_id"], ["migrations.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("migration_id", "stream", "chunk_id", "batch_key"),
    )
    op.create_table(
        "http_chunks",
        sa.Column("migration_id", sa.String(32), nullable=False),
        sa.Column("stream", sa.String(200), nullable=False),
        sa.Column("chunk_id", BigId, nullable=False, autoincrement=False),
        sa.Column("fencing_token", sa.Integer(), nullable=False),
        sa.Column("rows_loaded", sa.Integer(), nullable=False),
        sa.Column("rows_quarantined", sa.Integer(), nullable=False),
        sa.Column("quarantine", sa.JSON(), nullable=False),
        sa.Column("cut_key", sa.JSON(), nullable=True),
        sa.Column("deferred", sa.JSON(), nullable=True),
        sa.Column("committed_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["migration_id"], ["migrations.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("migration_id", "stream", "chunk_id"),
    )


def downgrade() -> None:
    op.drop_table("http_chunks")
    op.drop_table("http_batches")
