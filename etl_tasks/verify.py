"""Verification: the target compared with the source, row by row, after the transforms.

Every source row, read as the source stores it, goes through the stream's
transforms and strict casts (what the target should hold); rows those refuse
are expected in the quarantine, the rest in the target, equal column by
column. The target is read back as the database returns it, without the load
path's encoders, and both sides are compared in the canonical form of each
target column's type (:mod:`etl_tasks.values.canonical`), so a conversion bug
on the way in cannot hide on the way back.

A key range can be compared on its own (:meth:`StreamComparer.compare`): that
is what each ``baton.verify`` task does (:mod:`etl_tasks.verification`).
:func:`verify` compares whole streams at once, for the demo and the tests.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, Select, Table

from etl_tasks.bindings import StreamBinding, Types, bind_stream
from etl_tasks.budget import SUB_BATCH_ROWS
from etl_tasks.codec import NULL_KEYS, decode_value
from etl_tasks.connectors.sql.queries import RangeQuery, reflect_table
from etl_tasks.connectors.sql.shape import source_shape
from etl_tasks.errors import BadRowError, PermanentError
from etl_tasks.spec import MigrationSpec
from etl_tasks.state.db import StateDB
from etl_tasks.values.canonical import canonical_for
from etl_tasks.values.casts import Cast, cast_to
from etl_tasks.values.catalog import describe
from etl_tasks.values.path import ValuePath, build_path
from etl_tasks.verification.checks import (
    DIFFERENT,
    MISSING,
    UNEXPECTED,
    Canonical,
    Diff,
    Key,
    Mismatch,
    RangeCheck,
    StreamCheck,
)
from etl_tasks.verification.lookups import KeySpeller, batches, keys_present, rows_with_keys
from etl_tasks.views import list_quarantine

__all__ = [  # StreamCheck and RangeCheck live in etl_tasks.verification.checks
    "RangeCheck",
    "StreamCheck",
    "StreamComparer",
    "decode_key_text",
    "quarantine_keys",
    "verify",
    "verify_stream",
]


def quarantine_keys(db: StateDB, migration_id: str) -> dict[str, set[Key]]:
    """Each stream's quarantined keys, as the values they were recorded with."""
    out: dict[str, set[Key]] = {}
    for entry in list_quarantine(db, migration_id, limit=10_000_000):
        out.setdefault(entry["stream"], set()).add(decode_key_text(entry["key"]))
    return out


def decode_key_text(text: str) -> Key:
    """A quarantined row's key (JSON, as recorded) as the values it was read with."""
    return tuple(decode_value(v) for v in orjson.loads(text))


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


@dataclass(frozen=True)
class _Reader:
    """Rows of a query streamed in sub-batches, ``between`` called after each one."""

    conn: Connection
    between: Callable[[], None]

    def rows(self, stmt: Select[Any]) -> Iterator[tuple[Any, ...]]:
        options = {"stream_results": True, "yield_per": SUB_BATCH_ROWS}
        for part in self.conn.execution_options(**options).execute(stmt).partitions():
            yield from (tuple(row) for row in part)
            self.between()


Expected = tuple[Canonical, Key | None]


@dataclass
class _Side:
    """What the source range says the target holds: rows expected (several per key when the
    key is not unique, with ``write: insert``), and rows expected absent, each by canonical
    key with its key as the target spells it (``None``: it cannot)."""

    expected: dict[Key, list[Expected]] = field(default_factory=dict)
    absent: dict[Key, Key | None] = field(default_factory=dict)

    def take(self, key: Key, got: Canonical) -> Canonical | None:
        """The expected row a target row matches (an equal one first), ``None`` if none."""
        rows = self.expected.get(key)
        if not rows:
            return None
        pick = next((r for r in rows if r[0] == got), rows[0])
        rows.remove(pick)
        if not rows:
            del self.expected[key]
        return pick[0]


class StreamComparer:
    """One stream's comparison, set up once: what each side reads, and the form compared."""

    def __init__(
        self,
        binding: StreamBinding,
        path: ValuePath,
        target: Table,
        target_types: Types,
        target_key: list[str],
        dialects: tuple[str, str],  # the source's, the target's
    ) -> None:
        self.binding = binding
        self.path = path
        self.columns = list(path.target_columns)
        self._canons = [canonical_for(target_types[c]) for c in self.columns]
        self._keys = _Keys(target_key, target_types)
        self._key_pos = [self.columns.index(k) for k in target_key]
        text = {c: None for c in self.columns if c in target_types and target_types[c].exact_text}
        wide = [c for c in self.columns if c in target_types and target_types[c].widened_read]
        self.target = RangeQuery(target, target_key, self.columns, [], text, widened=wide)
        self._target_keys = KeySpeller([target_types[k] for k in target_key], dialects[1])
        self._source_keys = KeySpeller([binding.source_types[k] for k in binding.key], dialects[0])

    @classmethod
    def for_stream(
        cls, spec: MigrationSpec, name: str, source: Engine, target: Engine
    ) -> StreamComparer:
        """Everything read from the two databases' catalogs, for one stream."""
        stream = spec.stream(name)
        source_table, source_types = source_shape(source, stream)
        with target.connect() as conn:
            target_types = describe(conn, stream.target_table)
        binding = bind_stream(spec, name, source_table, source_types, stream.write != "insert")
        path = build_path(binding.mapper, binding.origins, source_types, target_types)
        table = reflect_table(target, stream.target_table)
        tkey = binding.target_key or [c.name for c in table.primary_key.columns]
        dialects = (source.dialect.name, target.dialect.name)
        return cls(binding, path, table, target_types, tkey, dialects)

    def compare(
        self,
        source: Engine,
        target: Engine,
        lower: Sequence[Any] | None = None,
        upper: Sequence[Any] | None = None,
        quarantined: Collection[Key] = (),
        between: Callable[[], None] = lambda: None,
    ) -> RangeCheck:
        """Compare the source's key range (lower, upper]; without bounds, the whole stream.

        ``quarantined`` holds the keys (as recorded) of the rows quarantined in the range:
        they, and the rows a transform or cast refuses, are expected absent. ``between``
        is called every ``SUB_BATCH_ROWS`` rows read (a task renews its lease there).
        """
        whole = lower is None and upper is None
        if not whole and not self.binding.identity_key:
            raise PermanentError(
                f"stream {self.binding.name!r}: its target key is not its source key unchanged, "
                "so the target cannot be cut by the source's key ranges"
            )
        check = RangeCheck()
        if lower is not None and lower[0] is NULL_KEYS:
            with source.connect() as src:
                return self._null_keys(check, src)
        skipped = {self._keys.canon(k) for k in quarantined}
        with source.connect() as src, target.connect() as tgt:
            side = self._expected(check, _Reader(src, between), lower, upper, skipped)
            strays = self._read_target(check, side, _Reader(tgt, between), lower, upper)
            if whole:  # every target row was read, and every source row expected
                for key, got, _ in strays:
                    self._unexpected(check, key, got)
                self._null_keys(check, src)
            else:
                self._look_up(check, side, tgt)
                self._sort_strays(check, strays, src)
        for key, rows in side.expected.items():
            for want, _ in rows:
                columns: Diff = {c: (w, None) for c, w in zip(self.columns, want, strict=True)}
                check.mismatches.append(Mismatch(MISSING, key, columns))
        return check

    def _null_keys(self, check: RangeCheck, conn: Connection) -> RangeCheck:
        """Rows whose key is NULL are in no key range: set aside (``on_null_key:
        quarantine``), or missing (a stream that refused them could not have run)."""
        for row in conn.execute(self.binding.source.select_range((NULL_KEYS,), None)):
            check.source_rows += 1
            if self.binding.stream.on_null_key == "quarantine":
                check.bad_rows += 1
            else:
                key = tuple(row[: self.binding.key_width])
                check.mismatches.append(Mismatch(MISSING, key, {}))
        return check

    def _canonical(self, row: Sequence[Any]) -> Canonical:
        return tuple(canon(v) for canon, v in zip(self._canons, row, strict=True))

    def _expected(
        self,
        check: RangeCheck,
        reader: _Reader,
        lower: Sequence[Any] | None,
        upper: Sequence[Any] | None,
        skipped: set[Key],
    ) -> _Side:
        side = _Side()
        width, identity = self.binding.key_width, self.binding.identity_key
        for row in reader.rows(self.binding.source.select_range(lower, upper)):
            check.source_rows += 1
            source_key = tuple(row[:width])
            if identity and self._keys.canon(source_key) in skipped:
                self._absent(check, side, source_key)
                continue
            try:
                converted = self.path.convert(row)
            except BadRowError:
                if identity:
                    self._absent(check, side, source_key)
                else:
                    check.bad_rows += 1
                continue
            mapped = self._canonical(converted)
            key = tuple(mapped[i] for i in self._key_pos)
            spelled = self._target_keys.spell([converted[i] for i in self._key_pos], cast=False)
            if key in skipped:
                check.bad_rows += 1
                side.absent[key] = spelled
                continue
            side.expected.setdefault(key, []).append((mapped, spelled))
            check.expected_rows += 1
        return side

    def _absent(self, check: RangeCheck, side: _Side, source_key: Key) -> None:
        check.bad_rows += 1
        side.absent[self._keys.canon(source_key)] = self._target_keys.spell(source_key)

    def _read_target(
        self,
        check: RangeCheck,
        side: _Side,
        reader: _Reader,
        lower: Sequence[Any] | None,
        upper: Sequence[Any] | None,
    ) -> list[tuple[Key, Canonical, Key]]:
        """Match the target's rows in the range; return those the source range does not know."""
        bounds = (self._target_keys.bound(lower), self._target_keys.bound(upper))
        strays: list[tuple[Key, Canonical, Key]] = []
        for row in reader.rows(self.target.select_range(*bounds)):
            got = self._canonical(row)
            key = tuple(got[i] for i in self._key_pos)
            if not self._match(check, side, key, got):
                strays.append((key, got, tuple(row[i] for i in self._key_pos)))
        return strays

    def _match(self, check: RangeCheck, side: _Side, key: Key, got: Canonical) -> bool:
        """Account for a target row the source range knows; False when it does not."""
        want = side.take(key, got)
        if want is not None:
            check.target_rows += 1
            check.compared += 1
            if want != got:
                pairs = zip(self.columns, want, got, strict=True)
                diff = {c: (w, g) for c, w, g in pairs if w != g}
                check.mismatches.append(Mismatch(DIFFERENT, key, diff))
            return True
        if key in side.absent:
            del side.absent[key]
            self._unexpected(check, key, got)
            return True
        return False

    def _unexpected(self, check: RangeCheck, key: Key, got: Canonical) -> None:
        check.target_rows += 1
        columns: Diff = {c: (None, g) for c, g in zip(self.columns, got, strict=True)}
        check.mismatches.append(Mismatch(UNEXPECTED, key, columns))

    def _look_up(self, check: RangeCheck, side: _Side, conn: Connection) -> None:
        """Rows the target range did not show, looked up by key: the target may order keys
        differently from the source, so a row of this range can sit outside its bounds."""
        wanted = [k for rows in side.expected.values() for _, k in rows[:1] if k is not None]
        wanted += [k for k in side.absent.values() if k is not None]
        for batch in batches(wanted):
            for row in conn.execute(rows_with_keys(self.target, batch)):
                got = self._canonical(row)
                self._match(check, side, tuple(got[i] for i in self._key_pos), got)

    def _sort_strays(
        self, check: RangeCheck, strays: list[tuple[Key, Canonical, Key]], conn: Connection
    ) -> None:
        """Target rows inside the bounds that the source range lacks are unexpected, unless
        the source has their key: then another range holds them, and compares them."""
        if not strays:
            return
        spelled = [self._source_keys.spell(raw) for _, _, raw in strays]
        found = keys_present(conn, self.binding.source, [k for k in spelled if k is not None])
        present = {self._keys.canon(k) for k in found}
        for key, got, _ in strays:
            if key not in present:
                self._unexpected(check, key, got)


def verify_stream(
    spec: MigrationSpec,
    name: str,
    source: Engine,
    target: Engine,
    quarantined: set[Key] | None = None,
) -> StreamCheck:
    """Compare one whole stream; rows quarantined (by a transform, a cast or the target) are
    expected absent. Both sides are read without the load path's conversions and
    compared in the canonical form of each target column."""
    comparer = StreamComparer.for_stream(spec, name, source, target)
    return StreamCheck.of(name, comparer.compare(source, target, quarantined=quarantined or ()))


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
