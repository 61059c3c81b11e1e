"""Read models for the operators' dashboard: progress, the chunk map, the event log.

What the pages show is derived like :mod:`etl_tasks.views`, from chunks and
events, never stored counters. Throughput is measured over the last
:data:`RATE_WINDOW_S` seconds (rows of the chunks that finished in it), so a
migration that stalls reads 0 rows/s at once instead of its lifetime average.

:func:`live_snapshot` reads everything the live updates need in **one**
statement, so the process that streams them costs the state DB one query per
poll whatever the number of open pages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    String,
    Text,
    and_,
    case,
    cast,
    func,
    literal,
    null,
    or_,
    select,
    union_all,
)
from sqlalchemy.sql import Select

from etl_tasks.errors import NotFound
from etl_tasks.listing import event_view
from etl_tasks.state.db import StateDB
from etl_tasks.state.enums import ChunkState, MigrationState, WorkerState
from etl_tasks.state.models import ApiToken, Chunk, Event, Migration, Stream, Worker
from etl_tasks.views import _iso
from etl_tasks.workers import LIVE_AFTER_S

RATE_WINDOW_S = 30.0  # rows/s is measured over this many seconds
ACTIVE_STATES = (MigrationState.PENDING, MigrationState.RUNNING, MigrationState.PAUSED)
RECENT_S = 600.0  # a finished migration stays in the live snapshot this long


def utcnow() -> datetime:
    """Naive UTC, as the state DB stores times."""
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass
class ChunkCounts:
    total: int = 0
    done: int = 0
    failed: int = 0
    running: int = 0
    rows: int = 0  # rows handled (loaded or quarantined) by done chunks
    recent_rows: int = 0  # of which by chunks that finished in the rate window
    unplanned_streams: int = 0


@dataclass
class Progress:
    """One migration's progress as the pages show it."""

    id: str
    name: str
    state: str
    note: str | None
    started_at: datetime | None
    finished_at: datetime | None
    created_at: datetime | None
    counts: ChunkCounts = field(default_factory=ChunkCounts)

    def as_dict(self, now: datetime) -> dict[str, Any]:
        c = self.counts
        percent = 100.0 if self.state == MigrationState.SUCCEEDED else 0.0
        if self.state != MigrationState.SUCCEEDED and c.total:
            percent = 100.0 * c.done / c.total
            if c.unplanned_streams and percent > 99.0:
                percent = 99.0  # more chunks are to be planned: not finished yet
        rate = self._rate(now)
        eta = None
        if self.state == MigrationState.RUNNING and not c.unplanned_streams and c.done and rate:
            eta = round((c.total - c.done) * (c.rows / c.done) / rate, 1)
        return {
            "id": self.id,
            "name": self.name,
            "state": self.state,
            "note": self.note,
            "chunks_total": c.total,
            "chunks_done": c.done,
            "chunks_failed": c.failed,
            "chunks_running": c.running,
            "rows": c.rows,
            "fully_planned": not c.unplanned_streams,
            "percent": round(percent, 1),
            "rows_per_s": round(rate, 1),
            "eta_s": eta,
            "created_at": _iso(self.created_at),
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
        }

    def _rate(self, now: datetime) -> float:
        if self.started_at is None or self.state != MigrationState.RUNNING:
            return 0.0
        window = min(RATE_WINDOW_S, (now - self.started_at).total_seconds())
        return self.counts.recent_rows / window if window > 0 else 0.0


def _chunk_aggregates(since: datetime, ids: Select[Any]) -> Any:
    """Per migration: its chunks counted by state, rows done, rows done since ``since``."""
    handled = func.coalesce(Chunk.rows_out, 0) + func.coalesce(Chunk.rows_quarantined, 0)
    done = Chunk.state == ChunkState.DONE
    return (
        select(
            Chunk.migration_id.label("migration_id"),
            func.count().label("total"),
            func.sum(case((done, 1), else_=0)).label("done"),
            func.sum(case((Chunk.state == ChunkState.FAILED, 1), else_=0)).label("failed"),
            func.sum(case((Chunk.state == ChunkState.RUNNING, 1), else_=0)).label("running"),
            func.sum(case((done, handled), else_=0)).label("rows"),
            func.sum(case((and_(done, Chunk.finished_at >= since), handled), else_=0)).label(
                "recent"
            ),
        )
        .where(Chunk.migration_id.in_(ids))
        .group_by(Chunk.migration_id)
        .subquery()
    )


def _unplanned(migration_id: Any) -> Any:
    return (
        select(func.count())
        .where(Stream.migration_id == migration_id, Stream.fully_planned.is_(False))
        .scalar_subquery()
    )


def _progress_select(ids: Select[Any], since: datetime) -> Select[Any]:
    agg = _chunk_aggregates(since, ids)
    note = func.coalesce(Migration.error, Migration.waiting_reason)
    return (
        select(
            Migration.id,
            Migration.name,
            Migration.state,
            note,
            Migration.started_at,
            Migration.finished_at,
            Migration.created_at,
            func.coalesce(agg.c.total, 0),
            func.coalesce(agg.c.done, 0),
            func.coalesce(agg.c.failed, 0),
            func.coalesce(agg.c.running, 0),
            func.coalesce(agg.c.rows, 0),
            func.coalesce(agg.c.recent, 0),
            _unplanned(Migration.id),
        )
        .outerjoin(agg, agg.c.migration_id == Migration.id)
        .where(Migration.id.in_(ids))
    )


def _progress_row(row: Any) -> Progress:
    (mid, name, state, note, started, finished, created, *numbers) = row
    total, done, failed, running, rows, recent, unplanned = (int(n or 0) for n in numbers)
    return Progress(
        mid,
        name,
        state,
        note,
        started,
        finished,
        created,
        ChunkCounts(total, done, failed, running, rows, recent, unplanned),
    )


def migrations_page(
    db: StateDB, state: str | None = None, page: int = 1, per_page: int = 25
) -> dict[str, Any]:
    """One page of migrations, newest first, each with its progress; and how many pages."""
    page = max(page, 1)
    now = utcnow()
    ids = select(Migration.id).order_by(Migration.created_at.desc(), Migration.id)
    counted = select(func.count()).select_from(Migration)
    if state:
        ids = ids.where(Migration.state == state)
        counted = counted.where(Migration.state == state)
    ids = ids.limit(per_page).offset((page - 1) * per_page)
    with db.reading() as s:
        total = int(s.scalar(counted) or 0)
        page_ids = list(s.scalars(ids))
        rows = s.execute(
            _progress_select(
                select(Migration.id).where(Migration.id.in_(page_ids)),
                now - timedelta(seconds=RATE_WINDOW_S),
            )
        ).all()
    by_id = {p.id: p for p in map(_progress_row, rows)}
    items = [by_id[i].as_dict(now) for i in page_ids if i in by_id]
    return {
        "items": items,
        "page": page,
        "pages": max(1, -(-total // per_page)),
        "total": total,
        "state": state,
    }


def migration_progress(db: StateDB, migration_id: str) -> dict[str, Any]:
    now = utcnow()
    since = now - timedelta(seconds=RATE_WINDOW_S)
    with db.reading() as s:
        row = s.execute(
            _progress_select(select(Migration.id).where(Migration.id == migration_id), since)
        ).first()
    if row is None:
        raise NotFound(f"no migration {migration_id}")
    return _progress_row(row).as_dict(now)


def chunk_map(db: StateDB, migration_id: str, limit: int = 2000) -> list[dict[str, Any]]:
    """The migration's chunks in order, each with its state, step and worker."""
    with db.reading() as s:
        rows = s.execute(
            select(
                Chunk.id,
                Stream.name,
                Chunk.seq,
                Chunk.state,
                Chunk.step,
                Chunk.worker,
                Chunk.lease_owner,
                Chunk.rows_out,
                Chunk.last_error,
            )
            .join(Stream, Stream.id == Chunk.stream_id)
            .where(Chunk.migration_id == migration_id)
            .order_by(Stream.position, Chunk.seq)
            .limit(limit)
        ).all()
    return [
        {
            "id": cid,
            "stream": stream,
            "seq": seq,
            "state": state,
            "step": step,
            "worker": lease_owner or worker,
            "rows": rows_out,
            "error": error,
        }
        for cid, stream, seq, state, step, worker, lease_owner, rows_out, error in rows
    ]


def list_events(db: StateDB, migration_id: str, limit: int = 200) -> list[dict[str, Any]]:
    """The migration's event log, newest first."""
    with db.reading() as s:
        rows = s.scalars(
            select(Event)
            .where(Event.migration_id == migration_id)
            .order_by(Event.id.desc())
            .limit(limit)
        ).all()
        return [event_view(e) for e in rows]


@dataclass
class Snapshot:
    """What the live updates broadcast: active migrations' progress, workers, live tokens."""

    taken_at: datetime
    migrations: dict[str, dict[str, Any]]
    workers: list[dict[str, Any]]
    live_tokens: set[int]


def _live_statement(now: datetime) -> Any:
    since = now - timedelta(seconds=RATE_WINDOW_S)
    active = select(Migration.id).where(
        or_(
            Migration.state.in_([str(s) for s in ACTIVE_STATES]),
            Migration.updated_at >= now - timedelta(seconds=RECENT_S),
        )
    )
    progress = _progress_select(active, since).add_columns(literal("m").label("kind"))
    nothing = cast(null(), BigInteger)
    no_time = cast(null(), DateTime)
    workers = select(
        Worker.name,
        Worker.version,
        Worker.state,
        cast(null(), Text),
        Worker.started_at,
        Worker.heartbeat_at,
        no_time,
        cast(Worker.in_flight, BigInteger),
        cast(Worker.steps_done, BigInteger),
        nothing,
        nothing,
        nothing,
        nothing,
        nothing,
        literal("w"),
    )
    tokens = select(
        cast(ApiToken.id, String),
        ApiToken.role,
        cast(null(), String),
        cast(null(), Text),
        no_time,
        no_time,
        no_time,
        nothing,
        nothing,
        nothing,
        nothing,
        nothing,
        nothing,
        nothing,
        literal("t"),
    ).where(ApiToken.revoked_at.is_(None))
    return union_all(progress, workers, tokens)


def live_snapshot(db: StateDB, *, stale_after_s: float = LIVE_AFTER_S) -> Snapshot:
    """Everything the live pages show, read in one statement."""
    now = utcnow()
    with db.reading() as s:
        rows = s.execute(_live_statement(now)).all()
    migrations: dict[str, dict[str, Any]] = {}
    workers: list[dict[str, Any]] = []
    tokens: set[int] = set()
    for row in rows:
        kind = row[-1]
        if kind == "m":
            view = _progress_row(row[:-1]).as_dict(now)
            migrations[view["id"]] = view
        elif kind == "w":
            worker = _worker(row, now, stale_after_s)
            if worker["state"] != WorkerState.STOPPED:  # as list_workers shows them
                workers.append(worker)
        else:
            tokens.add(int(row[0]))
    workers.sort(key=lambda w: w["name"])
    return Snapshot(now, migrations, workers, tokens)


def _worker(row: Any, now: datetime, stale_after_s: float) -> dict[str, Any]:
    name, version, state, _, started_at, heartbeat_at, _, in_flight, steps_done = row[:9]
    age = (now - heartbeat_at).total_seconds() if heartbeat_at else None
    if age is not None and age > stale_after_s:
        state = WorkerState.STOPPED
    return {
        "name": name,
        "version": version,
        "state": state,
        "in_flight": int(in_flight or 0),
        "steps_done": int(steps_done or 0),
        "draining": state == WorkerState.DRAINING,
        "started_at": _iso(started_at),
        "last_heartbeat": _iso(heartbeat_at),
        "heartbeat_age_s": None if age is None else round(max(age, 0.0), 1),
    }
