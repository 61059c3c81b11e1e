"""Sources and targets held in this process's memory: the reference connector.

It implements the whole seam (:mod:`etl_tasks.connectors.base`) in a few
hundred lines, without a database, so it serves two purposes: tests that need a
source or target they can inspect and break at will, and authors of a new
connector, who can read here what each method must do before reading the SQL
connector, which does the same with a database's collations, transactions and
error codes. It passes the same contract suite (``tests/contract/``).

A :class:`MemoryDatabase` holds tables and a ledger. A table keeps its rows by
key tuple, in Python's ordering of those tuples (the memory "collation"). A
chunk's rows and its ledger record are applied together, under one lock, on
``commit``; a chunk left without commit changes nothing, as a rolled-back
transaction would.

Specs cannot name memory endpoints (:func:`etl_tasks.spec.endpoint_kind` never
yields ``memory``), and a worker must not advertise a kind no other process can
reach, so the kind is not a built-in: :func:`connector` builds one over given
databases, for a test to :func:`~etl_tasks.connectors.registry.register`.
"""

from __future__ import annotations

import bisect
import copy
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from etl_tasks.budget import SUB_BATCH_ROWS
from etl_tasks.codec import NULL_KEYS
from etl_tasks.connectors.base import (
    Batch,
    ChunkRef,
    Key,
    LedgerRecord,
    Pace,
    Range,
    Refused,
    Shape,
)
from etl_tasks.connectors.registry import Connector
from etl_tasks.errors import PermanentError, TransientError
from etl_tasks.values.types import ColumnType

if TYPE_CHECKING:
    from etl_tasks.runtime import Runtime

WriteMode = Literal["upsert", "insert", "skip_existing"]
#: How long a chunk's write, or a ledger lookup, waits for another load of the same chunk
#: (the SQL target waits on the ledger row's lock the same way).
CHUNK_WAIT_S = 30.0
READ_BACK_ROWS = 5000
#: Why ``insert`` refuses a row, in the SQL target's words.
KEY_TAKEN = "key already in the target (write: insert)"


@dataclass
class MemoryTable:
    """One table: its columns in order, its key, their declared types and its rows.

    Rows are tuples in ``columns`` order, kept by their key (a tuple, one value per key
    column). Rows whose key holds a ``None`` are in no key range; a source reads them as
    the chunk :data:`~etl_tasks.codec.NULL_KEYS` names, and a target refuses them.
    """

    columns: list[str]
    key: list[str]
    types: dict[str, ColumnType] = field(default_factory=dict)
    #: Columns that refuse ``None`` besides the key's (a NOT NULL constraint).
    not_null: frozenset[str] = frozenset()
    rows: dict[Key, tuple[Any, ...]] = field(default_factory=dict)
    null_keyed: list[tuple[Any, ...]] = field(default_factory=list)
    #: The keys in order, and which ``rows`` (its identity and size) they were sorted from.
    _order: tuple[int, int, list[Key]] | None = field(default=None, repr=False, compare=False)

    def key_of(self, row: Sequence[Any]) -> Key:
        return tuple(row[self.columns.index(k)] for k in self.key)

    def add(self, rows: Sequence[Sequence[Any]]) -> None:
        """Put rows in directly (a test's source data); a later row replaces an equal key."""
        for row in rows:
            row = tuple(row)
            key = self.key_of(row)
            if any(v is None for v in key):
                self.null_keyed.append(row)
            else:
                self.rows[key] = row

    def ordered_keys(self) -> list[Key]:
        """The keys in order, sorted again only once rows were added (none is ever
        removed): a source reads a range by bisecting them, not by scanning every key,
        so reading costs what the range holds (the no-op ends of the benchmarks)."""
        mark = (id(self.rows), len(self.rows))
        if self._order is None or self._order[:2] != mark:
            self._order = (*mark, sorted(self.rows))
        return self._order[2]

    def keys_in(self, lower: Key | None, upper: Key | None) -> list[Key]:
        """The keys above ``lower`` up to ``upper`` (either open when None), in order."""
        keys = self.ordered_keys()
        start = 0 if lower is None else bisect.bisect_right(keys, lower)
        end = len(keys) if upper is None else bisect.bisect_right(keys, upper)
        return keys[start:end]


@dataclass
class MemoryDatabase:
    """Tables by name and a ledger by chunk, shared by the sources and targets made on it.

    ``reachable`` set to False makes every call fail as an outage does
    (:class:`~etl_tasks.errors.TransientError`), for tests of what retries.
    """

    tables: dict[str, MemoryTable] = field(default_factory=dict)
    ledger: dict[tuple[str, str, int], LedgerRecord] = field(default_factory=dict)
    reachable: bool = True
    #: Chunks being written now: a second load of one waits, as on a SQL ledger row's lock.
    in_flight: set[tuple[str, str, int]] = field(default_factory=set)
    changed: threading.Condition = field(default_factory=threading.Condition)

    def table(self, name: str) -> MemoryTable:
        """The table, or Baton's errors for an outage and for a missing table."""
        if not self.reachable:
            raise TransientError("memory database unavailable")
        found = self.tables.get(name)
        if found is None:
            raise PermanentError(f"table {name!r} does not exist")
        return found


def _key(bound: Sequence[Any] | None) -> Key | None:
    """A bound as a tuple: bounds come back from the state DB as lists."""
    return None if bound is None else tuple(bound)


class MemorySource:
    """One table of a :class:`MemoryDatabase`, read in key order (Python's tuple order)."""

    kind = "memory"

    def __init__(
        self, database: MemoryDatabase, table: str, *, sub_batch_rows: int = SUB_BATCH_ROWS
    ) -> None:
        self.database = database
        self.table_name = table
        self.sub_batch_rows = sub_batch_rows  # rows between two looks at the pace

    def _table(self) -> MemoryTable:
        return self.database.table(self.table_name)

    def describe(self) -> Shape:
        t = self._table()
        return Shape(list(t.columns), list(t.key), dict(t.types))

    def estimate_rows(self) -> int | None:
        t = self._table()
        return len(t.rows) + len(t.null_keyed)

    def boundaries(self, after: Key | None, rows: int, count: int) -> tuple[list[Range], bool]:
        """The key ``rows`` rows after the previous bound, as the SQL source's index scan."""
        keys = self._table().keys_in(_key(after), None)
        ranges: list[Range] = []
        lower = _key(after)
        for i in range(count):
            at = (i + 1) * rows - 1
            upper = keys[at] if at < len(keys) else None
            ranges.append((lower, upper))
            if upper is None:
                return ranges, True
            lower = upper
        return ranges, False

    def read_range(
        self, lower: Key | None, upper: Key | None, pace: Pace
    ) -> tuple[Batch, Key | None]:
        """Sub-batch by sub-batch, looking at the pace between two: keys are unique here, so
        a cut never separates rows that share one."""
        t = self._table()
        if lower is not None and lower[0] is NULL_KEYS:
            return Batch(list(t.columns), list(t.null_keyed)), None
        lo, hi = _key(lower), _key(upper)
        keys = t.keys_in(lo, hi)
        rows: list[tuple[Any, ...]] = []
        for start in range(0, len(keys), self.sub_batch_rows):
            rows.extend(t.rows[k] for k in keys[start : start + self.sub_batch_rows])
            if pace.expired() and len(rows) < len(keys):
                return Batch(list(t.columns), rows), keys[len(rows) - 1]
            pace.tick()
        return Batch(list(t.columns), rows), None

    def read_keys(self, keys: Sequence[Key], planned: Sequence[Key] = ()) -> Batch:
        t = self._table()
        wanted = {tuple(k) for k in keys}
        return Batch(list(t.columns), [t.rows[k] for k in sorted(wanted) if k in t.rows])


class MemoryTarget:
    """One table of a :class:`MemoryDatabase` as a target, with the SQL target's write modes.

    ``create``: the table :meth:`prepare` makes when it is missing (``create_target``).
    """

    kind = "memory"

    def __init__(
        self,
        database: MemoryDatabase,
        table: str,
        write: WriteMode = "upsert",
        *,
        create: MemoryTable | None = None,
    ) -> None:
        self.database = database
        self.table_name = table
        self.write_mode: WriteMode = write
        self.create = create

    def _table(self) -> MemoryTable:
        return self.database.table(self.table_name)

    @property
    def key(self) -> list[str]:
        return list(self._table().key)

    def prepare(self) -> None:
        """The table, when ``create`` describes it and it is missing; the ledger always is."""
        db = self.database
        if not db.reachable:
            raise TransientError("memory database unavailable")
        with db.changed:
            if self.create is not None and self.table_name not in db.tables:
                db.tables[self.table_name] = copy.deepcopy(self.create)

    def columns(self) -> dict[str, ColumnType]:
        return dict(self._table().types)

    def begin_chunk(self, chunk: ChunkRef) -> MemoryChunkWrite:
        self._table()
        return MemoryChunkWrite(self, chunk)

    def finish(self) -> list[str]:
        """Nothing generates keys here, so nothing moves past the loaded ones."""
        self._table()
        return []

    def ledger_lookup(self, chunk: ChunkRef) -> LedgerRecord | None:
        """Waits, as the SQL target does, while a load of the chunk is in flight."""
        db = self.database
        if not db.reachable:
            raise TransientError("memory database unavailable")
        name = _chunk_name(chunk)
        with db.changed:
            if not db.changed.wait_for(lambda: name not in db.in_flight, CHUNK_WAIT_S):
                raise TransientError(f"chunk {chunk.chunk_id} is still being written")
            return copy.deepcopy(db.ledger.get(name))

    def read_back(self, lower: Key | None, upper: Key | None) -> Iterator[Batch]:
        t = self._table()
        with self.database.changed:  # a consistent view: no commit lands halfway through
            keys = t.keys_in(_key(lower), _key(upper))
            rows = [t.rows[k] for k in keys]
        for start in range(0, len(rows), READ_BACK_ROWS):
            yield Batch(list(t.columns), rows[start : start + READ_BACK_ROWS])


def _chunk_name(chunk: ChunkRef) -> tuple[str, str, int]:
    return chunk.migration_id, chunk.stream, chunk.chunk_id


class MemoryChunkWrite:
    """One chunk's write: rows gather in ``pending`` and reach the table with the ledger
    record on :meth:`commit`, or never (leaving the context without commit drops them)."""

    def __init__(self, target: MemoryTarget, chunk: ChunkRef) -> None:
        self.target = target
        self.chunk = chunk
        self.committed: LedgerRecord | None = None
        self.pending: dict[Key, tuple[Any, ...]] = {}
        self._open = False

    def __enter__(self) -> MemoryChunkWrite:
        db = self.target.database
        name = _chunk_name(self.chunk)
        self.target._table()
        with db.changed:
            if not db.changed.wait_for(lambda: name not in db.in_flight, CHUNK_WAIT_S):
                raise TransientError(
                    f"chunk {self.chunk.chunk_id} is being written by another load"
                )
            self.committed = copy.deepcopy(db.ledger.get(name))
            if self.committed is None:
                db.in_flight.add(name)
                self._open = True
        return self

    def __exit__(self, *exc: object) -> None:
        self.pending.clear()
        self._release()

    def _release(self) -> None:
        if not self._open:
            return
        db = self.target.database
        with db.changed:
            db.in_flight.discard(_chunk_name(self.chunk))
            self._open = False
            db.changed.notify_all()

    def write(self, batch: Batch) -> list[Refused]:
        """Every row is checked before any is kept, so the batch is written whole (but the
        refused rows), and a refused row is named: the load step need not bisect."""
        if not self._open:
            raise RuntimeError("no chunk write in progress")
        t = self.target._table()
        unknown = [c for c in batch.columns if c not in t.columns]
        if unknown:  # the stream's mapping, not a row, is wrong: no row could load
            raise PermanentError(f"no column {unknown[0]!r} in {self.target.table_name!r}")
        staged: dict[Key, tuple[Any, ...]] = {}
        refused: list[Refused] = []
        for i, row in enumerate(batch.rows):
            values = dict(zip(batch.columns, row, strict=True))
            source_key = batch.keys[i] if batch.keys else None
            key = tuple(values.get(k) for k in t.key)
            reason = self._refusal(t, values, key, staged)
            if reason is not None:
                refused.append(Refused(tuple(row), reason, source_key))
                continue
            old = staged.get(key) or self.pending.get(key) or t.rows.get(key)
            if old is not None and self.target.write_mode == "skip_existing":
                continue
            base = dict(zip(t.columns, old, strict=True)) if old else dict.fromkeys(t.columns)
            base.update((c, v) for c, v in values.items() if c in base)
            staged[key] = tuple(base[c] for c in t.columns)
        self.pending.update(staged)
        return refused

    def _refusal(
        self,
        t: MemoryTable,
        values: dict[str, Any],
        key: Key,
        staged: dict[Key, tuple[Any, ...]],
    ) -> str | None:
        """Why the table would not take the row, in the terms the SQL target's database gives."""
        for column in [*t.key, *sorted(t.not_null)]:
            if values.get(column) is None:
                return f"NOT NULL constraint failed: {self.target.table_name}.{column}"
        taken = key in staged or key in self.pending or key in t.rows
        if taken and self.target.write_mode == "insert":
            return KEY_TAKEN
        return None

    def commit(self, record: LedgerRecord) -> None:
        """Rows and ledger record at once, under the database's lock."""
        if not self._open:
            raise RuntimeError("no chunk write in progress")
        db = self.target.database
        t = self.target._table()
        with db.changed:
            t.rows.update(self.pending)
            db.ledger[_chunk_name(self.chunk)] = copy.deepcopy(record)
        self.pending.clear()
        self._release()


def connector(source: MemoryDatabase, target: MemoryDatabase | None = None) -> Connector:
    """The ``memory`` kind over these databases (one may serve as both), to register.

    A stream reads ``source_table`` and writes ``target_table`` of its spec with the
    stream's write mode; the runtime's spec still names SQL endpoints, which memory
    streams never contact.
    """
    into = source if target is None else target

    def make_source(rt: Runtime, migration_id: str, stream: str) -> MemorySource:
        return MemorySource(source, rt.spec(migration_id).stream(stream).source_name)

    def make_target(rt: Runtime, migration_id: str, stream: str) -> MemoryTarget:
        st = rt.spec(migration_id).stream(stream)
        return MemoryTarget(into, st.target_table, st.write)

    return Connector("memory", make_source, make_target)
