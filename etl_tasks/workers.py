"""The workers' registry in the state DB: who is alive, draining, and busy with what."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from etl_tasks.boundary.sealing import CAPABILITY as SEALED_SPECS
from etl_tasks.connectors import registry
from etl_tasks.constants import CONSUMED_SCHEMAS
from etl_tasks.errors import NotFound
from etl_tasks.spec import endpoint_kind
from etl_tasks.state.db import StateDB
from etl_tasks.state.enums import WorkerState
from etl_tasks.state.models import Worker


def capabilities() -> dict[str, object]:
    """What this version of a worker can do, advertised in its registry row so the API only
    asks for what every live worker supports (versions N and N+1 side by side). Endpoint
    kinds are the connectors this process has, plugins included."""
    kinds = registry.kinds()
    return {
        SEALED_SPECS: 1,
        "endpoint_kinds": sorted(set(kinds["sources"]) | set(kinds["targets"])),
        "source_kinds": kinds["sources"],
        "target_kinds": kinds["targets"],
        "message_schemas": list(CONSUMED_SCHEMAS),
    }


LIVE_AFTER_S = 60.0  # a worker silent for longer is reported stopped


@dataclass(frozen=True)
class WorkerInfo:
    name: str
    version: str
    host: str
    pid: int
    probe_url: str | None


def heartbeat(
    db: StateDB,
    info: WorkerInfo,
    *,
    state: str,
    in_flight: int,
    steps_done: int,
    first: bool = False,
) -> bool:
    """Insert or refresh this worker's row (by the DB's clock); True when a drain of it has
    been asked for (:func:`request_drain`). ``first``: this process's first beat, which
    forgets a request made of an earlier process of the same name."""
    with db.session() as s:
        now = db.now(s)
        row = s.get(Worker, info.name)
        if row is None:
            row = Worker(name=info.name, started_at=now)
            s.add(row)
        if first:
            row.drain_requested_at = None
        row.version = info.version
        row.host = info.host
        row.pid = info.pid
        row.probe_url = info.probe_url
        row.state = state
        row.in_flight = in_flight
        row.steps_done = steps_done
        row.heartbeat_at = now
        row.capabilities = capabilities()
        return row.drain_requested_at is not None


def request_drain(db: StateDB, name: str) -> dict[str, object]:
    """Ask a live worker to drain and leave: its next heartbeat stops it taking steps, and
    once its steps in flight have finished it shuts down warm. Works wherever the worker
    runs, as long as it reaches the state DB (its probe may listen on loopback only)."""
    with db.session() as s:
        now = db.now(s)
        row = s.get(Worker, name)
        live = row is not None and row.state != WorkerState.STOPPED
        if row is None or not live or now - row.heartbeat_at > timedelta(seconds=LIVE_AFTER_S):
            raise NotFound(f"no live worker named {name!r}")
        row.drain_requested_at = row.drain_requested_at or now
    return {"name": name, "drain_requested_at": now.isoformat() + "Z"}


def mark_stopped(db: StateDB, name: str, steps_done: int) -> None:
    with db.session() as s:
        row = s.get(Worker, name)
        if row is not None:
            row.state = WorkerState.STOPPED
            row.in_flight = 0
            row.steps_done = steps_done
            row.heartbeat_at = db.now(s)


def missing_kinds(db: StateDB, spec: dict[str, Any]) -> list[str]:
    """The migration's endpoint kinds that no live worker advertises (``http targets``)."""
    needed = {(which, endpoint_kind(spec.get(which, {}))) for which in ("source", "target")}
    with db.reading() as s:
        now = db.now(s)
        rows = list(s.scalars(select(Worker).where(Worker.state != WorkerState.STOPPED)))
    live = [w for w in rows if now - w.heartbeat_at <= timedelta(seconds=LIVE_AFTER_S)]
    offered = {
        (which, kind) for w in live for which in ("source", "target") for kind in _kinds(w, which)
    }
    return sorted(f"{kind} {which}s" for which, kind in needed if (which, kind) not in offered)


def _kinds(worker: Worker, which: str) -> list[str]:
    """What a worker advertises for one side (an HTTP connector is a target only); one
    from before sides were advertised offers its kinds on both, and one from before
    advertising existed moves SQL only."""
    caps = worker.capabilities or {}
    kinds = caps.get(f"{which}_kinds", caps.get("endpoint_kinds"))
    return list(kinds) if isinstance(kinds, list) else ["sql"]


def all_live_support(db: StateDB, capability: str) -> bool:
    """Whether every live worker advertises ``capability`` (true when none is live)."""
    with db.reading() as s:
        now = db.now(s)
        rows = list(s.scalars(select(Worker).where(Worker.state != WorkerState.STOPPED)))
    live = [w for w in rows if now - w.heartbeat_at <= timedelta(seconds=LIVE_AFTER_S)]
    return all((w.capabilities or {}).get(capability) for w in live)


def list_workers(
    db: StateDB, *, include_stopped: bool = False, stale_after_s: float = LIVE_AFTER_S
) -> list[dict[str, object]]:
    """Workers seen recently, newest first; a silent worker is reported as ``stopped``."""
    with db.reading() as s:
        now = db.now(s)
        rows = list(s.scalars(select(Worker).order_by(Worker.started_at.desc())))
    out: list[dict[str, object]] = []
    for w in rows:
        state = w.state
        if state != WorkerState.STOPPED and now - w.heartbeat_at > timedelta(seconds=stale_after_s):
            state = WorkerState.STOPPED
        if state == WorkerState.STOPPED and not include_stopped:
            continue
        out.append(
            {
                "name": w.name,
                "version": w.version,
                "host": w.host,
                "pid": w.pid,
                "state": state,
                "in_flight": w.in_flight,
                "steps_done": w.steps_done,
                "probe_url": w.probe_url,
                "capabilities": w.capabilities or {},
                "started_at": w.started_at.isoformat() + "Z",
                "last_heartbeat": w.heartbeat_at.isoformat() + "Z",
                "drain_requested_at": (
                    None if w.drain_requested_at is None else w.drain_requested_at.isoformat() + "Z"
                ),
            }
        )
    return out
