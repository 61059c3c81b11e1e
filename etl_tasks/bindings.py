"""A stream of a spec bound to its real source (and, for ``create_target``, its target shape).

Binding reads the source table's declared column types once per process and
works out everything the steps need: which source columns to read (key
first) and how (PostgreSQL types whose only exact form is their text are read
as text), the compiled row mapper, where each target column comes from, the
target's key, and what a created target column becomes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.sql import FromClause

from etl_tasks.connectors.sql.queries import RangeQuery
from etl_tasks.spec import ColumnFrom, ColumnSpec, ColumnValue, MigrationSpec, Stream
from etl_tasks.transforms import RowMapper, compile_mapper
from etl_tasks.values.ddl import Target, TargetColumn, Uncarriable, carry
from etl_tasks.values.path import ColumnOrigin
from etl_tasks.values.types import ColumnType, Kind

Types = dict[str, ColumnType]

#: What a created column holds when a transform produced its values.
_TRANSFORM_KINDS: dict[str, tuple[Kind, int | None]] = {
    "int": (Kind.INTEGER, 64),
    "float": (Kind.FLOAT, 53),
    "decimal": (Kind.DECIMAL, None),
    "bool": (Kind.BOOLEAN, None),
    "date": (Kind.DATE, None),
    "datetime": (Kind.TIMESTAMP, None),
    "lower": (Kind.TEXT, None),
    "upper": (Kind.TEXT, None),
    "strip": (Kind.TEXT, None),
    "map": (Kind.TEXT, None),
}


def source_key(stream: Stream, table: FromClause) -> list[str]:
    """The stream's key: as given, else the source table's primary key."""
    return stream.key_columns or [c.name for c in table.primary_key]


def column_specs(stream: Stream, table: FromClause) -> dict[str, ColumnSpec]:
    """Target column → spec; by default every source column (but ``exclude``) by its name."""
    if stream.columns is not None:
        return dict(stream.columns)
    skip = set(stream.exclude)
    return {c.name: c.name for c in table.columns if c.name not in skip}


def _source_of(spec: ColumnSpec) -> str | None:
    if isinstance(spec, str):
        return spec
    return spec.from_ if isinstance(spec, ColumnFrom) else None


def read_columns(stream: Stream, table: FromClause) -> list[str]:
    """Source columns to read: the key first, then every column the mapping uses."""
    used: list[str] = list(source_key(stream, table))
    for spec in column_specs(stream, table).values():
        name = _source_of(spec)
        if name is not None and name not in used:
            used.append(name)
    return used


def origins(stream: Stream, table: FromClause) -> dict[str, ColumnOrigin]:
    """Where each target column's value comes from, and whether a transform changes it."""
    out: dict[str, ColumnOrigin] = {}
    for name, spec in column_specs(stream, table).items():
        if isinstance(spec, ColumnValue):
            out[name] = ColumnOrigin(None, transformed=True)
        elif isinstance(spec, ColumnFrom):
            out[name] = ColumnOrigin(spec.from_, spec.transform is not None, spec.as_)
        else:
            out[name] = ColumnOrigin(spec, False, stream.as_.get(spec))
    return out


def target_key(stream: Stream, table: FromClause) -> tuple[list[str], bool]:
    """Target key columns (mapped straight from the source key), and whether they are identical.

    Identical means the target holds the source key's values unchanged, so a
    chunk's key range can be checked in the target.
    """
    key = source_key(stream, table)
    direct: dict[str, str] = {}
    for col, origin in origins(stream, table).items():
        if origin.source is not None and not origin.transformed and origin.rep is None:
            direct.setdefault(origin.source, col)
    if all(k in direct for k in key):
        return [direct[k] for k in key], True
    return [], False


def _value_type(value: Any) -> ColumnType:
    if isinstance(value, bool):
        return ColumnType("", Kind.BOOLEAN, "boolean")
    if isinstance(value, int):
        return ColumnType("", Kind.INTEGER, "bigint", precision=64)
    if isinstance(value, float):
        return ColumnType("", Kind.FLOAT, "double", precision=53)
    if isinstance(value, dict | list):
        return ColumnType("", Kind.JSON, "json")
    return ColumnType("", Kind.TEXT, "text")


def produced_type(spec: ColumnSpec, types: Types) -> ColumnType:
    """The type of the values a target column receives, before the target is known."""
    if isinstance(spec, ColumnValue):
        return _value_type(spec.value)
    src = types[_source_of(spec) or ""]
    if isinstance(spec, ColumnFrom) and spec.transform in _TRANSFORM_KINDS:
        kind, bits = _TRANSFORM_KINDS[spec.transform]
        return ColumnType("", kind, kind.value, precision=bits)
    return src


def produced_types(
    stream: Stream, table: FromClause, source_types: dict[str, ColumnType]
) -> dict[str, ColumnType]:
    """Each target column's type where no target declares one (an HTTP API's rows): the
    source column's own, or what its transform, constant or representation makes of it."""
    out: dict[str, ColumnType] = {}
    for name, spec in column_specs(stream, table).items():
        rep = spec.as_ if isinstance(spec, ColumnFrom) else None
        if isinstance(spec, str):
            rep = stream.as_.get(spec)
        if rep == "text":
            out[name] = ColumnType("", Kind.TEXT, "text")
        elif rep == "json":
            out[name] = ColumnType("", Kind.JSON, "json")
        else:
            out[name] = produced_type(spec, source_types)
    return out


def target_columns(
    stream: Stream, table: FromClause, types: Types, to: Target
) -> tuple[list[TargetColumn], list[tuple[str, Uncarriable]]]:
    """Each created target column, and the columns whose type cannot be carried."""
    tkey, _ = target_key(stream, table)
    out: list[TargetColumn] = []
    refused: list[tuple[str, Uncarriable]] = []
    for name, spec in column_specs(stream, table).items():
        produced = produced_type(spec, types)
        rep = spec.as_ if isinstance(spec, ColumnFrom) else None
        if isinstance(spec, str):
            rep = stream.as_.get(spec)
        try:
            carried = carry(produced, to, name, key=name in tkey, rep=rep, key_columns=len(tkey))
        except Uncarriable as exc:
            refused.append((name, exc))
            continue
        nullable = name not in tkey and (produced.nullable or not isinstance(spec, str))
        out.append(TargetColumn(name, carried, nullable))
    return out, refused


@dataclass(frozen=True)
class StreamBinding:
    """Everything a step needs about one stream's source, computed once per process."""

    name: str
    stream: Stream
    source: RangeQuery
    mapper: RowMapper
    key: list[str]  # source key columns
    target_key: list[str]
    identity_key: bool
    source_types: Types
    origins: dict[str, ColumnOrigin]
    unique_key: bool = True  # False: equal keys (write: insert); they always share a chunk

    @property
    def key_width(self) -> int:
        return len(self.key)


def _text_columns(stream: Stream, table: FromClause, types: Types) -> dict[str, str | None]:
    """Columns read as their database's own text, with the function that gives it where
    that is not a plain cast (a MySQL geometry asked for as text: its WKT). A PostgreSQL
    array asked for as JSON is read as an array instead, to be written as JSON."""
    reps = {o.source: o.rep for o in origins(stream, table).values() if o.rep}
    out: dict[str, str | None] = {}
    for name, t in types.items():
        if t.exact_text and not (t.kind == Kind.ARRAY and reps.get(name) == "json"):
            out[name] = None
        elif t.text_function and reps.get(name) == "text":
            out[name] = t.text_function
    return out


def bind_stream(
    spec: MigrationSpec,
    name: str,
    source_table: FromClause,
    source_types: Types,
    unique_key: bool = True,
) -> StreamBinding:
    stream = spec.stream(name)
    key = source_key(stream, source_table)
    cols = read_columns(stream, source_table)
    tkey, identity = target_key(stream, source_table)
    text_cols = _text_columns(stream, source_table, source_types)
    return StreamBinding(
        name=name,
        stream=stream,
        source=RangeQuery(
            source_table,
            key,
            cols,
            stream.where,
            text_cols,
            widened=[c for c, t in source_types.items() if t.widened_read],
        ),
        mapper=compile_mapper(stream.columns or column_specs(stream, source_table), cols),
        key=key,
        target_key=tkey,
        identity_key=identity,
        source_types=source_types,
        origins=origins(stream, source_table),
        unique_key=unique_key,
    )
