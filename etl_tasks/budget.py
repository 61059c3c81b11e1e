"""The step budget: how long one step may work before it stops at the next sub-batch.

The budget bounds a warm shutdown (a stopping worker finishes the step in
hand), so it is the deploy latency. A step checks ``expired()`` between
sub-batches and keeps a margin for its final commit.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from etl_tasks.connectors.base import Batch, Native

WORK_SHARE = 0.7  # of the budget spent working; the rest is margin for staging and commit
SUB_BATCH_ROWS = 1000  # rows between two deadline checks

#: How large a stream's chunks may grow when the spec leaves ``chunk_rows`` out: they
#: start at its default and grow while the slowest step stays within half the budget.
#: A chunk costs the same orchestration whatever its rows, so fast streams go faster in
#: larger chunks, up to what a worker holds in memory: a parsed chunk's rows are Python
#: values (several times their size as text, and four threads each hold one), a
#: pass-through chunk's are its COPY text. Measured on 1M narrow rows (2 workers): past
#: these sizes a chunk's fixed cost is lost in its rows' own, and SQLite → PostgreSQL
#: workers peaked at 194 MB with 20,000-row chunks against 267 to 293 MB with 50,000.
GROWN_CHUNK_ROWS = 20_000
GROWN_NATIVE_CHUNK_ROWS = 50_000
#: What one chunk's rows may take of a worker's memory, as :func:`row_bytes` weighs
#: them, whatever its row count: a worker runs four steps at once. Narrow rows hardly
#: reach it (`pgbench_accounts` rows: 19,800 parsed, 41,900 as COPY text); rows of 2 KB
#: did, long before a step took half its budget: workers held 377 MB (COPY text) and
#: 510 MB (parsed) at the sizes above, 196-200 and 238 MB with chunks of this weight.
CHUNK_BYTES = 8 * 2**20


#: What a Python value and a row's tuple take besides a string's or bytes' own length
#: (an int 28 bytes, a float 24, a datetime 48, a str 49 plus its length; a tuple 40
#: plus 8 per value): a round figure, as :func:`row_bytes` only weighs chunks.
VALUE_BYTES = 50
ROW_BYTES = 56
#: Rows :func:`row_bytes` looks at, spread through the chunk.
SAMPLE_ROWS = 64
#: A row's text (its COPY text, or its strings and bytes once parsed) weighs twice its
#: length: a worker holds a chunk's text in more than one form (as read, and as the next
#: step takes it). At half this weight 2 KB rows still took a worker to 256-270 MB.
TEXT_WEIGHT = 2


def row_bytes(batch: Batch) -> float | None:
    """About what one of the batch's rows takes of a worker's memory: its COPY text when
    it passes through, else its values as Python objects (from up to
    :data:`SAMPLE_ROWS` rows spread through it); text by :data:`TEXT_WEIGHT`. None for an
    empty batch."""
    native = batch.native if isinstance(batch.native, Native) and not batch.rows else None
    if native is not None:
        rows = len(native)
        text = sum(len(p.data) for p in native.parts)
        return TEXT_WEIGHT * text / rows if rows else None
    if not batch.rows:
        return None
    sample = batch.rows[:: max(1, len(batch.rows) // SAMPLE_ROWS)][:SAMPLE_ROWS]
    sized = (str, bytes, bytearray)
    total = sum(
        ROW_BYTES
        + sum(VALUE_BYTES + (TEXT_WEIGHT * len(v) if isinstance(v, sized) else 0) for v in row)
        for row in sample
    )
    return total / len(sample)


@dataclass
class StepClock:
    budget_s: float
    lease_s: float
    started: float = field(default_factory=time.monotonic)
    renewed: float = field(default_factory=time.monotonic)

    def expired(self, ahead_s: float = 0.0) -> bool:
        """Whether the deadline has passed, or would pass during ``ahead_s`` more work
        (the last sub-batch's duration predicts the next one's)."""
        return time.monotonic() - self.started + ahead_s >= self.budget_s * WORK_SHARE

    def renewal_due(self) -> bool:
        """Renew the lease once a third of it has passed (long steps only)."""
        if time.monotonic() - self.renewed >= self.lease_s / 3:
            self.renewed = time.monotonic()
            return True
        return False


def largest_chunk(chunk_rows: int, given: bool, native: bool, weight: float | None = None) -> int:
    """The largest chunk a stream may grow to: the spec's ``chunk_rows`` when it gives one
    (the first and largest size), else as large as its rows' form allows; either way no
    more rows than :data:`CHUNK_BYTES` holds, when a row's ``weight`` is known."""
    rows = (
        chunk_rows
        if given
        else max(chunk_rows, GROWN_NATIVE_CHUNK_ROWS if native else GROWN_CHUNK_ROWS)
    )
    return weighed(rows, weight)


def weighed(rows: int, weight: float | None) -> int:
    """At most ``rows``, and no more than :data:`CHUNK_BYTES` holds of rows of that
    ``weight`` (:func:`row_bytes`; None: not known)."""
    return rows if not weight else max(1, min(rows, int(CHUNK_BYTES / weight)))


def next_chunk_rows(current: int, rows: int, slowest_ms: int, budget_s: float, ceiling: int) -> int:
    """The chunk size that keeps the slowest step of a stream within half its budget.

    Moves halfway towards the measured target each time, at most doubling, never
    above ``ceiling`` (:func:`largest_chunk`) and never below 1.
    """
    if rows <= 0 or slowest_ms <= 0:
        return current
    target = rows * (budget_s * 1000 * 0.5) / slowest_ms
    proposed = int((current + target) / 2)
    return max(1, min(ceiling, current * 2, proposed))
