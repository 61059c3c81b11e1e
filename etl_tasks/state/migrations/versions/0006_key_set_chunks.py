"""key-set chunks and rows set aside for a retry

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 19:30:00
Phase: expand

A chunk may name its rows by an explicit key set (``chunks.keys``) instead of a
key range: the rows a target refused for a foreign key are read again, by their
keys, once the rest of their stream has loaded. A quarantined row gets a
``status`` (NULL: set aside for good; ``deferred``: refused for a foreign key,
waiting for its retry; ``retrying``: in a key-set chunk; ``gone``: no longer in
the source) and, for a retry, its ``source_key``.

Why each step is safe while version N (the one before this script) still runs:
three new nullable columns, which N neither reads nor writes. A key-set chunk's
``lower`` and ``upper`` are both its first key, an empty range, so a worker of
version N that claims one reads and loads nothing; its rows stay ``retrying``
and are then set aside for good, with the reason, when their stream finishes.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("chunks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("keys", sa.JSON(), nullable=True))
    with op.batch_alter_table("quarantine", schema=None) as batch_op:
        batch_op.add_column(sa.Column("status", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("source_key", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("quarantine", schema=None) as batch_op:
        batch_op.drop_column("source_key")
        batch_op.drop_column("status")
    with op.batch_alter_table("chunks", schema=None) as batch_op:
        batch_op.drop_column("keys")
