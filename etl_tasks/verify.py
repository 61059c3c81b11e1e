"""Verification: the target compared with the source, row by row, after the transforms.

Every source row, read as the source stores it, goes through the stream's
transforms and strict casts (what the target should hold); rows those refuse
are expected in the quarantine, the rest in the target, equal column by
column. The target is read back as the database returns it, without the load
path's encoders, and both sides are compared in the canonical form of each
target column's type (:mod:`etl_tasks.values.canonical`), so a conversion bug
on the way in cannot hide on the way back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import Engine, Table

from etl_tasks.bindings import StreamBinding, Types, bind_stream
from etl_tasks.codec import NULL_KEYS, decode_value
from etl_tasks.connectors.source_shape import source_shape
from etl_tasks.connectors.sql_source import SqlSource, reflect_table
from etl_tasks.errors import BadRowError
from etl_tasks.spec import MigrationSpec
from etl_tasks.state.db import StateDB
from etl_tasks.values.canonical import Canon, canonical_for
from etl_tasks.values.casts import Cast, cast_to
from etl_tasks.values.catalog import describe
from etl_tasks.values.path import ValuePath, build_path
from etl_tasks.views import list_quarantine

Key = tuple[Any, ...]


@dataclass
class StreamCheck:
    name: str
    source_rows: int = 0
    expected_rows: int = 0
    target_rows: int = 0
    bad_rows: int = 0  # rows a transform refuses, plus rows quarantined by the target
    missing: list[Any] = field(default_factory=list)
    unexpected: list[Any] = field(default_factory=list)
    different: list[Any] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.different)


def quarantine_keys(db: StateDB, migration_id: str) -> dict[str, set[Key]]:
    """Each stream's quarantined keys, as the values they were recorded with."""
    out: dict[str, set[Key]] = {}
    for entry in list_quarantine(db, migration_id, limit=10_000_000):
        key = tuple(decode_value(v) for v in orjson.loads(entry["key"]))
        out.setdefault(entry["stream"], set()).add(key)
    return out


def _reader(table: Table, columns: list[str], types: Types) -> SqlSource:
    """Reads ``columns`` as the database returns them (exact text where that is the form)."""
    text_cols: dict[str, str | None] = {
        c: None for c in columns if c in types and types[c].exact_text
    }
    return SqlSource(table, [], columns, [], text_cols)


class _Keys:
    """A key in the target key columns' canonical form, from source or target values."""

    def __init__(self, names: list[str], types: Types) -> None:
        self._steps = [(cast_to(types[n]), canonical_for(types[n])) for n in names]

    def canon(self, values: Key) -> Key:
        return tuple(
            canon(_try(cast, v)) for (cast, canon), v in zip(self._steps, values, strict=False)
        )


def _try(cast: Cast, value: Any) -> Any:
    try:
        return cast(value)
    except BadRowError:
        return value


def verify_stream(
    spec: MigrationSpec,
    name: str,
    source: Engine,
    target: Engine,
    quarantined: set[Key] | None = None,
) -> StreamCheck:
    """Compare one stream; rows quarantined (by a transform, a cast or the target) are
    expected absent. Both sides are read without the load path's conversions and
    compared in the canonical form of each target column."""
    stream = spec.stream(name)
    source_table, source_types = source_shape(source, stream)
    with target.connect() as conn:
        target_types = describe(conn, stream.target_table)
    binding = bind_stream(spec, name, source_table, source_types, stream.query is None)
    path = build_path(binding.mapper, binding.origins, source_types, target_types)
    columns = list(path.target_columns)
    canons = [canonical_for(target_types[c]) for c in columns]
    tkey = binding.target_key or [
        c.name for c in reflect_table(target, stream.target_table).primary_key.columns
    ]
    keys = _Keys(tkey, target_types)
    key_pos = [columns.index(k) for k in tkey]
    skipped = {keys.canon(k) for k in quarantined or set()}
    check = StreamCheck(name)
    expected = _expected(check, binding, path, canons, key_pos, keys, skipped, source)
    table = reflect_table(target, stream.target_table)
    with target.connect() as conn:
        for row in _reader(table, columns, target_types).read_range(conn, None, None):
            check.target_rows += 1
            got = tuple(canon(v) for canon, v in zip(canons, row, strict=True))
            key = tuple(got[i] for i in key_pos)
            wants = expected.get(key)
            if not wants:
                check.unexpected.append(key)
                continue
            want = got if got in wants else wants[0]  # equal keys (write: insert): any match
            wants.remove(want)
            if not wants:
                del expected[key]
            if want != got:
                diff = {c: (w, g) for c, w, g in zip(columns, want, got, strict=True) if w != g}
                check.different.append((key, diff))
    check.missing = [key for key, rows in expected.items() for _ in rows]
    return check


def _expected(
    check: StreamCheck,
    binding: StreamBinding,
    path: ValuePath,
    canons: list[Canon],
    key_pos: list[int],
    keys: _Keys,
    skipped: set[Key],
    source: Engine,
) -> dict[Key, list[Key]]:
    expected: dict[Key, list[Key]] = {}
    with source.connect() as conn:
        for row in binding.source.read_range(conn, None, None):
            check.source_rows += 1
            if binding.identity_key and keys.canon(tuple(row[: binding.key_width])) in skipped:
                check.bad_rows += 1
                continue
            try:
                converted = path.convert(row)
            except BadRowError:
                check.bad_rows += 1
                continue
            mapped = tuple(canon(v) for canon, v in zip(canons, converted, strict=True))
            key = tuple(mapped[i] for i in key_pos)
            if key in skipped:
                check.bad_rows += 1
                continue
            expected.setdefault(key, []).append(mapped)
            check.expected_rows += 1
        _null_keys(check, binding, conn, expected)
    return expected


def _null_keys(
    check: StreamCheck, binding: StreamBinding, conn: Any, expected: dict[Key, list[Key]]
) -> None:
    """Rows whose key is NULL are in no key range: set aside (``on_null_key: quarantine``),
    or missing."""
    stmt = binding.source.select_range((NULL_KEYS,), None)
    for _ in conn.execute(stmt):
        check.source_rows += 1
        if binding.stream.on_null_key == "quarantine":
            check.bad_rows += 1
        else:
            expected.setdefault((None,) * binding.key_width, []).append(())


def verify(
    spec: MigrationSpec,
    source: Engine,
    target: Engine,
    quarantined: dict[str, set[Key]] | None = None,
) -> list[StreamCheck]:
    q = quarantined or {}
    return [
        verify_stream(spec, st.stream_name, source, target, q.get(st.stream_name))
        for st in spec.streams
    ]
