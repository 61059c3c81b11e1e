"""Asking for a migration's advance once, however many of its chunks finish meanwhile.

A finished load queues the migration's next ready chunks itself
(:mod:`etl_tasks.ready_chunks`), plans its stream's next ones when they run low, and
asks for an advance of its migration (``baton.plan``) when there was nothing left to
plan there: streams that come next are prepared there, and streams and the migration
are settled. An advance costs the state DB several transactions,
so a migration finishing dozens of chunks a second would spend most of its state DB
on advances that each find the one before had done the work. A flag in
the staging Redis (``plan-due:{id}``, set with NX and a short expiry) marks an advance
as already on its way, and a load that finds it set sends none: :func:`advance` clears
the flag before it reads anything, so the advance on its way sees every chunk that
finished before it started, and a chunk that finishes after the clear sends a new one.

A lost message or a lost flag costs nothing but time: the flag expires after
:data:`PLAN_DUE_S`, the next finished chunk asks again, and the sweeper advances every
running migration anyway. A staging Redis that does not answer means the request is
sent regardless.
"""

from __future__ import annotations

import redis

from etl_tasks.constants import PLAN_DUE_KEY
from etl_tasks.publisher import publish_plan
from etl_tasks.runtime import Runtime

PLAN_DUE_S = 2.0  # an advance asked for and not started by then may be asked for again


def _key(rt: Runtime, migration_id: str) -> str:
    return rt.settings.key_prefix + PLAN_DUE_KEY.format(migration_id=migration_id)


def request_plan(rt: Runtime, migration_id: str) -> bool:
    """Send an advance of the migration unless one is on its way; say whether one was sent."""
    try:
        fresh = bool(
            rt.staging.client.set(_key(rt, migration_id), b"1", nx=True, px=int(PLAN_DUE_S * 1000))
        )
    except redis.RedisError:
        fresh = True
    if fresh:
        publish_plan(rt.publisher, migration_id)
    return fresh


def plan_started(rt: Runtime, migration_id: str) -> None:
    """An advance is starting: the next chunk to finish asks for another one."""
    try:
        rt.staging.client.delete(_key(rt, migration_id))
    except redis.RedisError:
        pass  # the flag expires on its own
