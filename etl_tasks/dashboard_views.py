"""Read models for the operators' dashboard: progress, the chunk map, the event log.

What the pages show is derived like :mod:`etl_tasks.views`, from chunks and
events, never stored counters; progress (percent, rows/s over a recent window,
ETA) is :mod:`etl_tasks.progress`, the same figures the API and the CLI show.

:func:`live_snapshot` reads everything the live updates need in **one**
statement, so the process that streams them costs the state DB one query per
poll whatever the number of open pages.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    String,
    Text,
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
from etl_tasks.progress import figures_of, progress_select
from etl_tasks.state.db import StateDB
from etl_tasks.state.enums import MigrationState, WorkerState
from etl_tasks.state.models import ApiToken, Chunk, Event, Migration, Stream, Worker
from etl_tasks.views import _iso
from etl_tasks.workers import LIVE_AFTER_S

ACTIVE_STATES = (MigrationState.PENDING, MigrationState.RUNNING, MigrationState.PAUSED)
RECENT_S = 600.0  # a finished migration stays in the live snapshot this long


def utcnow() -> datetime:
    """Naive UTC, as the state DB stores times."""
    return datetime.now(UTC).replace(tzinfo=None)


def _progress_views(rows: list[Any], now: datetime) -> dict[str, dict[str, Any]]:
    """:func:`etl_tasks.progress.progress_select`'s rows as the pages show each migration."""
    views: dict[str, dict[str, Any]] = {}
    for head, figures in figures_of(rows).values():
        mid, name, state, note, started, finished, created = head
        views[mid] = {
            "id": mid,
            "name": name,
            "state": state,
            "note": note,
            **figures.as_dict(now),
            "created_at": _iso(created),
            "started_at": _iso(started),
            "finished_at": _iso(finished),
        }
    return views


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
            progress_select(select(Migration.id).where(Migration.id.in_(page_ids)), now)
        ).all()
    by_id = _progress_views(list(rows), now)
    items = [by_id[i] for i in page_ids if i in by_id]
    return {
        "items": items,
        "page": page,
        "pages": max(1, -(-total // per_page)),
        "total": total,
        "state": state,
    }


def migration_progress(db: StateDB, migration_id: str) -> dict[str, Any]:
    now = utcnow()
    with db.reading() as s:
        rows = s.execute(
            progress_select(select(Migration.id).where(Migration.id == migration_id), now)
        ).all()
    views = _progress_views(list(rows), now)
    if migration_id not in views:
        raise NotFound(f"no migration {migration_id}")
    return views[migration_id]


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


def _padded(template: Select[Any], *values: Any) -> list[Any]:
    """``values``, then a typed null for each further column of ``template``: a row of
    another kind for the live statement's union."""
    types = [c.type for c in template.selected_columns]
    return [*values, *(cast(null(), t) for t in types[len(values) :])]


def _live_statement(now: datetime) -> Any:
    active = select(Migration.id).where(
        or_(
            Migration.state.in_([str(s) for s in ACTIVE_STATES]),
            Migration.updated_at >= now - timedelta(seconds=RECENT_S),
        )
    )
    progress = progress_select(active, now)
    no_time = cast(null(), DateTime)
    workers = select(
        *_padded(
            progress,
            Worker.name,
            Worker.version,
            Worker.state,
            cast(null(), Text),
            Worker.started_at,
            Worker.heartbeat_at,
            no_time,
            cast(Worker.in_flight, BigInteger),
            cast(Worker.steps_done, BigInteger),
        ),
        literal("w"),
    )
    tokens = select(
        *_padded(progress, cast(ApiToken.id, String), ApiToken.role),
        literal("t"),
    ).where(ApiToken.revoked_at.is_(None))
    return union_all(progress.add_columns(literal("m").label("kind")), workers, tokens)


def live_snapshot(db: StateDB, *, stale_after_s: float = LIVE_AFTER_S) -> Snapshot:
    """Everything the live pages show, read in one statement."""
    now = utcnow()
    with db.reading() as s:
        rows = s.execute(_live_statement(now)).all()
    progress_rows: list[Any] = []
    workers: list[dict[str, Any]] = []
    tokens: set[int] = set()
    for row in rows:
        kind = row[-1]
        if kind == "m":
            progress_rows.append(row[:-1])
        elif kind == "w":
            worker = _worker(row, now, stale_after_s)
            if worker["state"] != WorkerState.STOPPED:  # as list_workers shows them
                workers.append(worker)
        else:
            tokens.add(int(row[0]))
    workers.sort(key=lambda w: w["name"])
    return Snapshot(now, _progress_views(progress_rows, now), workers, tokens)


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
