"""Building a stream's SQL source and target from a worker's runtime (the registry calls these).

The stream's binding (which columns, read how, keyed by what) is the
runtime's, worked out once per process from the source's catalog; the
endpoints were checked against the worker's boundary when first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import Engine

from etl_tasks.bindings import StreamBinding, target_columns
from etl_tasks.boundary.identity import refuse_marked_schema
from etl_tasks.connectors.sql.engines import for_reading
from etl_tasks.connectors.sql.errors import as_baton_errors
from etl_tasks.connectors.sql.source import SqlSource
from etl_tasks.connectors.sql.target import SqlTarget, TableDesign
from etl_tasks.errors import PermanentError
from etl_tasks.values.catalog import describe
from etl_tasks.values.ddl import Target as Dialect
from etl_tasks.values.ddl import TargetColumn
from etl_tasks.values.types import ColumnType

if TYPE_CHECKING:
    from etl_tasks.runtime import Runtime
    from etl_tasks.spec import Stream


def source(rt: Runtime, migration_id: str, stream: str) -> SqlSource:
    binding = rt.binding(migration_id, stream)
    engine = rt.source_reader(migration_id)
    return SqlSource(
        engine,
        binding.source,
        binding.key,
        binding.source_types,
        native=lambda: rt.native_copy(migration_id, stream),
    )


def target(rt: Runtime, migration_id: str, stream: str) -> SqlTarget:
    st = rt.spec(migration_id).stream(stream)
    binding = rt.binding(migration_id, stream)
    engine = rt.target_engine(migration_id)
    with as_baton_errors("target unavailable", f"cannot use {st.target_table!r}"):
        refuse_marked_schema(engine, st.target_table)
    design: TableDesign | None = None
    if st.create_target:

        def design(dialect: Dialect) -> list[TargetColumn]:
            columns, refused = target_columns(
                st, binding.source.table, binding.source_types, dialect
            )
            if refused:  # preflight refuses these; a spec recorded without it fails here
                name, why = refused[0]
                raise PermanentError(f"cannot create column {name!r}: {why.reason}")
            return columns

    return SqlTarget(
        engine,
        st.target_table,
        binding.target_key,
        st.write,
        identity_key=binding.identity_key,
        unique_key=binding.unique_key,
        design=design,
        advance_sequences=st.advance_sequences,
        describe=_describe,
        owner=(migration_id, stream) if _may_defer_key(rt, st, binding) else None,
    )


def _may_defer_key(rt: Runtime, st: Stream, binding: StreamBinding) -> bool:
    """Whether a table the stream creates may get its primary key after the load: a key
    the source holds unique (a table's unique index, not a query's sample), the target's."""
    return (
        rt.settings.defer_target_keys
        and st.query is None
        and binding.unique_key
        and binding.identity_key
    )


def _describe(engine: Engine, name: str) -> dict[str, ColumnType]:
    with for_reading(engine).connect() as conn:
        return describe(conn, name)
