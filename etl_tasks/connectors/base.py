"""The connector seam: what a source and a target must do for Baton, and nothing more.

Steps talk to these protocols only. A connector turns its own errors into
Baton's at this boundary (:class:`~etl_tasks.errors.TransientError` for what
may pass, :class:`~etl_tasks.errors.PermanentError` for what cannot,
:class:`~etl_tasks.errors.BadRowError` for a row the target refuses), classified
by error code, never by message; steps catch only Baton's errors.

What every connector leaves to the steps, written once for all of them: the
sub-batch loop, the deadline cut (the rest of a chunk becomes a new chunk),
quarantine by bisection, leases and fencing. What every connector owns: how to
read a key range in key order, and how to make a chunk's rows and its ledger
record durable together (or, for a target without transactions, how to make a
re-sent batch change nothing).

The contract suite in ``tests/contract/`` runs the same tests against every
connector; a new one passes it before it is registered (``docs/connectors.md``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, runtime_checkable

from etl_tasks.values.types import ColumnType

Key = tuple[Any, ...]
#: A chunk's bounds, ``lower < key <= upper``; ``None`` is open. Bounds are the values the
#: source itself returned for the key (encoded by :mod:`etl_tasks.codec` when stored).
Range = tuple[Key | None, Key | None]


@dataclass(frozen=True)
class QuarantineEntry:
    """A rejected row: its key (JSON text), why, and the row itself (JSON-able)."""

    key: str
    reason: str
    row: dict[str, Any] | None
    #: The row's source key (as :func:`etl_tasks.codec.quarantine_key` spells it) when the
    #: step that refused it knew it, to read it again on a replay; not kept in the ledger
    #: (a record read back from it has none) and not part of the entry's identity.
    source_key: str | None = field(default=None, compare=False)


@dataclass(frozen=True)
class LedgerRecord:
    """A committed chunk as its target's ledger holds it: the state DB copies it, never
    counts on its own (a replay of the record changes nothing).

    ``deferred`` holds the rows refused for a foreign key, keyed by their source key
    (:func:`etl_tasks.codec.quarantine_key`): they are read again once the rest of their
    stream has loaded, and only then, refused again, quarantined.
    """

    fencing_token: int
    rows_loaded: int
    quarantine: list[QuarantineEntry]
    cut: list[Any] | None = None  # the load stopped at its deadline after this key
    deferred: list[QuarantineEntry] = field(default_factory=list)


@dataclass(frozen=True)
class Refused:
    """A row the target would not take, and the target's own reason.

    ``source_key`` is the row's encoded source key when known; ``retry_later`` says the
    row may load once others have (see :class:`~etl_tasks.errors.BadRowError`).
    """

    row: tuple[Any, ...]
    reason: str
    source_key: Any = None
    retry_later: bool = False


@dataclass(frozen=True)
class NativePart:
    """A run of rows in a connector's own wire form (one sub-batch of a source's read)."""

    data: bytes
    rows: int
    last_key: list[Any]  # the run's last source key, encoded (:func:`etl_tasks.codec.encode_key`)


@dataclass(frozen=True)
class Native:
    """A chunk's rows as a source of one kind wrote them, for a target of the same kind to
    consume without parsing: ``format`` names the form, ``meta`` (JSON-able) holds what the
    target needs to parse them after all (for bisection of a refused batch)."""

    format: str
    parts: list[NativePart]
    meta: dict[str, Any]

    def __len__(self) -> int:
        return sum(p.rows for p in self.parts)


@dataclass
class Batch:
    """Rows in flight between two steps: columns, rows, and what the steps need to cut them.

    A source's batch has its key columns first and leaves ``keys`` and ``positions``
    empty. A transformed batch's ``keys`` hold each row's source key (as the source
    returned it, encoded) and ``positions`` each row's place in the chunk's extract:
    a load's deadline cut is made at a key the source returned, and the transform's
    quarantine is trimmed by position. ``native`` may carry the same rows in a form
    a target of the same kind consumes without parsing (a PostgreSQL COPY stream, an
    Arrow record batch): a target that does not know it uses ``rows``. Halves never
    carry it. A pass-through batch (:class:`Native`, only for a stream whose source and
    target the runtime found of one kind with identical columns) carries only ``native``,
    its ``rows`` empty: its target parses it when it must (``parse_native``).

    ``malformed`` is a source's own refusal: a record it read but could not make a row
    of (a CSV line with a quote out of place, bytes not valid in the file's encoding).
    The row stays in its place, its key set and its values NULL, and the position
    maps to the reason; the transform quarantines it like a row that fails its casts.
    Only a source's batch has it.
    """

    columns: list[str]
    rows: list[tuple[Any, ...]]
    keys: list[Any] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    native: Any = None
    malformed: dict[int, str] = field(default_factory=dict)

    def __len__(self) -> int:
        if self.native is not None and not self.rows and isinstance(self.native, Native):
            return len(self.native)
        return len(self.rows)

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return iter(self.rows)

    def take(self, start: int, end: int | None = None) -> Batch:
        """Rows ``start:end`` as a batch of their own (no native payload)."""
        return Batch(
            self.columns,
            self.rows[start:end],
            self.keys[start:end],
            self.positions[start:end],
        )

    def split(self) -> tuple[Batch, Batch]:
        """Two halves, in order: bisection needs them."""
        mid = len(self.rows) // 2
        return self.take(0, mid), self.take(mid)

    def records(self) -> Iterator[dict[str, Any]]:
        """Each row as ``{column: value}``."""
        for row in self.rows:
            yield dict(zip(self.columns, row, strict=True))

    def without_native(self) -> Batch:
        return replace(self, native=None)


@dataclass(frozen=True)
class Shape:
    """What a source stream holds: its columns in read order (key first), and their types."""

    columns: list[str]
    key: list[str]
    types: dict[str, ColumnType]


class Pace(Protocol):
    """The step's clock, as a connector sees it while it reads or writes."""

    def expired(self, ahead_s: float = 0.0) -> bool:
        """Whether the step must stop now, or would pass its deadline in ``ahead_s`` more."""
        ...

    def tick(self) -> None:
        """Called between two sub-batches: the step renews its lease here (it may raise
        :class:`~etl_tasks.errors.LeaseLost`, which the connector lets through)."""
        ...


@dataclass
class Unpaced:
    """A pace that never stops: for preflight, verify and tests."""

    def expired(self, ahead_s: float = 0.0) -> bool:
        return False

    def tick(self) -> None:
        return None


@runtime_checkable
class Source(Protocol):
    """One stream's source, read chunk by chunk in key order.

    Keys are compared by the source alone (its collation, its ordering); Baton never
    compares two keys itself, it only hands back values the source returned.
    """

    kind: str

    def describe(self) -> Shape:
        """Columns (key first), the key and each column's declared type.

        Raises :class:`~etl_tasks.errors.PermanentError` when the stream's table is
        missing, :class:`~etl_tasks.errors.TransientError` when it cannot be reached.
        """
        ...

    def estimate_rows(self) -> int | None:
        """A cheap estimate of the stream's rows (catalog statistics, a bounded count, a
        file's size), or ``None``. Never a full scan: it only feeds progress and ETA."""
        ...

    def boundaries(self, after: Key | None, rows: int, count: int) -> tuple[list[Range], bool]:
        """Up to ``count`` ranges of about ``rows`` rows after ``after``; True when the last
        range is open-ended (the stream is fully planned). Ranges never overlap and,
        together with the ones planned before, cover every key."""
        ...

    def read_range(
        self, lower: Key | None, upper: Key | None, pace: Pace
    ) -> tuple[Batch, Key | None]:
        """Every row of ``lower < key <= upper`` in key order, key columns first.

        Stops early when ``pace.expired()`` says so, between sub-batches, never inside
        a run of rows that share a key; returns the rows read and the last key read
        (the cut: the rest of the range becomes a new chunk), or ``None`` when the
        whole range was read.
        """
        ...

    def read_keys(self, keys: Sequence[Key], planned: Sequence[Key] = ()) -> Batch:
        """The rows with these keys (a replay of quarantined rows); absent keys are absent.

        ``planned``: bounds the stream's chunks were planned with, for a source whose rows
        are positions in something that may change (a file source refuses a file whose
        fingerprint differs from theirs); others ignore them."""
        ...


class ChunkWrite(Protocol):
    """One chunk's write in progress: its rows and its ledger record become durable
    together, or none of them does.

    Used as a context manager; leaving it by an exception undoes everything it wrote.
    ``committed`` is the ledger record when the chunk had committed already (a
    redelivered load): then nothing may be written and the step reports that record.
    """

    committed: LedgerRecord | None

    def __enter__(self) -> ChunkWrite: ...

    def __exit__(self, *exc: object) -> bool | None: ...

    def write(self, batch: Batch) -> list[Refused]:
        """Write the batch's rows, all of them or none.

        Rows the target refuses by itself before writing (a key already there with
        ``write: insert``) come back with their reason and the others are written.
        When the target refuses the batch for a row it does not name, nothing of the
        batch stays written and :class:`~etl_tasks.errors.BadRowError` is raised: the
        load step bisects the batch (:meth:`Batch.split`) to find the row.
        """
        ...

    def commit(self, record: LedgerRecord) -> None:
        """Record the chunk in the ledger and make everything written durable, at once."""
        ...


@dataclass(frozen=True)
class ChunkRef:
    """Which chunk a target writes, under which fencing token, for which key range."""

    migration_id: str
    stream: str
    chunk_id: int
    token: int
    key_range: Range | None = None
    #: When the step must be done (``time.monotonic()``), if it has a deadline: a target
    #: that waits on a remote answer never waits past it (an HTTP request's timeout).
    deadline: float | None = None


@runtime_checkable
class Target(Protocol):
    """One stream's target: writes chunks exactly once, and reads them back for verify.

    A target may also have a ``batch_rows`` attribute (an int, read before every
    sub-batch, so it may shrink while a chunk loads): the load step then hands it
    sub-batches of at most that many rows, so one :meth:`ChunkWrite.write` is one
    request (an HTTP API's), and the deadline cut and bisection work request by request.

    A target that takes a pass-through :class:`Native` payload writes a batch carrying
    some of its parts (``Batch(columns, [], native=Native(format, parts, meta))``) whole
    or not at all, and has ``parse_native(batch, offset) -> Batch``: those parts' rows as
    values, with their source keys and positions from ``offset``, to bisect.
    """

    kind: str

    @property
    def key(self) -> list[str]:
        """The target's key columns: a row it refuses is quarantined by them."""
        ...

    def prepare(self) -> None:
        """Create what the stream needs before its first chunk (the ledger; the table with
        ``create_target``), idempotently: two workers may prepare at once."""
        ...

    def columns(self) -> dict[str, ColumnType]:
        """Each target column's declared type: the value path casts into these."""
        ...

    def begin_chunk(self, chunk: ChunkRef) -> ChunkWrite:
        """Start writing one chunk. A chunk whose record is in the ledger already comes
        back with ``committed`` set and writes nothing (a second delivery)."""
        ...

    def finish(self) -> list[str]:
        """Called once every chunk of the stream is done, before the stream is marked done
        (a SQL target moves its key generators past the loaded keys); idempotent. Returns
        what it did, for the log."""
        ...

    def ledger_lookup(self, chunk: ChunkRef) -> LedgerRecord | None:
        """The chunk's ledger record if a load of it committed, once no load of it is in
        flight: the ledger-first rule asks this before a chunk is read again."""
        ...

    def read_back(self, lower: Key | None, upper: Key | None) -> Iterator[Batch]:
        """The target's rows in a key range of the stream's target key, for verify."""
        ...


#: Builds a source or target for one stream of one migration, from its runtime context.
SourceFactory = Callable[..., Source]
TargetFactory = Callable[..., Target]
