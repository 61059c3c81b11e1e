"""The sweeper: repairs whatever the broker forgot, from what the state DB knows.

It runs inside every worker but works in one at a time, under a lease row in
the state DB (not an advisory lock: pooled connections leak those and SQLite
has none). Each pass it re-publishes chunks whose lease expired, whose
``not_before`` came, or whose message was lost (the broker's epoch key
vanished, or the chunk has been queued for longer than any queue should
take), then advances every active migration, and does the same for the ranges of
every verification under way (:mod:`etl_tasks.verification.sweep`). Last, it sends
due webhook notifications (:mod:`etl_tasks.notifications`) and prunes migrations
finished longer ago than ``BATON_RETENTION_DAYS`` (:mod:`etl_tasks.retention`).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import timedelta

import redis
from sqlalchemy import select

from etl_tasks.advance import advance
from etl_tasks.chunk_lease import needs_message
from etl_tasks.constants import BROKER_EPOCH_KEY, SWEEPER_LEASE
from etl_tasks.metrics import SWEEPER_REPAIRS
from etl_tasks.notifications import deliver_due, enqueue_missing
from etl_tasks.publisher import publish_step
from etl_tasks.retention import prune_expired
from etl_tasks.runtime import Runtime
from etl_tasks.state.db import ROW_LOCK
from etl_tasks.state.enums import MigrationState
from etl_tasks.state.models import Chunk, Migration, NamedLease
from etl_tasks.verification.sweep import sweep_verifications

log = logging.getLogger(__name__)


@dataclass
class SweepReport:
    ran: bool = False
    broker_lost: bool = False
    republished: list[int] = field(default_factory=list)
    migrations: int = 0
    ranges_republished: list[int] = field(default_factory=list)  # verification ranges
    notifications: list[tuple[str, str]] = field(default_factory=list)  # (id, status) sent
    pruned: list[str] = field(default_factory=list)  # migrations retention pruned


def sweep(rt: Runtime) -> SweepReport:
    """One pass, if this worker holds (or takes) the sweeper lease."""
    report = SweepReport()
    epoch = _acquire(rt)
    if epoch is None:
        return report
    report.ran = True
    report.broker_lost = _broker_lost(rt, epoch)
    with rt.db.session() as s:
        active = list(
            s.scalars(
                select(Migration.id).where(
                    Migration.state.in_([MigrationState.PENDING, MigrationState.RUNNING])
                )
            )
        )
    for migration_id in active:
        report.republished += republish_stuck(rt, migration_id, report.broker_lost)
        advance(rt, migration_id)
    report.migrations = len(active)
    report.ranges_republished = sweep_verifications(rt, report.broker_lost)
    SWEEPER_REPAIRS.labels("verification_range").inc(len(report.ranges_republished))
    if report.ranges_republished:
        log.info("sweeper re-published %d verification ranges", len(report.ranges_republished))
    enqueue_missing(rt)
    report.notifications = deliver_due(rt)
    report.pruned = prune_expired(rt)
    if report.republished or report.broker_lost:
        log.info(
            "sweeper re-published %d chunks (broker lost: %s)",
            len(report.republished),
            report.broker_lost,
        )
    return report


def _acquire(rt: Runtime) -> str | None:
    """Take or renew the sweeper lease; return the broker epoch it last saw ('' if none)."""
    ttl = timedelta(seconds=max(3 * rt.settings.sweep_interval_s, 10))
    with rt.db.session() as s:
        now = rt.db.now(s)
        lease = s.get(NamedLease, SWEEPER_LEASE, with_for_update=ROW_LOCK)
        if lease is None:
            lease = NamedLease(name=SWEEPER_LEASE, token=0, data={})
            s.add(lease)
        elif (
            lease.owner not in (None, rt.worker_name)
            and lease.expires_at
            and lease.expires_at > now
        ):
            return None
        if lease.owner != rt.worker_name:
            lease.token += 1
        lease.owner = rt.worker_name
        lease.expires_at = now + ttl
        return str((lease.data or {}).get("epoch", ""))


def _broker_lost(rt: Runtime, known: str) -> bool:
    """Whether the broker restarted empty since the last pass (its epoch key vanished)."""
    client = rt.broker_redis()
    if client is None:
        return False
    key = rt.settings.key_prefix + BROKER_EPOCH_KEY
    try:
        client.set(key, uuid.uuid4().hex, nx=True)  # a new epoch only where none is
        current = client.get(key)
    except redis.RedisError as exc:
        log.warning("broker unreachable: %s", exc)
        return False
    value = current.decode() if isinstance(current, bytes) else str(current)
    if value == known:
        return False
    with rt.db.session() as s:
        lease = s.get(NamedLease, SWEEPER_LEASE)
        if lease is not None:
            lease.data = {**(lease.data or {}), "epoch": value}
    return bool(known)


def republish_stuck(rt: Runtime, migration_id: str, broker_lost: bool) -> list[int]:
    """Re-publish the current step of every chunk that no live message or lease covers."""
    with rt.db.session() as s:
        now = rt.db.now(s)
        stale = now - timedelta(seconds=rt.settings.requeue_after_s)
        chunks = list(
            s.scalars(
                select(Chunk)
                .where(
                    Chunk.migration_id == migration_id,
                    needs_message(Chunk, now, stale, broker_lost),
                )
                .with_for_update(skip_locked=True, key_share=True)  # as ROW_LOCK
            )
        )
        kinds = [_repair_kind(chunk, broker_lost) for chunk in chunks]
        for chunk in chunks:
            chunk.queued_at = now
        todo = [(c.id, c.step) for c in chunks]
    for kind in kinds:  # counted once the pass is committed
        SWEEPER_REPAIRS.labels(kind).inc()
    for chunk_id, step in todo:
        publish_step(rt.publisher, step, chunk_id)
    return [chunk_id for chunk_id, _ in todo]


def _repair_kind(chunk: Chunk, broker_lost: bool) -> str:
    """Why the chunk needs its message again (see ``needs_message``)."""
    if chunk.queued_at is not None:
        return "broker_lost" if broker_lost else "lost_message"
    return "lease_expired" if chunk.lease_owner is not None else "retry_due"
