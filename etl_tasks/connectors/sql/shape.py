"""A stream's source as something to select from, with each column's declared type.

A table is reflected and its types read from the catalog. A query (admins
only) becomes a subquery; its columns' types come from what the driver says of
a result with no rows, and it is always read in a read-only transaction.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, column, text
from sqlalchemy.sql import FromClause

from etl_tasks.boundary.identity import refuse_marked_schema
from etl_tasks.connectors.sql.engines import for_reading
from etl_tasks.connectors.sql.queries import read_only, reflect_table
from etl_tasks.spec import Stream
from etl_tasks.values.catalog import describe, query_types

Types = dict[str, Any]


def source_shape(engine: Engine, stream: Stream) -> tuple[FromClause, Types]:
    """The stream's table (or query) and its columns' declared types."""
    reader = for_reading(engine)
    if stream.query is None:
        assert stream.source_table is not None
        refuse_marked_schema(engine, stream.source_table)
        table = reflect_table(reader, stream.source_table)
        with reader.connect() as conn:
            return table, describe(conn, stream.source_table)
    with reader.connect() as conn:
        read_only(conn)
        result = conn.exec_driver_sql(f"SELECT * FROM ({stream.query}) AS q WHERE 1 = 0")
        names = list(result.keys())
        types = query_types(conn, names, result.cursor)
        result.close()
    subquery = text(stream.query).columns(*[column(n) for n in names]).subquery("q")
    return subquery, types
