"""The faults: each breaks one part of a running system the way production does.

A fault acts on a :class:`Lab` (the harness's services and workers) and returns a
:class:`FaultRecord` saying what it hit; the runner then measures how long the
migration took to move again. Kills pick a worker that holds a chunk lease, so a
step is really lost in flight, and every killed worker is replaced at once, so the
worker count stays up as an orchestrator would keep it.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import exc as sa_exc
from sqlalchemy import select

from etl_tasks.settings import Settings
from etl_tasks.state.db import StateDB
from etl_tasks.state.enums import ChunkState
from etl_tasks.state.models import Chunk
from ops.chaos.services import OwnPostgres, OwnRedis, WorkerProcess, Workers

#: How long a kill waits for a worker to hold a lease before it strikes anyway.
LEASE_WAIT_S = 20.0

Lease = tuple[str, int, str]  # (owner, chunk id, step)


@dataclass
class Lab:
    """What faults act on: this run's broker, state DB, target server and workers."""

    settings: Settings
    redis: OwnRedis
    state_pg: OwnPostgres
    target_pg: OwnPostgres
    workers: Workers
    db: StateDB


@dataclass
class FaultRecord:
    """One injected fault. Times are ``time.monotonic()``; recovery is filled in later."""

    kind: str
    started_at: float
    detail: str
    ended_at: float = 0.0
    exit_codes: list[int] = field(default_factory=list)  # of the workers sent SIGTERM
    recovery_s: float | None = None


Fault = Callable[[Lab, random.Random], FaultRecord]


def held_leases(lab: Lab, owners: set[str] | None = None, step: str | None = None) -> list[Lease]:
    """Chunks whose step (``step``, if given) a live worker (of ``owners``) is running now."""
    live = owners if owners is not None else {w.name for w in lab.workers.live}
    with lab.db.reading() as s:
        now = lab.db.now(s)
        rows = s.execute(
            select(Chunk.lease_owner, Chunk.id, Chunk.step).where(
                Chunk.state == ChunkState.RUNNING,
                Chunk.lease_owner.is_not(None),
                Chunk.lease_expires_at > now,
            )
        ).all()
    return [(str(o), int(i), str(st)) for o, i, st in rows if o in live and step in (None, st)]


def wait_for_leases(
    lab: Lab, owners: set[str] | None = None, step: str | None = None
) -> list[Lease]:
    """Poll until some worker holds a lease (empty after :data:`LEASE_WAIT_S`)."""
    deadline = time.monotonic() + LEASE_WAIT_S
    while time.monotonic() < deadline:
        try:
            held = held_leases(lab, owners, step)
        except sa_exc.SQLAlchemyError:
            held = []
        if held:
            return held
        time.sleep(0.05)
    return []


def describe(leases: list[Lease]) -> str:
    """``chunk 41 load, chunk 42 extract``, or that nothing was in hand."""
    shown = ", ".join(f"chunk {c} {step}" for _, c, step in leases[:2])
    more = f" and {len(leases) - 2} more" if len(leases) > 2 else ""
    return shown + more or "no step in hand"


def rolling_deploy(lab: Lab, rng: random.Random) -> FaultRecord:
    """New workers up and ready, then each old one SIGTERMed (warm shutdown) in turn."""
    lab.workers.wait_ready()
    started = time.monotonic()
    old = list(lab.workers.live)
    for w in old:
        lab.workers.start(prefork=w.prefork)
    lab.workers.wait_ready()
    # A worker that died on its own meanwhile (kombu, after a broker restart) is not sent
    # SIGTERM: the run notes and replaces it like any worker that exits by itself.
    gone = [w for w in old if w.proc.poll() is not None]
    stopped = [lab.workers.terminate(w) for w in old if w not in gone]
    codes = [code for code, _ in stopped]
    detail = (
        f"{len(stopped)} workers replaced, SIGTERM exits {'/'.join(map(str, codes))} "
        f"in {'/'.join(f'{s:.1f}' for _, s in stopped)} s"
        + (f" ({len(gone)} had already exited by itself)" if gone else "")
    )
    return FaultRecord("rolling_deploy", started, detail, time.monotonic(), codes)


def kill_worker(lab: Lab, rng: random.Random) -> FaultRecord:
    """SIGKILL a worker's main process while it holds a chunk lease; start a replacement."""
    lab.workers.wait_ready()
    held = wait_for_leases(lab)
    if held:
        victim = lab.workers.by_name(rng.choice(held)[0]) or rng.choice(lab.workers.live)
    else:
        victim = rng.choice(lab.workers.live)
    started = time.monotonic()
    lab.workers.kill(victim)
    lab.workers.replace(victim)
    mine = [lease for lease in held if lease[0] == victim.name]
    detail = f"worker {victim.short} ({describe(mine)})"
    return FaultRecord("kill_worker", started, detail, time.monotonic())


def pool_children(pid: int) -> list[int]:
    """A process's children, from /proc (or ``ps`` where /proc does not list them)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found += [int(p) for p in task.read_text().split()]
        except OSError:
            continue
    if found:
        return sorted(set(found))
    ps = subprocess.run(["ps", "--ppid", str(pid), "-o", "pid="], capture_output=True, text=True)
    return [int(p) for p in ps.stdout.split()]


def _cpu_ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0
    return int(fields[11]) + int(fields[12])  # utime + stime


def busiest(pids: list[int], window_s: float = 0.1) -> int:
    """The process that used the most CPU over a short window: the one running a step."""
    before = {p: _cpu_ticks(p) for p in pids}
    time.sleep(window_s)
    return max(pids, key=lambda p: _cpu_ticks(p) - before[p])


def _children_within(pid: int, timeout_s: float) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while not (children := pool_children(pid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return children


def _exits_within(worker: WorkerProcess, timeout_s: float) -> bool:
    """Whether the worker is on its way out (a broker restart can crash it: kombu)."""
    try:
        worker.proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        return False
    return True


def kill_pool_child(lab: Lab, rng: random.Random) -> FaultRecord:
    """SIGKILL a prefork pool child of a worker busy with a step; the worker lives on."""
    for _ in range(3):
        lab.workers.replace_exited()  # a broker restart can take a worker down (kombu)
        lab.workers.wait_ready()
        worker = lab.workers.prefork_worker()
        if worker is None:
            raise RuntimeError("kill_pool_child needs a prefork worker")
        held = wait_for_leases(lab, {worker.name})
        children = _children_within(worker.pid, 10.0)  # the pool may be replacing a child
        if children:
            break
        if not _exits_within(worker, 10.0):  # childless and not going down: a real fault
            raise RuntimeError(f"worker {worker.name} has no pool children")
    else:
        raise RuntimeError("the prefork worker kept going down before its child could be killed")
    child = busiest(children)
    started = time.monotonic()
    os.kill(child, signal.SIGKILL)
    detail = f"worker {worker.short} child {child} ({describe(held)})"
    return FaultRecord("kill_pool_child", started, detail, time.monotonic())


def broker_restart_empty(lab: Lab, rng: random.Random) -> FaultRecord:
    """Redis SIGKILLed and restarted empty on the same port: every message and staged row lost."""
    held = wait_for_leases(lab)
    started = time.monotonic()
    lab.redis.restart_empty()
    took = time.monotonic() - started
    detail = f"Redis :{lab.redis.port} SIGKILLed, back empty in {took:.1f} s ({describe(held)})"
    return FaultRecord("broker_restart_empty", started, detail, time.monotonic())


def _restart(lab: Lab, what: str, kind: str, step: str | None) -> FaultRecord:
    """Restart a PostgreSQL server once a step (of kind ``step``) is in flight."""
    server = lab.state_pg if kind == "state_db_restart" else lab.target_pg
    held = wait_for_leases(lab, step=step)
    started = time.monotonic()
    server.restart()
    took = time.monotonic() - started
    detail = f"{what} PostgreSQL :{server.port} restarted (fast) in {took:.1f} s ({describe(held)})"
    return FaultRecord(kind, started, detail, time.monotonic())


def state_db_restart(lab: Lab, rng: random.Random) -> FaultRecord:
    """The state DB drops every connection and rolls back every open transaction."""
    return _restart(lab, "state DB", "state_db_restart", None)


def target_db_restart(lab: Lab, rng: random.Random) -> FaultRecord:
    """The target drops every connection, with a load in flight (so a COPY is cut)."""
    return _restart(lab, "target", "target_db_restart", "load")


#: Every fault kind, in the order the short tier injects them.
FAULTS: dict[str, Fault] = {
    "rolling_deploy": rolling_deploy,
    "kill_worker": kill_worker,
    "kill_pool_child": kill_pool_child,
    "broker_restart_empty": broker_restart_empty,
    "state_db_restart": state_db_restart,
    "target_db_restart": target_db_restart,
}
