"""The step budget: how long one step may work before it stops at the next sub-batch.

The budget bounds a warm shutdown (a stopping worker finishes the step in
hand), so it is the deploy latency. A step checks ``expired()`` between
sub-batches and keeps a margin for its final commit.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

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


def largest_chunk(chunk_rows: int, given: bool, native: bool) -> int:
    """The largest chunk a stream may grow to: the spec's ``chunk_rows`` when it gives one
    (the first and largest size), else as large as its rows' form allows."""
    if given:
        return chunk_rows
    return max(chunk_rows, GROWN_NATIVE_CHUNK_ROWS if native else GROWN_CHUNK_ROWS)


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
