"""A migration's progress, computed once for the API, the CLI and the dashboard.

How many rows a migration has is known only at the end: planning is lazy, a
window ahead of execution. So each stream's expected rows are the larger of
the source's own estimate (``streams.rows_estimate``, taken when the migration
starts: PostgreSQL's statistics, a bounded count, file sizes) and what planning
has seen so far (rows handled plus ``chunk_rows`` per chunk still open); a
fully planned stream counts only the latter, a finished one its rows handled.

Rows/s is measured over the last :data:`RATE_WINDOW_S` seconds from the chunks
that finished in them, leaving out the latest pause: its seconds are not in
the window's length and chunks that finished during it are not in its rows.
Percent is rows handled over rows expected, below 100 until the migration
succeeded.

ETA. Streams differ in what a row costs (a wide table, a costly transform, a
slow target), so one migration-wide rows/s runs long or short as soon as the
streams ahead differ from those running now. The ETA therefore counts work:

- a chunk records how long each of its steps took, so a stream's cost is step
  milliseconds per row over its chunks that finished in the window (costs drift
  as target tables grow and the machine gets busier), weighed against its earlier
  chunks' cost as if that were :data:`PRIOR_CHUNKS` more chunks, and that in turn
  against the usual cost: a few chunks (its first, with cold caches and an empty
  table; the first after a pause) do not swing the ETA, many soon outweigh the
  rest;
- a stream with no done chunk yet (one whose ``after`` holds it back) costs the
  usual: step milliseconds per row over every done chunk of the migration. A
  row's width would have been the other guess; measured on the demo migration it
  predicts badly (69-byte customer rows cost 0.12 ms on a quiet run, 26-byte
  invoices 0.09 and 20-byte invoice lines 0.12), since most of a row's cost is
  per row and per value (parsing an invoice's date), not per byte;
- the pace is the step milliseconds of the window's chunks over its running
  seconds: in effect, how many steps the workers run at once, with their share
  of the machine, queue waits and other migrations all in it;
- ETA = the sum over streams of rows still expected times cost per row, over the
  pace.

Summing the streams' work and dividing by one pace is how streams share the
workers: independent streams run in parallel and split the pace between them, a
stream held back by ``after`` starts when its predecessors finish and then takes
all of it, and planning keeps a window of every running stream's chunks queued,
so the workers stay busy whichever streams run. The order in which streams run
then changes nothing; what this leaves out is the tail, when the last chunks no
longer keep every worker busy. Without step timings (none recorded in the
window), the ETA falls back to rows still expected over rows/s. It is shown from
the first finished chunks, while running.

:func:`progress_select` reads every figure in one statement, per stream, so
the live process still costs the state DB one query per poll.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, func, literal, or_, select
from sqlalchemy.sql import Select

from etl_tasks.constants import PIPELINE
from etl_tasks.state.enums import ChunkState, MigrationState, StreamState
from etl_tasks.state.models import Chunk, Migration, Stream

#: The steps whose milliseconds a chunk keeps in a column of its own, which SQL can sum
#: (every step so far; a later one without a column would be left out of the costs).
_TIMING_COLUMNS = [step.timing_column for step in PIPELINE if step.timing_column is not None]

RATE_WINDOW_S = 30.0  # rows/s is measured over this many seconds of running
PRIOR_CHUNKS = 4  # the earlier cost a stream's recent chunks are weighed against: as many chunks
UNFINISHED_CAP = 99.0  # the most percent a migration that has not succeeded shows


@dataclass
class StreamFigures:
    """One stream's counts, as :func:`progress_select` reads them."""

    state: str = StreamState.PENDING
    fully_planned: bool = False
    rows_estimate: int | None = None  # the source's; None or negative: unknown
    chunk_rows: int = 0
    chunks_total: int = 0
    chunks_done: int = 0
    chunks_failed: int = 0
    chunks_running: int = 0
    rows: int = 0  # rows handled (loaded or quarantined) by done chunks
    recent_rows: int = 0  # of which by chunks that finished in the window, outside a pause
    recent_since: datetime | None = None  # when the first of those chunks started
    work_ms: int = 0  # milliseconds the steps of the done chunks took, summed
    recent_work_ms: int = 0  # of which by the chunks counted in ``recent_rows``

    def expected_rows(self) -> int:
        """The rows this stream will have handled when it is done, as well as known now."""
        if self.state == StreamState.DONE:
            return self.rows
        planned = self.rows + (self.chunks_total - self.chunks_done) * self.chunk_rows
        if self.fully_planned:
            return planned
        return max(planned, self.rows_estimate or 0)

    def rows_left(self) -> int:
        """The rows this stream is still expected to handle."""
        if self.state == StreamState.DONE:
            return 0
        return max(self.expected_rows() - self.rows, 0)

    def ms_per_row(self, usual: float) -> float:
        """Step milliseconds one of its rows will cost: over its chunks that finished in
        the window, weighed against its earlier chunks' cost as if that were
        :data:`PRIOR_CHUNKS` more chunks, which is weighed against ``usual`` the same way;
        ``usual`` alone before its first chunk is done."""
        prior = PRIOR_CHUNKS * self.chunk_rows
        earlier = _weighed(
            self.work_ms - self.recent_work_ms, self.rows - self.recent_rows, usual, prior
        )
        return _weighed(self.recent_work_ms, self.recent_rows, earlier, prior)


def _weighed(work: float, rows: int, towards: float, weight: float) -> float:
    """``work`` per row over ``rows``, weighed against ``towards`` as if that were the cost
    of ``weight`` more rows; ``towards`` without rows or work."""
    if rows <= 0 or work <= 0:
        return towards
    return (work + towards * weight) / (rows + weight)


def pause_overlap(
    start: datetime, end: datetime, paused_at: datetime | None, resumed_at: datetime | None
) -> float:
    """Seconds of ``[start, end]`` inside the pause ``[paused_at, resumed_at or end]``."""
    if paused_at is None:
        return 0.0
    stop = end if resumed_at is None or resumed_at < paused_at else min(resumed_at, end)
    return max((stop - max(start, paused_at)).total_seconds(), 0.0)


@dataclass
class Figures:
    """A migration's state, times and streams: everything its progress derives from."""

    state: str
    started_at: datetime | None
    finished_at: datetime | None
    paused_at: datetime | None = None
    resumed_at: datetime | None = None
    paused_s: float = 0.0
    streams: list[StreamFigures] = field(default_factory=list)

    def window_s(self, now: datetime) -> float:
        """Running seconds in the last :data:`RATE_WINDOW_S`: none before the first chunk
        counted in it started (a young migration spends its first seconds preparing and
        planning), none paused."""
        if self.started_at is None:
            return 0.0
        firsts = [st.recent_since for st in self.streams if st.recent_since is not None]
        start = max(now - timedelta(seconds=RATE_WINDOW_S), self.started_at)
        if firsts:
            start = max(start, min(firsts))
        span = (now - start).total_seconds()
        return max(span - pause_overlap(start, now, self.paused_at, self.resumed_at), 0.0)

    def recent_rate(self, now: datetime) -> float:
        """Rows/s over the window; 0 unless running."""
        if self.state != MigrationState.RUNNING:
            return 0.0
        window = self.window_s(now)
        recent = sum(st.recent_rows for st in self.streams)
        return recent / window if window > 0 else 0.0

    def pace(self, now: datetime) -> float:
        """Step milliseconds the workers get through per second, over the window: how many
        steps run at once, in effect (the machine's share, queue waits and all)."""
        window = self.window_s(now)
        recent = sum(st.recent_work_ms for st in self.streams)
        return recent / window if window > 0 else 0.0

    def eta_s(self, now: datetime) -> float | None:
        """Seconds until the last row is handled, as the module docstring explains; None
        unless running with chunks finished in the window."""
        rate = self.recent_rate(now)
        if rate <= 0:
            return None
        pace = self.pace(now)
        measured = [st for st in self.streams if st.rows > 0 and st.work_ms > 0]
        if pace <= 0 or not measured:  # no step timings: the migration-wide rate alone
            return round(sum(st.rows_left() for st in self.streams) / rate, 1)
        # a stream with no done chunk yet costs what the rows done so far cost, on average
        usual = sum(st.work_ms for st in measured) / sum(st.rows for st in measured)
        work_left = sum(st.rows_left() * st.ms_per_row(usual) for st in self.streams)
        return round(work_left / pace, 1)

    def as_dict(self, now: datetime) -> dict[str, Any]:
        handled = sum(st.rows for st in self.streams)
        expected = sum(st.expected_rows() for st in self.streams)
        total = sum(st.chunks_total for st in self.streams)
        done = sum(st.chunks_done for st in self.streams)
        planned = all(st.fully_planned for st in self.streams)
        succeeded = self.state == MigrationState.SUCCEEDED
        if succeeded:
            percent = 100.0
        elif expected > 0:
            percent = min(100.0 * handled / expected, UNFINISHED_CAP)
        else:
            percent = 0.0
        rate = self.recent_rate(now)
        eta = self.eta_s(now)
        end = self.finished_at or now
        elapsed = (end - self.started_at).total_seconds() if self.started_at else 0.0
        paused = self.paused_s
        if self.state == MigrationState.PAUSED and self.paused_at is not None:
            paused += max((now - self.paused_at).total_seconds(), 0.0)
        running_s = max(elapsed - paused, 0.0)
        average = handled / running_s if running_s > 0 else 0.0
        return {
            "chunks_total": total,
            "chunks_done": done,
            "chunks_failed": sum(st.chunks_failed for st in self.streams),
            "chunks_running": sum(st.chunks_running for st in self.streams),
            "rows": handled,
            "rows_expected": expected,
            "fully_planned": planned,
            "percent": round(percent, 1),
            "rows_per_s": round(rate, 1),
            # while running: the recent rate; afterwards: the average over running time
            "throughput_rows_per_s": round(
                rate if self.state == MigrationState.RUNNING else average, 1
            ),
            "eta_s": eta,
            "elapsed_s": round(elapsed, 3),
            "paused_s": round(paused, 3),
        }


def _stream_aggregates(ids: Select[Any], since: datetime) -> Any:
    """Per stream of the migrations in ``ids``: chunks by state, rows handled and step
    milliseconds of done chunks, and both of the chunks that finished since ``since`` but
    not during the latest pause."""
    handled = func.coalesce(Chunk.rows_out, 0) + func.coalesce(Chunk.rows_quarantined, 0)
    step_ms = sum(
        (func.coalesce(getattr(Chunk, column), 0) for column in _TIMING_COLUMNS),
        start=literal(0),
    )
    done = Chunk.state == ChunkState.DONE
    outside_pause = or_(
        Migration.paused_at.is_(None),
        Chunk.finished_at < Migration.paused_at,
        and_(Migration.resumed_at.is_not(None), Chunk.finished_at >= Migration.resumed_at),
    )
    recent = and_(done, Chunk.finished_at >= since, outside_pause)
    return (
        select(
            Chunk.stream_id.label("stream_id"),
            func.count().label("total"),
            func.sum(case((done, 1), else_=0)).label("done"),
            func.sum(case((Chunk.state == ChunkState.FAILED, 1), else_=0)).label("failed"),
            func.sum(case((Chunk.state == ChunkState.RUNNING, 1), else_=0)).label("running"),
            func.sum(case((done, handled), else_=0)).label("rows"),
            func.sum(case((recent, handled), else_=0)).label("recent"),
            func.min(case((recent, Chunk.started_at), else_=None)).label("recent_since"),
            func.sum(case((done, step_ms), else_=0)).label("work_ms"),
            func.sum(case((recent, step_ms), else_=0)).label("recent_work_ms"),
        )
        .join(Migration, Migration.id == Chunk.migration_id)
        .where(Chunk.migration_id.in_(ids))
        .group_by(Chunk.stream_id)
        .subquery()
    )


def progress_select(ids: Select[Any], now: datetime) -> Select[Any]:
    """One row per stream (one with null stream columns for a migration without streams)
    of the migrations in ``ids``: seven columns of the migration (id, name, state, note,
    started_at, finished_at, created_at), then the figures :func:`figures_of` reads."""
    agg = _stream_aggregates(ids, now - timedelta(seconds=RATE_WINDOW_S))
    return (
        select(
            Migration.id,
            Migration.name,
            Migration.state,
            func.coalesce(Migration.error, Migration.waiting_reason),
            Migration.started_at,
            Migration.finished_at,
            Migration.created_at,
            func.coalesce(agg.c.total, 0),
            func.coalesce(agg.c.done, 0),
            func.coalesce(agg.c.failed, 0),
            func.coalesce(agg.c.running, 0),
            func.coalesce(agg.c.rows, 0),
            func.coalesce(agg.c.recent, 0),
            agg.c.recent_since,
            Stream.id,
            Stream.state,
            Stream.fully_planned,
            Stream.rows_estimate,
            Stream.chunk_rows,
            Migration.paused_at,
            Migration.resumed_at,
            Migration.paused_s,
            func.coalesce(agg.c.work_ms, 0),
            func.coalesce(agg.c.recent_work_ms, 0),
        )
        .select_from(Migration)
        .outerjoin(Stream, Stream.migration_id == Migration.id)
        .outerjoin(agg, agg.c.stream_id == Stream.id)
        .where(Migration.id.in_(ids))
    )


def figures_of(rows: list[Any]) -> dict[str, tuple[tuple[Any, ...], Figures]]:
    """Group :func:`progress_select`'s rows by migration: its seven leading columns, and
    its figures."""
    out: dict[str, tuple[tuple[Any, ...], Figures]] = {}
    for row in rows:
        head = tuple(row[:7])
        total, done, failed, running, handled, recent = (int(n or 0) for n in row[7:13])
        recent_since = row[13]
        stream_id, state, planned, estimate, chunk_rows, paused_at, resumed_at, paused_s = row[
            14:22
        ]
        work_ms, recent_work_ms = (int(n or 0) for n in row[22:24])
        if head[0] not in out:
            figures = Figures(
                state=head[2],
                started_at=head[4],
                finished_at=head[5],
                paused_at=paused_at,
                resumed_at=resumed_at,
                paused_s=float(paused_s or 0.0),
            )
            out[head[0]] = (head, figures)
        if stream_id is None:
            continue
        out[head[0]][1].streams.append(
            StreamFigures(
                state=state,
                fully_planned=bool(planned),
                rows_estimate=None if estimate is None or estimate < 0 else int(estimate),
                chunk_rows=int(chunk_rows or 0),
                chunks_total=total,
                chunks_done=done,
                chunks_failed=failed,
                chunks_running=running,
                rows=handled,
                recent_rows=recent,
                recent_since=recent_since,
                work_ms=work_ms,
                recent_work_ms=recent_work_ms,
            )
        )
    return out
