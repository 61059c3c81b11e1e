"""A stream's ``query``: exactly one SELECT, that changes nothing.

Parsed with sqlparse: one statement, of type SELECT, with no data-changing or
schema-changing keyword anywhere in it (PostgreSQL lets a CTE delete: ``WITH d
AS (DELETE … RETURNING *) SELECT …``). It also runs in a read-only transaction
with a statement timeout (:mod:`etl_tasks.connectors.query_source`), so the
parse is one guard of two. Queries are for admins only: they reach any table
the source's user can read.
"""

from __future__ import annotations

import sqlparse
from sqlparse import tokens as T

_FORBIDDEN = set(
    "INSERT UPDATE DELETE MERGE UPSERT REPLACE TRUNCATE DROP CREATE ALTER GRANT REVOKE COPY "
    "CALL DO LOCK SET INTO FOR LOAD_FILE OUTFILE DUMPFILE PG_SLEEP SLEEP BENCHMARK".split()
)
MAX_QUERY_CHARS = 100_000


def query_problem(query: str) -> str | None:
    """Why ``query`` is not one read-only SELECT, or ``None``."""
    if len(query) > MAX_QUERY_CHARS:
        return f"longer than {MAX_QUERY_CHARS} characters"
    statements = [s for s in sqlparse.parse(query) if str(s).strip(" \t\r\n;")]
    if len(statements) != 1:
        return "give exactly one statement"
    statement = statements[0]
    if statement.get_type() != "SELECT":  # type: ignore[no-untyped-call]
        return "only a SELECT may read a source"
    for token in statement.flatten():  # type: ignore[no-untyped-call]
        if token.ttype in T.Keyword or token.ttype in T.Name or token.ttype in T.DML:
            word = token.value.upper()
            if word in _FORBIDDEN and (token.ttype is not T.Name or word in ("PG_SLEEP", "SLEEP")):
                return f"a query may only read: {token.value!r} is not allowed"
    return None
