"""How many chunks per second one PostgreSQL state DB coordinates, and what a chunk's
orchestration costs.

The state DB is the one point every worker shares. To see its cost apart from moving
rows, a migration of one-row chunks runs through two real workers at shipped defaults
whose source and target are no-ops (:mod:`ops.bench.noop_worker`: the memory connector
in place of the SQL one); everything between them is the real thing (state DB,
messages, connection slots, staging, steps). Per chunk: the state DB's transactions
(``pg_stat_database`` of its database alone), the CPU its sessions used (read from /proc,
the server being local) and the milliseconds they spent in statements. The state DB
then coordinates ``1000 / CPU ms per chunk`` chunks per second on each core it has.
Statement time also counts waits for a core (the workers keep this machine's two busy)
and commits waiting for the WAL: it is printed beside, and stands in for the CPU where
the server is not local. A chunk's orchestration is all the CPU it costs there: the
workers', the state DB's and Redis's. The same chunks then run from SQLite into
PostgreSQL, for what a real source and target add (no goal; docs/architecture.md, "The
state DB's capacity").
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ops.bench.system import (
    SHIPPED_TIMINGS,
    BenchSystem,
    SessionCpu,
    pg_database,
    process_cpu_s,
    xact_stats,
)

CHUNKS = 1000
TABLE = "ticks"
#: How many rows the no-op workers' source holds (:mod:`ops.bench.noop_worker`).
ROWS_ENV = "BATON_BENCH_TICKS"
NOOP_APP = "ops.bench.noop_worker"
GOALS = {"chunks_per_s_per_core": 300.0, "orchestration_ms_per_chunk": 5.0}


def _workers_cpu_s(system: BenchSystem) -> float:
    """CPU seconds the workers' processes (their pools' threads) have used so far."""
    return sum(process_cpu_s(proc.pid) or 0.0 for proc in system.workers.values())


def _source(path: Path, rows: int) -> str:
    """The SQLite source: the spec's preflight reads it, and the run with SQL ends; the
    no-op workers hold the same rows (:mod:`ops.bench.noop_worker`)."""
    with sqlite3.connect(path) as conn:
        conn.execute(f"CREATE TABLE {TABLE} (id INTEGER PRIMARY KEY, note TEXT NOT NULL)")
        conn.executemany(f"INSERT INTO {TABLE} VALUES (?, ?)", ((i, f"t{i}") for i in range(rows)))
    return f"sqlite:///{path}"


def _one(
    home: Path, chunks: int, source: str, target: str, app: str
) -> tuple[dict[str, Any], dict[str, float]]:
    """One migration of one-row chunks through two workers on ``app``: what it cost."""
    spec = {
        "name": "coordination",
        "chunk_rows": 1,
        "source": {"url": source},
        "target": {"url": target},
        "streams": [{"source_table": TABLE, "target_table": TABLE, "create_target": True}],
    }
    with BenchSystem(home, SHIPPED_TIMINGS, worker_app=app) as system:
        system.env[ROWS_ENV] = str(chunks)
        names = [system.start_worker(concurrency=None) for _ in range(2)]
        system.wait_ready(names)
        state_url = system.settings.database_url
        before = xact_stats(state_url)
        workers_before = _workers_cpu_s(system)
        assert system.redis is not None
        redis_before = process_cpu_s(system.redis.pid) or 0.0
        with SessionCpu(state_url) as cpu:
            started = time.monotonic()
            migration = system.submit(spec)
            while (view := system.view(migration))["state"] in ("pending", "running"):
                time.sleep(0.5)  # each look is state-DB work too: not more than needed
            wall = time.monotonic() - started
        worker_ms = (_workers_cpu_s(system) - workers_before) * 1000
        redis_ms = ((process_cpu_s(system.redis.pid) or 0.0) - redis_before) * 1000
        time.sleep(0.6)  # the server reports its statistics every 500 ms
        after = xact_stats(state_url)
        if view["state"] != "succeeded" or view["rows_loaded"] != chunks:
            raise RuntimeError(f"coordination: {view['state']}, {view['rows_loaded']} rows")
        done = int(view["chunks_done"])
        steps = system.step_ms(migration)
    xacts = (after[0] - before[0]) / done
    db_ms = (after[1] - before[1]) / done
    cpu_ms = cpu.seconds * 1000 / done if cpu.seconds is not None else None
    cost_ms = cpu_ms if cpu_ms else db_ms  # statement time only when the CPU is not known
    return {
        "chunks": done,
        "wall_s": round(wall, 2),
        "chunks_per_s": round(done / wall, 1),
        "state_db_xacts_per_chunk": round(xacts, 1),
        "state_db_ms_per_chunk": round(db_ms, 2),
        "state_db_cpu_ms_per_chunk": round(cpu_ms, 2) if cpu_ms is not None else None,
        "chunks_per_s_per_core": round(1000 / cost_ms, 0) if cost_ms else None,
        "step_ms_per_chunk": steps,
        "worker_cpu_ms_per_chunk": round(worker_ms / done, 2),
        "redis_cpu_ms_per_chunk": round(redis_ms / done, 2),
        # All the CPU a chunk costs: with no-op ends, orchestration alone.
        "orchestration_ms_per_chunk": round((worker_ms + redis_ms) / done + (cpu_ms or db_ms), 2),
    }, steps


def run(home: Path, chunks: int = CHUNKS, out: Callable[[str], None] = print) -> dict[str, Any]:
    """The no-op run, judged against the goals; then the same chunks with SQL ends."""
    home.mkdir(parents=True, exist_ok=True)
    source = _source(home / "ticks.sqlite", chunks)
    out(f"{chunks:,} one-row chunks, no-op source and target, 2 workers at shipped defaults …")
    with pg_database() as target:
        result, _ = _one(home / "noop", chunks, source, target, NOOP_APP)
    with pg_database() as target:
        real, real_steps = _one(home / "real", chunks, source, target, "worker")
    met = {
        "chunks_per_s_per_core": (result["chunks_per_s_per_core"] or 0)
        >= GOALS["chunks_per_s_per_core"],
        "orchestration_ms_per_chunk": result["orchestration_ms_per_chunk"]
        <= GOALS["orchestration_ms_per_chunk"],
    }
    done, wall = result["chunks"], result["wall_s"]
    out(f"  {done:,} chunks in {wall:.1f} s: {done / wall:.0f} chunks/s with 2 workers")
    out(f"  {_costs(result)}")
    for key, goal in GOALS.items():
        sense = "≥" if key.startswith("chunks") else "≤"
        verdict = "MET" if met[key] else "MISSED"
        out(f"  {key:<28} {result[key]}  (goal {sense} {goal})  {verdict}")
    out(f"  the same chunks from SQLite into PostgreSQL (no goal): {real['wall_s']:.1f} s")
    out(f"  {_costs(real)}")
    out(f"  step ms per one-row chunk, up to each step's state-DB commit: {real_steps}")
    return {**result, "with_sql_ends": real, "goals": GOALS, "met": all(met.values())}


def _costs(r: dict[str, Any]) -> str:
    """A run's CPU per chunk, by process, and the state DB's transactions."""
    cpu_ms = r["state_db_cpu_ms_per_chunk"]
    state = f"{cpu_ms:.2f} ms" if cpu_ms is not None else "not visible here"
    return (
        f"CPU per chunk: workers {r['worker_cpu_ms_per_chunk']:.2f} ms, state DB {state} "
        f"({r['state_db_xacts_per_chunk']:.1f} transactions, {r['state_db_ms_per_chunk']:.2f} ms "
        f"in statements, waits for a core and the WAL included), Redis "
        f"{r['redis_cpu_ms_per_chunk']:.2f} ms"
    )
