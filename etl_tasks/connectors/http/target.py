"""An HTTP API as a :class:`~etl_tasks.connectors.base.Target`: each row once, by key.

The load step hands this target sub-batches of at most ``batch_rows`` rows
(its ``batch_rows`` attribute), so one :meth:`HttpChunkWrite.write` is one
request: the step's deadline cut and bisection work request by request. Every
request carries a deterministic ``Idempotency-Key`` (migration, chunk, the
batch's first row, a hash of the stream and the body), so a request sent again
is the same request. A confirmed request (2xx) is recorded in the state DB at
once (:mod:`etl_tasks.connectors.http.ledger`); a load of the chunk that runs
again sends only the rows no confirmed request holds, and the chunk is done,
its ledger record written, once all its rows are confirmed or quarantined.

Each request's place in the chunk (its first row and how many rows the load step
gave it) is recorded before it is first sent (``http_parts``), and a load of the
chunk that runs again cuts the chunk's rows the same way: a request whose answer
was lost goes again as the same request under the same key, even after a 413
elsewhere lowered the stream's batch size. Only a request that itself got a 413
is halved, deterministically, so its halves are the same on every attempt.

Exactly once holds when the API upserts by the rows' key or honours idempotency
keys for longer than the migration lasts; otherwise the spec says
``"delivery": "at_least_once"`` (docs/connectors.md).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

from etl_tasks import codec
from etl_tasks.connectors.base import Batch, ChunkRef, Key, LedgerRecord, Refused
from etl_tasks.connectors.http import ledger
from etl_tasks.connectors.http.client import (
    Client,
    RateLimit,
    Refusal,
    SharedSize,
    TooLarge,
    judge,
)
from etl_tasks.connectors.http.values import body
from etl_tasks.errors import BadRowError, PermanentError, TransientError
from etl_tasks.state.db import StateDB
from etl_tasks.values.types import ColumnType

log = logging.getLogger(__name__)


class HttpTarget:
    """One stream's target: an HTTP endpoint that takes rows."""

    kind = "http"

    def __init__(
        self,
        db: StateDB,
        client: Client,
        url: str,
        key: list[str],
        types: dict[str, ColumnType],
        *,
        batch_rows: int,
        rows_field: str | None,
        timeout_s: float,
        rate: RateLimit | None = None,
        shared_size: SharedSize | None = None,
    ) -> None:
        self.db = db
        self.client = client
        self.url = url
        self._key = list(key)
        self.types = types
        self._batch_rows = batch_rows  # lowered when the API answers 413
        self.shared_size = shared_size
        self.rows_field = rows_field
        self.timeout_s = timeout_s
        self.rate = rate
        self._lock = threading.Lock()

    @property
    def key(self) -> list[str]:
        return self._key

    @property
    def batch_rows(self) -> int:
        """Rows per request: the spec's, or less once the API answered 413 (to any worker)."""
        shared = self.shared_size.get() if self.shared_size is not None else None
        return min(self._batch_rows, shared) if shared else self._batch_rows

    def columns(self) -> dict[str, ColumnType]:
        """What the rows carry: the types the source and transforms produce (the API
        declares none); each is sent in its canonical JSON form."""
        return self.types

    def prepare(self) -> None:
        """Nothing to create: the ledger's tables are the state DB's own."""

    def finish(self) -> list[str]:
        return []

    def begin_chunk(self, chunk: ChunkRef) -> HttpChunkWrite:
        return HttpChunkWrite(self, chunk)

    def ledger_lookup(self, chunk: ChunkRef) -> LedgerRecord | None:
        return ledger.read(self.db, chunk)

    def read_back(self, lower: Key | None, upper: Key | None) -> Iterator[Batch]:
        raise PermanentError("an HTTP target cannot be read back: verify compares SQL targets")

    def too_large(self, rows: int) -> None:
        """The API refused ``rows`` rows as too large: the stream's later requests, by every
        worker, are at most half that."""
        smaller = max(1, rows // 2)
        with self._lock:
            if smaller >= self._batch_rows:
                return
            log.warning("the API refused %s rows as too large: batches of %s", rows, smaller)
            self._batch_rows = smaller
        if self.shared_size is not None:
            self.shared_size.lower(smaller)


class HttpChunkWrite:
    """One chunk's load: requests confirmed one by one, the ledger record at the end."""

    def __init__(self, target: HttpTarget, chunk: ChunkRef) -> None:
        self.target = target
        self.chunk = chunk
        self.committed: LedgerRecord | None = None
        self._confirmed: Counter[str] = Counter()
        self._parts: dict[int, int] = {}  # as first sent: first row's position → rows
        self._seen = -1  # the last extract position handed to write()
        self._asked: int | None = None  # the size batch_rows told the load step last
        self._part: int | None = None  # the first position of the part being written

    def __enter__(self) -> HttpChunkWrite:
        self.committed = ledger.read(self.target.db, self.chunk)
        if self.committed is not None:
            log.info(
                "chunk %s was committed already: a redelivery sends nothing",
                self.chunk.chunk_id,
                extra={"migration_id": self.chunk.migration_id},
            )
        else:
            self._confirmed = ledger.confirmed_rows(self.target.db, self.chunk)
            self._parts = ledger.parts(self.target.db, self.chunk)
        return self

    @property
    def batch_rows(self) -> int:
        """Rows for the load step's next sub-batch: what an earlier load of the chunk gave
        the request that began there, else the stream's size now."""
        after = [p for p in self._parts if p > self._seen]
        self._asked = self._parts[min(after)] if after else self.target.batch_rows
        return self._asked

    def __exit__(self, *exc: object) -> None:
        return None  # what the API confirmed stays confirmed: the ledger says so

    def write(self, batch: Batch) -> list[Refused]:
        """Send the batch's rows (those not confirmed by an earlier load of the chunk).

        Rows the API names in its refusal come back refused and the others are sent again
        without them; a refusal that names no row raises :class:`BadRowError` (the load
        step bisects); a 413 halves the batch here and lowers the stream's batch size.
        """
        if self.committed is not None:
            raise RuntimeError("no chunk write in progress")
        unknown = [c for c in batch.columns if c not in self.target.types]
        if unknown:  # the stream's mapping is wrong, not a row: no row of it could load
            raise PermanentError(f"the rows carry a column the stream does not: {unknown[0]!r}")
        asked, self._asked = self._asked, None  # a sub-batch of the load step's, not a half
        todo = self._unconfirmed(batch)
        if batch.positions:
            first = batch.positions[0]
            self._seen = max(self._seen, batch.positions[-1])
            if asked is not None:
                self._part = first
                if len(todo) and first not in self._parts:
                    self._parts[first] = ledger.plan(self.target.db, self.chunk, first, asked)
        return self._write(todo)

    def _write(self, todo: Batch) -> list[Refused]:
        refused: list[Refused] = []
        while len(todo):
            try:
                self._send(todo)
                return refused
            except TooLarge as exc:
                if len(todo) == 1:
                    raise BadRowError(f"the API refused the row as too large ({exc})") from None
                self.target.too_large(len(todo))
                first, second = todo.split()
                return refused + self._write(first) + self._write(second)
            except Refusal as exc:
                if not exc.rows:  # the API did not say which: the load step bisects
                    raise BadRowError(f"the API refused the row ({exc.message})") from None
                refused += [self._refused(todo, i, exc.status, m) for i, m in exc.rows.items()]
                todo = _pick(todo, [i for i in range(len(todo)) if i not in exc.rows])
        return refused

    def commit(self, record: LedgerRecord) -> None:
        """Every row of the chunk is confirmed or set aside: write its ledger record."""
        if self.committed is not None:
            raise RuntimeError("no chunk write in progress")
        ledger.commit(self.target.db, self.chunk, record)

    # -- one request ----------------------------------------------------------------------

    def _unconfirmed(self, batch: Batch) -> Batch:
        """The batch without the rows an earlier load of the chunk had confirmed (equal rows
        counted: the n-th copy of a row is skipped when n copies were confirmed)."""
        if not self._confirmed or not batch.keys:
            return batch
        seen: Counter[str] = Counter()
        keep: list[int] = []
        for i, rid in enumerate(row_ids(batch)):
            seen[rid] += 1
            if seen[rid] > self._confirmed[rid]:
                keep.append(i)
        return batch if len(keep) == len(batch) else _pick(batch, keep)

    def _send(self, batch: Batch) -> None:
        target, chunk = self.target, self.chunk
        payload = body(batch.columns, batch.rows, target.rows_field)
        key = batch_key(chunk, batch, payload)
        if target.rate is not None:
            target.rate.wait(chunk.deadline)
        timeout = target.timeout_s
        if chunk.deadline is not None:
            timeout = min(timeout, chunk.deadline - time.monotonic())
        try:
            answer = target.client.send(target.url, payload, key, timeout)
        except TransientError:  # no answer: the API may have applied it
            if self._part in self._parts:
                ledger.unanswered(target.db, chunk, self._part)
            raise
        judge(answer, len(batch), "the rows' endpoint")
        ledger.confirm(target.db, chunk, key, row_ids(batch), len(batch))

    def _refused(self, batch: Batch, index: int, status: int, message: str) -> Refused:
        key = batch.keys[index] if batch.keys else None
        return Refused(
            batch.rows[index], f"the API refused the row (HTTP {status}: {message})", key
        )


def batch_key(chunk: ChunkRef, batch: Batch, payload: bytes) -> str:
    """The request's ``Idempotency-Key``: the same rows of the same chunk, the same key."""
    digest = hashlib.sha256()
    digest.update(chunk.stream.encode())
    digest.update(b"\x00")
    digest.update(payload)
    first = batch.positions[0] if batch.positions else "k"
    return f"baton-{chunk.migration_id}-{chunk.chunk_id}-{first}-{digest.hexdigest()[:32]}"


def row_ids(batch: Batch) -> list[str]:
    """Each row's identity within its chunk: a digest of its source key and its values."""
    if not batch.keys:
        return []
    return [
        hashlib.sha256(codec.dumps([key, list(row)]).encode()).hexdigest()[:32]
        for key, row in zip(batch.keys, batch.rows, strict=True)
    ]


def _pick(batch: Batch, indexes: list[int]) -> Batch:
    def take(items: list[Any]) -> list[Any]:
        return [items[i] for i in indexes] if items else []

    return Batch(batch.columns, take(batch.rows), take(batch.keys), take(batch.positions))
