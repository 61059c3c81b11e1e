"""Read models for the API and CLI: migrations, streams and chunks as plain dicts.

Counts are derived from chunks and the quarantine table, never stored
counters, so they are right after any number of redeliveries.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from etl_tasks.boundary.http_urls import redact_http
from etl_tasks.connectors.sql.engines import redact
from etl_tasks.errors import NotFound
from etl_tasks.progress import Figures, figures_of, progress_select
from etl_tasks.spec import endpoint_kind
from etl_tasks.state.db import StateDB
from etl_tasks.state.enums import ChunkState, MigrationState, QuarantineStatus
from etl_tasks.state.models import (
    Chunk,
    HttpPart,
    Migration,
    QuarantinedRow,
    Stream,
    Verification,
)
from etl_tasks.verification.report import report_url


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat() + "Z"


def _endpoint(spec: dict[str, Any], which: str) -> dict[str, Any]:
    ep = spec.get(which, {})
    if ep.get("sealed"):
        return {"sealed": True, "kind": endpoint_kind(ep)}
    if ep.get("url"):
        return {"url": redact(ep["url"])}
    if isinstance(ep.get("http"), dict):  # credentials are named by variable: none to mask
        http = dict(ep["http"])
        for name in ("url", "check_url"):
            if isinstance(http.get(name), str):
                http[name] = redact_http(http[name])
        return {"http": http}
    return {"url_env": ep.get("url_env", "")}


def _delivery(spec: dict[str, Any]) -> str | None:
    """How an HTTP target delivers rows (``at_least_once`` when the spec says the API
    cannot de-duplicate); ``None`` for a transactional target, which is exactly once, and
    for a sealed spec."""
    http = spec.get("target", {}).get("http")
    if not isinstance(http, dict):  # not HTTP, or sealed (its settings are not shown)
        return None
    return str(http.get("delivery") or "exactly_once")


def _stream_counts(s: Session, migration_id: str) -> dict[int, dict[str, int]]:
    rows = s.execute(
        select(
            Chunk.stream_id, Chunk.state, func.count(), func.coalesce(func.sum(Chunk.rows_out), 0)
        )
        .where(Chunk.migration_id == migration_id)
        .group_by(Chunk.stream_id, Chunk.state)
    ).all()
    out: dict[int, dict[str, int]] = {}
    for stream_id, state, n, rows_out in rows:
        c = out.setdefault(stream_id, {"total": 0, "done": 0, "failed": 0, "rows": 0})
        c["total"] += n
        if state == ChunkState.DONE:
            c["done"] += n
            c["rows"] += int(rows_out or 0)
        elif state == ChunkState.FAILED:
            c["failed"] += n
    return out


def _quarantine_counts(s: Session, migration_id: str, status: str | None = None) -> dict[int, int]:
    """Set-aside rows per stream: quarantined for good (``status`` None), or in ``status``."""
    by_status = (
        QuarantinedRow.status.is_(None) if status is None else QuarantinedRow.status == status
    )
    rows = s.execute(
        select(QuarantinedRow.stream_id, func.count())
        .where(QuarantinedRow.migration_id == migration_id, by_status)
        .group_by(QuarantinedRow.stream_id)
    ).all()
    return {sid: n for sid, n in rows}


def _sent_again(s: Session, migration_id: str) -> dict[str, int]:
    """Per stream of an HTTP target, rows sent again after a send of theirs got no answer
    (a dropped connection, a timeout): the API may have applied them twice, unless it
    honours Idempotency-Key (``exactly_once``)."""
    rows = s.execute(
        select(HttpPart.stream, func.sum(HttpPart.rows * HttpPart.unanswered))
        .where(HttpPart.migration_id == migration_id, HttpPart.unanswered > 0)
        .group_by(HttpPart.stream)
    ).all()
    return {str(name): int(n or 0) for name, n in rows}


def migration_view(db: StateDB, migration_id: str) -> dict[str, Any]:
    with db.reading() as s:
        mig = s.get(Migration, migration_id)
        if mig is None:
            raise NotFound(f"no migration {migration_id}")
        now = db.now(s)
        streams = list(
            s.scalars(
                select(Stream).where(Stream.migration_id == migration_id).order_by(Stream.position)
            )
        )
        counts = _stream_counts(s, migration_id)
        bad = _quarantine_counts(s, migration_id)
        gone = _quarantine_counts(s, migration_id, QuarantineStatus.GONE)
        verification = _verification_link(s, migration_id)
        again = _sent_again(s, migration_id) if _delivery(mig.spec) else None
        ids = select(Migration.id).where(Migration.id == migration_id)
        figures = figures_of(list(s.execute(progress_select(ids, now)).all()))
    items = []
    for st in streams:
        c = counts.get(st.id, {"total": 0, "done": 0, "failed": 0, "rows": 0})
        items.append(
            {
                "name": st.name,
                "state": st.state,
                "rows_loaded": c["rows"],
                "rows_quarantined": bad.get(st.id, 0),
                "rows_gone": gone.get(st.id, 0),  # read again by a replay: not in the source
                "chunks_total": c["total"],
                "chunks_done": c["done"],
                "chunks_failed": c["failed"],
                "fully_planned": st.fully_planned,
                "rows_estimate": (
                    st.rows_estimate if st.rows_estimate is None or st.rows_estimate >= 0 else None
                ),
                "started_at": _iso(st.started_at),
                "finished_at": _iso(st.finished_at),
                # What retention kept, once it removed the chunks (etl_tasks.retention).
                **(mig.summary or {}).get("streams", {}).get(st.name, {}),
            }
        )
        if again is not None:
            items[-1]["rows_sent_again"] = again.get(st.name, 0)
    view = migration_summary(mig)
    if again is not None:  # at least once: a row sent again may have arrived twice
        view["duplicates_possible"] = view["delivery"] == "at_least_once" and any(again.values())
    if mig.state == MigrationState.RUNNING:
        shortage = _worker_shortage(db, mig.spec)
        if shortage and (shortage.startswith(UNSUPPORTED) or not view["waiting_reason"]):
            # No live worker has its endpoint kind: the cause of any other wait it reports.
            view["waiting_reason"] = shortage
    view["streams"] = items
    view.update(_progress(items, figures[migration_id][1], now))
    view["verification"] = verification
    view["pruned"] = _pruned(mig)
    return view


def _pruned(mig: Migration) -> dict[str, Any] | None:
    """Whether retention removed the migration's details, when, and after how long."""
    if mig.pruned_at is None:
        return None
    days = (mig.summary or {}).get("retention_days")
    return {
        "at": _iso(mig.pruned_at),
        "after_days": days,
        "message": f"details pruned after {days:g} days: chunks, events and quarantined "
        "rows are gone; the counts are kept"
        if isinstance(days, (int, float))
        else "details pruned: the counts are kept",
    }


def _verification_link(s: Session, migration_id: str) -> dict[str, Any] | None:
    """The newest verification's state, and where its report is; ``None``: never verified."""
    latest = s.execute(
        select(Verification.id, Verification.state)
        .where(Verification.migration_id == migration_id)
        .order_by(Verification.id.desc())
        .limit(1)
    ).first()
    if latest is None:
        return None
    return {"id": latest.id, "state": latest.state, "report_url": report_url(migration_id)}


UNSUPPORTED = "no worker supports"


def _worker_shortage(db: StateDB, spec: dict[str, Any]) -> str | None:
    """Why no worker can move the migration on: none runs, or none supports its endpoints
    (a worker of an older version, during a rolling deploy)."""
    from etl_tasks.workers import list_workers, missing_kinds

    if not list_workers(db):
        return "no worker is running"
    missing = missing_kinds(db, spec)
    return f"{UNSUPPORTED} {', '.join(missing)}" if missing else None


def migration_summary(mig: Migration) -> dict[str, Any]:
    return {
        "id": mig.id,
        "name": mig.name,
        "state": mig.state,
        "waiting_reason": mig.waiting_reason,
        "error": mig.error,
        "source": _endpoint(mig.spec, "source"),
        "target": _endpoint(mig.spec, "target"),
        "delivery": _delivery(mig.spec),
        "created_at": _iso(mig.created_at),
        "started_at": _iso(mig.started_at),
        "finished_at": _iso(mig.finished_at),
        "updated_at": _iso(mig.updated_at),
    }


def _progress(streams: list[dict[str, Any]], figures: Figures, now: datetime) -> dict[str, Any]:
    """The migration's totals and its progress (:mod:`etl_tasks.progress`, as the dashboard
    and the CLI show it)."""
    shown = figures.as_dict(now)
    return {
        # Summed from the streams: a pruned migration's come from its summary (no chunks).
        **{
            name: sum(st[name] for st in streams)
            for name in (
                "rows_loaded",
                "rows_quarantined",
                "rows_gone",
                "chunks_total",
                "chunks_done",
            )
        },
        **{
            name: shown[name]
            for name in (
                "fully_planned",
                "rows_expected",
                "percent",
                "elapsed_s",
                "paused_s",
                "rows_per_s",
                "throughput_rows_per_s",
                "eta_s",
            )
        },
    }


def chunk_view(c: Chunk, stream: str) -> dict[str, Any]:
    return {
        "id": c.id,
        "stream": stream,
        "seq": c.seq,
        "state": c.state,
        "step": c.step,
        "lower": c.lower,
        "upper": c.upper,
        "attempts": c.attempts,
        "retries": c.retries,
        "worker": c.worker,
        "lease_owner": c.lease_owner,
        "rows_in": c.rows_in,
        "rows_out": c.rows_out,
        "rows_quarantined": c.rows_quarantined,
        "last_error": c.last_error,
        "created_at": _iso(c.created_at),
        "started_at": _iso(c.started_at),
        "finished_at": _iso(c.finished_at),
        "timings_ms": (timings := c.step_timings()),
        "extract_ms": timings.get("extract"),
        "transform_ms": timings.get("transform"),
        "load_ms": timings.get("load"),
    }


def list_chunks(
    db: StateDB, migration_id: str, state: str | None = None, limit: int = 1000
) -> list[dict[str, Any]]:
    with db.reading() as s:
        if s.get(Migration, migration_id) is None:
            raise NotFound(f"no migration {migration_id}")
        q = (
            select(Chunk, Stream.name)
            .join(Stream, Stream.id == Chunk.stream_id)
            .where(Chunk.migration_id == migration_id)
            .order_by(Chunk.id)
            .limit(limit)
        )
        if state:
            q = q.where(Chunk.state == state)
        return [chunk_view(c, name) for c, name in s.execute(q).all()]


def list_quarantine(db: StateDB, migration_id: str, limit: int = 1000) -> list[dict[str, Any]]:
    with db.reading() as s:
        q = (
            select(QuarantinedRow, Stream.name)
            .join(Stream, Stream.id == QuarantinedRow.stream_id)
            .where(QuarantinedRow.migration_id == migration_id)
            .order_by(QuarantinedRow.id)
            .limit(limit)
        )
        return [
            {
                "stream": name,
                "chunk_id": r.chunk_id,
                "key": r.key,
                "reason": r.reason,
                "row": r.row,
                "status": r.status or QuarantineStatus.QUARANTINED,
            }
            for r, name in s.execute(q).all()
        ]
