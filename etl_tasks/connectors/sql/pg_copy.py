"""PostgreSQL's COPY in text format: the fast way to put rows into a table.

Each value is spelled by :func:`etl_tasks.values.encoders.pg_copy_field`, the
same text PostgreSQL would parse from any other load path.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

from etl_tasks.values.encoders import pg_copy_field


def copy_text(rows: Sequence[Sequence[Any]]) -> io.StringIO:
    """Rows as one COPY text-format stream."""
    buf = io.StringIO()
    write = buf.write
    for row in rows:
        write("\t".join([pg_copy_field(v) for v in row]))
        write("\n")
    buf.seek(0)
    return buf


def copy_into(
    dbapi_conn: Any, table_sql: str, columns_sql: str, rows: Sequence[Sequence[Any]]
) -> None:
    """``COPY table (columns) FROM STDIN`` on a psycopg2 connection."""
    with dbapi_conn.cursor() as cur:
        cur.copy_expert(f"COPY {table_sql} ({columns_sql}) FROM STDIN", copy_text(rows))
