"""quarantine keys of any length, expand: a TEXT key and a unique index over its hash

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 18:00:00
Phase: expand

A bad row's key could not be longer than 500 characters: a longer one made its
chunk's committed load impossible to record, and the chunk failed after its
attempts. The key becomes TEXT, and what keeps a chunk's quarantined rows unique
becomes a hash of the key (PostgreSQL's btree cannot index a long text).

Why each step is safe while version N (the one before this script) still runs:

- ``key`` VARCHAR(500) → TEXT: N reads and writes the same strings, and a wider
  type refuses nothing N writes. On PostgreSQL varchar to text is binary
  compatible: no table rewrite, no index rebuild.
- ``key_hash``, a new nullable column: N inserts its rows without it (NULL).
- the unique index over (stream_id, chunk_id, key_hash): NULLs are distinct in a
  unique index on PostgreSQL and SQLite, so N's rows never conflict in it; N's own
  unique constraint over the raw key stays until 0004.
- rows already there get their hash now, so the index covers them for N+1.

Version N+1 writes ``key_hash`` on every row and keeps rows unique by this index.
Until 0004 drops the old constraint, a key beyond PostgreSQL's btree limit (about
2.7 KB) is still refused there.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

QUARANTINE = sa.table(
    "quarantine",
    sa.column("id", sa.BigInteger()),
    sa.column("key", sa.Text()),
    sa.column("key_hash", sa.String(64)),
)


def backfill_key_hashes() -> None:
    """Hash the keys of the rows that have none, up to the last row there now."""
    conn = op.get_bind()
    last = conn.execute(sa.select(sa.func.max(QUARANTINE.c.id))).scalar() or 0
    done = 0
    while done < last:
        rows = conn.execute(
            sa.select(QUARANTINE.c.id, QUARANTINE.c.key)
            .where(QUARANTINE.c.id > done, QUARANTINE.c.id <= last)
            .where(QUARANTINE.c.key_hash.is_(None))
            .order_by(QUARANTINE.c.id)
            .limit(1000)
        ).all()
        if not rows:
            return
        conn.execute(
            sa.update(QUARANTINE)
            .where(QUARANTINE.c.id == sa.bindparam("row_id"))
            .values(key_hash=sa.bindparam("hash")),
            [{"row_id": i, "hash": hashlib.sha256(k.encode()).hexdigest()} for i, k in rows],
        )
        done = rows[-1][0]


def upgrade() -> None:
    if op.get_bind().dialect.name in ("mysql", "mariadb"):
        # InnoDB backs the stream_id foreign key with the leftmost column of the unique
        # (stream_id, chunk_id, key): over a TEXT key that index becomes a hash, which
        # cannot back a foreign key, so the key's own index is made first.
        op.create_index("ix_quarantine_stream_id", "quarantine", ["stream_id"])
    with op.batch_alter_table("quarantine", schema=None) as batch_op:
        batch_op.alter_column(
            "key", existing_type=sa.String(length=500), type_=sa.Text(), existing_nullable=False
        )
        batch_op.add_column(sa.Column("key_hash", sa.String(length=64), nullable=True))
    backfill_key_hashes()
    with op.batch_alter_table("quarantine", schema=None) as batch_op:
        batch_op.create_index(
            "uq_quarantine_key_hash", ["stream_id", "chunk_id", "key_hash"], unique=True
        )


def downgrade() -> None:
    with op.batch_alter_table("quarantine", schema=None) as batch_op:
        batch_op.drop_index("uq_quarantine_key_hash")
        batch_op.drop_column("key_hash")
        batch_op.alter_column(
            "key", existing_type=sa.Text(), type_=sa.String(length=500), existing_nullable=False
        )
