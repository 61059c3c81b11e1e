"""PostgreSQL's COPY in text format: the fast way to put rows into a table.

Each value is spelled by :func:`etl_tasks.values.encoders.pg_copy_field`, the
same text PostgreSQL would parse from any other load path.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

from etl_tasks.values.encoders import COPY_ESCAPES, pg_copy_field

_NULL = type(None)
_ESCAPED = tuple(chr(c) for c in COPY_ESCAPES)


def _spell_column(values: Sequence[Any]) -> list[str]:
    """Each value's COPY field, as :func:`pg_copy_field` spells it; a column of plain
    integers or plain text is spelled without a call per value."""
    kinds = set(map(type, values))
    if kinds == {int}:
        return list(map(str, values))
    if kinds <= {int, _NULL}:
        return ["\\N" if v is None else str(v) for v in values]
    if kinds == {str}:
        joined = "".join(values)  # one scan for the four characters COPY escapes
        if not any(c in joined for c in _ESCAPED):
            return list(values)
        return [v.translate(COPY_ESCAPES) for v in values]
    if kinds <= {str, _NULL}:
        return ["\\N" if v is None else v.translate(COPY_ESCAPES) for v in values]
    return [pg_copy_field(v) for v in values]


def copy_text(rows: Sequence[Sequence[Any]]) -> io.StringIO:
    """Rows as one COPY text-format stream, spelled column by column."""
    if not rows:
        return io.StringIO()
    columns = [_spell_column(column) for column in zip(*rows, strict=True)]
    lines = list(map("\t".join, zip(*columns, strict=True)))
    lines.append("")
    return io.StringIO("\n".join(lines))


def copy_into(
    dbapi_conn: Any, table_sql: str, columns_sql: str, rows: Sequence[Sequence[Any]] | bytes
) -> None:
    """``COPY table (columns) FROM STDIN`` on a psycopg2 connection: rows, spelled here, or
    COPY text as another PostgreSQL wrote it (a pass-through chunk's, in the connection's
    encoding)."""
    payload = io.BytesIO(rows) if isinstance(rows, bytes) else copy_text(rows)
    with dbapi_conn.cursor() as cur:
        cur.copy_expert(f"COPY {table_sql} ({columns_sql}) FROM STDIN", payload)
