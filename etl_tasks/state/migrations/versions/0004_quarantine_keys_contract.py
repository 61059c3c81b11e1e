"""quarantine keys of any length, contract: drop the unique constraint over the raw key

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 18:00:01
Phase: contract

What only version N+1 may rely on: a quarantined row's key of any length. The
unique constraint over (stream_id, chunk_id, key) from 0001 is a btree over the
raw key, which PostgreSQL refuses for a key beyond about 2.7 KB; rows stay unique
by the index over the key's hash that 0003 built.

Why each step is safe while another version runs:

- the rows version N wrote during the rollout (without a hash) are hashed first,
  so the hash index covers every row before the raw-key constraint goes;
- dropping the constraint: N+1 keeps rows unique by the hash index. A worker of
  version N still running loses nothing it relies on: N never relied on the
  constraint to keep a chunk's rows unique, it reads the chunk's quarantined keys
  under the chunk's row lock and inserts only the missing ones (the constraint was
  a backstop). Rows it writes from now on have no hash until a later contract
  backfills them; they are still unique by that same locked read.
- ``key_hash`` stays nullable: making it NOT NULL would refuse N's inserts, so it
  waits for a release after which no version writes without it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RAW_KEY = ["stream_id", "chunk_id", "key"]
# SQLite keeps the 0001 constraint unnamed: batch mode names it by this convention.
SQLITE_NAMES = {"uq": "uq_%(table_name)s_%(column_0_N_name)s"}
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
    backfill_key_hashes()
    conn = op.get_bind()
    if conn.dialect.name == "sqlite":
        with op.batch_alter_table(
            "quarantine", schema=None, naming_convention=SQLITE_NAMES
        ) as batch_op:
            batch_op.drop_constraint("uq_quarantine_stream_id_chunk_id_key", type_="unique")
        return
    for uq in sa.inspect(conn).get_unique_constraints("quarantine"):
        if uq["column_names"] == RAW_KEY and uq["name"]:
            op.drop_constraint(uq["name"], "quarantine", type_="unique")


def downgrade() -> None:
    with op.batch_alter_table("quarantine", schema=None) as batch_op:
        batch_op.create_unique_constraint("uq_quarantine_stream_id_chunk_id_key", RAW_KEY)
