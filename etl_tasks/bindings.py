"""A stream of a spec bound to its real source and target tables.

Binding reflects both tables once per process and works out everything the
steps need: which source columns to read (key first), the compiled row
mapper, the target's key, and the target table's shape for ``create_target``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import BigInteger, Boolean, Date, DateTime, Float, Numeric, Table, Text
from sqlalchemy.types import TypeEngine

from etl_tasks.connectors.sql_schema import portable_type
from etl_tasks.connectors.sql_source import SqlSource
from etl_tasks.spec import ColumnFrom, ColumnSpec, ColumnValue, MigrationSpec, Stream
from etl_tasks.transforms import RowMapper, compile_mapper

_TRANSFORM_TYPES: dict[str, TypeEngine[Any]] = {
    "int": BigInteger(),
    "float": Float(),
    "decimal": Numeric(),
    "bool": Boolean(),
    "date": Date(),
    "datetime": DateTime(),
    "lower": Text(),
    "upper": Text(),
    "strip": Text(),
}


def source_key(stream: Stream, table: Table) -> list[str]:
    """The stream's key: as given, else the source table's primary key."""
    return stream.key_columns or [c.name for c in table.primary_key.columns]


def column_specs(stream: Stream, table: Table) -> dict[str, ColumnSpec]:
    """Target column → spec; by default every source column under its own name."""
    if stream.columns is not None:
        return dict(stream.columns)
    return {c.name: c.name for c in table.columns}


def read_columns(stream: Stream, table: Table) -> list[str]:
    """Source columns to read: the key first, then every column the mapping uses."""
    key = source_key(stream, table)
    used: list[str] = list(key)
    for spec in column_specs(stream, table).values():
        name = (
            spec if isinstance(spec, str) else spec.from_ if isinstance(spec, ColumnFrom) else None
        )
        if name is not None and name not in used:
            used.append(name)
    return used


def target_key(stream: Stream, table: Table) -> tuple[list[str], bool]:
    """Target key columns (mapped straight from the source key), and whether they are identical.

    Identical means the target holds the source key's values unchanged, so a
    chunk's key range can be checked in the target.
    """
    key = source_key(stream, table)
    direct: dict[str, str] = {}
    for col, spec in column_specs(stream, table).items():
        if isinstance(spec, str):
            direct.setdefault(spec, col)
        elif isinstance(spec, ColumnFrom) and spec.transform is None:
            direct.setdefault(spec.from_, col)
    if all(k in direct for k in key):
        return [direct[k] for k in key], True
    return [], False


def _value_type(value: Any) -> TypeEngine[Any]:
    if isinstance(value, bool):
        return Boolean()
    if isinstance(value, int):
        return BigInteger()
    if isinstance(value, float):
        return Float()
    return Text()


def target_columns(stream: Stream, table: Table) -> list[tuple[str, TypeEngine[Any], bool]]:
    """(name, portable type, nullable) of each target column, for ``create_target``."""
    out: list[tuple[str, TypeEngine[Any], bool]] = []
    for name, spec in column_specs(stream, table).items():
        if isinstance(spec, ColumnValue):
            out.append((name, _value_type(spec.value), True))
            continue
        src = table.c[spec if isinstance(spec, str) else spec.from_]
        sa_type = portable_type(src.type)
        if isinstance(spec, ColumnFrom) and spec.transform in _TRANSFORM_TYPES:
            sa_type = _TRANSFORM_TYPES[spec.transform]
        elif isinstance(spec, ColumnFrom) and spec.transform == "map":
            sa_type = Text()
        out.append((name, sa_type, bool(src.nullable) or isinstance(spec, ColumnFrom)))
    return out


@dataclass(frozen=True)
class StreamBinding:
    """Everything a step needs about one stream, computed once per process."""

    name: str
    stream: Stream
    source: SqlSource
    mapper: RowMapper
    key: list[str]  # source key columns
    target_key: list[str]
    identity_key: bool

    @property
    def key_width(self) -> int:
        return len(self.key)


def bind_stream(spec: MigrationSpec, name: str, source_table: Table) -> StreamBinding:
    stream = spec.stream(name)
    key = source_key(stream, source_table)
    cols = read_columns(stream, source_table)
    tkey, identity = target_key(stream, source_table)
    return StreamBinding(
        name=name,
        stream=stream,
        source=SqlSource(source_table, key, cols, stream.where),
        mapper=compile_mapper(stream.columns, cols),
        key=key,
        target_key=tkey,
        identity_key=identity,
    )
