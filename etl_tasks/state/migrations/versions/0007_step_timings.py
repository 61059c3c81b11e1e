"""step timings in one JSON column

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 08:00:00
Phase: expand

Each step's duration goes into ``chunks.timings`` (milliseconds by step name), so a
new step needs no column of its own. ``extract_ms``, ``transform_ms`` and
``load_ms`` stay and are still written for the three steps that have them.

Why each step is safe while version N (the one before this script) still runs:
one new nullable column, which N neither reads nor writes. N writes only the
legacy columns; this version reads both (the JSON wins where both are set).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("chunks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("timings", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("chunks", schema=None) as batch_op:
        batch_op.drop_column("timings")
