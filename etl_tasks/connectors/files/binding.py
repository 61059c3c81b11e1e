"""A file stream bound like a table: its columns as a table shape, keyed by position.

The rest of Baton (the mapping, ``create_target``, the target's key) works on a
table's shape; a file stream's is ``_file``, ``_record`` and then its files' columns,
all text. The source key is always the position. Without a ``key`` in the spec it is
the target's key too (the target gets ``_file`` and ``_record`` columns, so a chunk
loaded twice lands on the same rows); with one, the target is keyed by those columns
and the position only orders and chunks the reading.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, MetaData, Table, Text

from etl_tasks.bindings import StreamBinding, column_specs, origins, read_columns, target_key
from etl_tasks.connectors.files.source import FILE, POSITION, RECORD, file_types
from etl_tasks.connectors.sql.queries import RangeQuery
from etl_tasks.spec import MigrationSpec
from etl_tasks.transforms import compile_mapper


def shape_table(name: str, columns: list[str]) -> Table:
    """The stream's shape: the position (its primary key) and the files' columns."""
    return Table(
        name,
        MetaData(),
        Column(FILE, Text, primary_key=True),
        Column(RECORD, BigInteger, primary_key=True),
        *[Column(c, Text) for c in columns],
    )


def bind_file_stream(spec: MigrationSpec, name: str, columns: list[str]) -> StreamBinding:
    """What the steps need of a file stream whose files have ``columns``."""
    stream = spec.stream(name)
    table = shape_table(stream.source_name, columns)
    read = [*POSITION, *[c for c in read_columns(stream, table) if c not in POSITION]]
    tkey, _ = target_key(stream, table)
    return StreamBinding(
        name=name,
        stream=stream,
        source=RangeQuery(table, POSITION, read, []),
        mapper=compile_mapper(stream.columns or column_specs(stream, table), read),
        key=list(POSITION),
        target_key=tkey,
        identity_key=False,  # bounds are positions, never target keys to compare with
        source_types=file_types(columns),
        origins=origins(stream, table),
    )
