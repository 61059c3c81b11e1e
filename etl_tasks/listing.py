"""The lists the API and the CLI page through: migrations, chunks, quarantined rows, events.

Each answers a :class:`~etl_tasks.paging.Page`: the items after a cursor, at most
``limit`` of them, the total the filters match and the cursor of the next page.
Quarantined rows come with their values as plain JSON (see
:func:`etl_tasks.codec.plain_value`); :func:`quarantined_rows` streams them all,
a batch at a time, for downloads.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Select, and_, func, or_, select
from sqlalchemy.orm import Session

from etl_tasks.codec import plain_key, plain_value
from etl_tasks.errors import BadQuery, NotFound
from etl_tasks.paging import Page, decode_cursor, encode_cursor, id_cursor
from etl_tasks.state.db import StateDB
from etl_tasks.state.enums import QuarantineStatus
from etl_tasks.state.models import Chunk, Event, Migration, QuarantinedRow, Stream
from etl_tasks.views import _iso, chunk_view, migration_summary

DOWNLOAD_BATCH = 500  # quarantined rows read per query while a download streams


def _count(s: Session, q: Select[*tuple[Any, ...]]) -> int:
    return int(s.scalar(select(func.count()).select_from(q.order_by(None).subquery())) or 0)


def _require_migration(s: Session, migration_id: str) -> None:
    if s.get(Migration, migration_id) is None:
        raise NotFound(f"no migration {migration_id}")


def migrations_page(
    db: StateDB,
    *,
    state: str | None = None,
    prefix: str | None = None,
    limit: int,
    cursor: str | None = None,
) -> Page:
    """Migrations, newest first; ``prefix``: only ids starting with it (a CLI's short id)."""
    after = decode_cursor(cursor, 2)
    q = select(Migration)
    if state:
        q = q.where(Migration.state == state)
    if prefix:
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        q = q.where(Migration.id.like(f"{escaped}%", escape="\\"))
    with db.reading() as s:
        total = _count(s, q)
        if after is not None:
            at, last_id = _cursor_time(after[0]), after[1]
            q = q.where(
                or_(
                    Migration.created_at < at,
                    and_(Migration.created_at == at, Migration.id > last_id),
                )
            )
        rows = list(
            s.scalars(q.order_by(Migration.created_at.desc(), Migration.id).limit(limit + 1))
        )
    more = len(rows) > limit
    rows = rows[:limit]
    nxt = encode_cursor(rows[-1].created_at.isoformat(), rows[-1].id) if more else None
    return Page([migration_summary(m) for m in rows], total, nxt)


def _cursor_time(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise BadQuery("cursor must be the 'next' of a previous page") from None


def _id_page(items: list[Any], limit: int, id_of: Any) -> tuple[list[Any], str | None]:
    more = len(items) > limit
    items = items[:limit]
    return items, (str(id_of(items[-1])) if more else None)


def chunks_page(
    db: StateDB, migration_id: str, *, state: str | None, limit: int, cursor: str | None
) -> Page:
    """A migration's chunks, oldest first."""
    after = id_cursor(cursor)
    q = (
        select(Chunk, Stream.name)
        .join(Stream, Stream.id == Chunk.stream_id)
        .where(Chunk.migration_id == migration_id)
    )
    if state:
        q = q.where(Chunk.state == state)
    with db.reading() as s:
        _require_migration(s, migration_id)
        total = _count(s, q)
        if after is not None:
            q = q.where(Chunk.id > after)
        rows = list(s.execute(q.order_by(Chunk.id).limit(limit + 1)).all())
    rows, nxt = _id_page(rows, limit, lambda r: r[0].id)
    return Page([chunk_view(c, name) for c, name in rows], total, nxt)


def events_page(db: StateDB, migration_id: str, *, limit: int, cursor: str | None) -> Page:
    """A migration's events, oldest first (newest last), each with who asked for it."""
    after = id_cursor(cursor)
    q = select(Event).where(Event.migration_id == migration_id)
    with db.reading() as s:
        _require_migration(s, migration_id)
        total = _count(s, q)
        if after is not None:
            q = q.where(Event.id > after)
        rows = list(s.scalars(q.order_by(Event.id).limit(limit + 1)))
    rows, nxt = _id_page(rows, limit, lambda e: e.id)
    return Page([event_view(e) for e in rows], total, nxt)


def event_view(e: Event) -> dict[str, Any]:
    return {
        "id": e.id,
        "at": _iso(e.at),
        "kind": e.kind,
        "message": e.message,
        "actor": e.actor,
        "chunk_id": e.chunk_id,
    }


def _quarantine_query(migration_id: str) -> Select[QuarantinedRow, str]:
    return (
        select(QuarantinedRow, Stream.name)
        .join(Stream, Stream.id == QuarantinedRow.stream_id)
        .where(QuarantinedRow.migration_id == migration_id)
    )


def quarantine_page(db: StateDB, migration_id: str, *, limit: int, cursor: str | None) -> Page:
    """A migration's quarantined rows, in the order they were set aside, values plain."""
    after = id_cursor(cursor)
    q = _quarantine_query(migration_id)
    with db.reading() as s:
        _require_migration(s, migration_id)
        total = _count(s, q)
        if after is not None:
            q = q.where(QuarantinedRow.id > after)
        rows = list(s.execute(q.order_by(QuarantinedRow.id).limit(limit + 1)).all())
    rows, nxt = _id_page(rows, limit, lambda r: r[0].id)
    return Page([quarantined_view(r, name) for r, name in rows], total, nxt)


def quarantined_rows(db: StateDB, migration_id: str) -> Iterator[dict[str, Any]]:
    """Every quarantined row of a migration, values plain, read a batch at a time (each
    batch in a short transaction of its own: a slow download holds no snapshot open).

    An unknown migration raises :class:`NotFound` here, before the first row is asked for.
    """
    with db.reading() as s:
        _require_migration(s, migration_id)
    return _batches(db, migration_id)


def _batches(db: StateDB, migration_id: str) -> Iterator[dict[str, Any]]:
    after = 0
    while True:
        with db.reading() as s:
            q = _quarantine_query(migration_id).where(QuarantinedRow.id > after)
            rows = list(s.execute(q.order_by(QuarantinedRow.id).limit(DOWNLOAD_BATCH)).all())
        for r, name in rows:
            yield quarantined_view(r, name)
        if len(rows) < DOWNLOAD_BATCH:
            return
        after = rows[-1][0].id


def quarantined_view(r: QuarantinedRow, stream: str) -> dict[str, Any]:
    try:
        key_values: list[Any] | None = plain_key(r.key)
    except (orjson.JSONDecodeError, TypeError):
        key_values = None
    return {
        "id": r.id,
        "stream": stream,
        "chunk_id": r.chunk_id,
        "key": r.key,
        "key_values": key_values,
        "reason": r.reason,
        "row": None if r.row is None else {c: plain_value(v) for c, v in r.row.items()},
        "status": r.status or QuarantineStatus.QUARANTINED,
    }
