"""Verification: the target compared with the source, row by row, after the transforms.

For each stream every source row is mapped with the stream's own mapper; rows
that fail a transform are expected in the quarantine, the rest in the
target, equal column by column. Values are compared in a normal form (numbers
as decimals, timestamps as ISO text) so a NUMERIC read back as ``Decimal``
equals the float it came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson
from sqlalchemy import Engine, select

from etl_tasks.bindings import bind_stream
from etl_tasks.codec import decode_value
from etl_tasks.connectors.sql_source import reflect_table
from etl_tasks.errors import BadRowError
from etl_tasks.spec import MigrationSpec
from etl_tasks.state.db import StateDB
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


def normal(value: Any) -> Any:
    """A comparable form of a value, the same whichever database it was read from."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "1" if value else "0"  # MySQL has no boolean: it reads back 1 and 0
    if isinstance(value, int | float | Decimal):
        try:
            d = Decimal(str(value)).normalize()
        except InvalidOperation:
            return str(value)
        return "0" if d.is_zero() else format(d, "f")
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, bytes | memoryview | bytearray):
        return bytes(value).hex()
    return str(value)


def quarantine_keys(db: StateDB, migration_id: str) -> dict[str, set[Key]]:
    """Each stream's quarantined keys, in the normal form :func:`verify` compares."""
    out: dict[str, set[Key]] = {}
    for entry in list_quarantine(db, migration_id, limit=10_000_000):
        key = tuple(normal(decode_value(v)) for v in orjson.loads(entry["key"]))
        out.setdefault(entry["stream"], set()).add(key)
    return out


def verify_stream(
    spec: MigrationSpec,
    name: str,
    source: Engine,
    target: Engine,
    quarantined: set[Key] | None = None,
) -> StreamCheck:
    """Compare one stream; rows whose key was quarantined by the target are expected absent."""
    quarantined = quarantined or set()
    stream = spec.stream(name)
    binding = bind_stream(spec, name, reflect_table(source, stream.source_table))
    check = StreamCheck(name)
    columns = list(binding.mapper.target_columns)
    key_pos = [columns.index(k) for k in binding.target_key] or list(range(len(binding.key)))
    expected: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    with source.connect() as conn:
        for row in binding.source.read_range(conn, None, None):
            check.source_rows += 1
            try:
                mapped = tuple(normal(v) for v in binding.mapper.map_row(row))
            except BadRowError:
                check.bad_rows += 1
                continue
            key = tuple(mapped[i] for i in key_pos)
            if key in quarantined:
                check.bad_rows += 1
                continue
            expected[key] = mapped
    check.expected_rows = len(expected)
    table = reflect_table(target, stream.target_table)
    with target.connect() as conn:
        for row in conn.execute(select(*[table.c[c] for c in columns])):
            check.target_rows += 1
            got = tuple(normal(v) for v in row)
            key = tuple(got[i] for i in key_pos)
            want = expected.pop(key, None)
            if want is None:
                check.unexpected.append(key)
            elif want != got:
                diff = {c: (w, g) for c, w, g in zip(columns, want, got, strict=True) if w != g}
                check.different.append((key, diff))
    check.missing = list(expected)
    return check


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
