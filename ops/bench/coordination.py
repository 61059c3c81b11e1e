"""How many chunks per second one PostgreSQL state DB coordinates, and what a chunk costs it.

The state DB is the one point every worker shares. To see its cost apart from moving
rows, a migration of one-row chunks (SQLite source, PostgreSQL target: each chunk's
data work is a few hundred microseconds) runs through real workers at shipped defaults.
Per chunk: the state DB's transactions (``pg_stat_database`` of its database alone, so
the target's work is not counted), the CPU its sessions used (read from /proc, the
server being local) and the milliseconds they spent in statements. The state DB then
coordinates ``1000 / CPU ms per chunk`` chunks per second on each core it has. Statement
time also counts waits for a core (the workers keep this machine's two busy) and
commits waiting for the WAL: it is printed beside, and stands in for the CPU where the
server is not local. The run's own chunks/s is what
two workers on this machine reach, with the state DB, Redis and the workers sharing its
two cores (docs/architecture.md, "The state DB's capacity").
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg2

from ops.bench.system import (
    SHIPPED_TIMINGS,
    BenchSystem,
    SessionCpu,
    pg_database,
    process_cpu_s,
)

CHUNKS = 1000
GOALS = {"chunks_per_s_per_core": 300.0, "orchestration_ms_per_chunk": 5.0}


def _stats(url: str) -> tuple[int, float]:
    """Committed transactions and milliseconds spent executing statements, so far."""
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT pg_stat_clear_snapshot(); SELECT xact_commit, active_time "
            "FROM pg_stat_database WHERE datname = current_database()"
        )
        xacts, active_ms = cur.fetchone()
    return int(xacts), float(active_ms)


def _workers_cpu_s(system: BenchSystem) -> float:
    """CPU seconds the workers' processes (their pools' threads) have used so far."""
    return sum(process_cpu_s(proc.pid) or 0.0 for proc in system.workers.values())


def _source(path: Path, rows: int) -> str:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE ticks (id INTEGER PRIMARY KEY, note TEXT NOT NULL)")
        conn.executemany("INSERT INTO ticks VALUES (?, ?)", ((i, f"t{i}") for i in range(rows)))
    return f"sqlite:///{path}"


def run(home: Path, chunks: int = CHUNKS, out: Callable[[str], None] = print) -> dict[str, Any]:
    home.mkdir(parents=True, exist_ok=True)
    source = _source(home / "ticks.sqlite", chunks)
    spec = {
        "name": "coordination",
        "chunk_rows": 1,
        "streams": [{"source_table": "ticks", "target_table": "ticks", "create_target": True}],
    }
    out(f"{chunks:,} one-row chunks, SQLite → PostgreSQL, 2 workers at shipped defaults …")
    with pg_database() as target, BenchSystem(home / "system", SHIPPED_TIMINGS) as system:
        names = [system.start_worker(concurrency=None) for _ in range(2)]
        system.wait_ready(names)
        state_url = system.settings.database_url
        before = _stats(state_url)
        workers_before = _workers_cpu_s(system)
        with SessionCpu(state_url) as cpu:
            started = time.monotonic()
            migration = system.submit(
                {**spec, "source": {"url": source}, "target": {"url": target}}
            )
            while (view := system.view(migration))["state"] in ("pending", "running"):
                time.sleep(0.5)  # each look is state-DB work too: not more than needed
            wall = time.monotonic() - started
        worker_ms = (_workers_cpu_s(system) - workers_before) * 1000
        time.sleep(0.6)  # the server reports its statistics every 500 ms
        after = _stats(state_url)
        if view["state"] != "succeeded" or view["rows_loaded"] != chunks:
            raise RuntimeError(f"coordination: {view['state']}, {view['rows_loaded']} rows")
        done = int(view["chunks_done"])
        steps = system.step_ms(migration)
    xacts = (after[0] - before[0]) / done
    db_ms = (after[1] - before[1]) / done
    cpu_ms = cpu.seconds * 1000 / done if cpu.seconds is not None else None
    cost_ms = cpu_ms if cpu_ms else db_ms  # statement time only when the CPU is not known
    orchestration: float = sum(steps.values())
    result: dict[str, Any] = {
        "chunks": done,
        "wall_s": round(wall, 2),
        "chunks_per_s": round(done / wall, 1),
        "state_db_xacts_per_chunk": round(xacts, 1),
        "state_db_ms_per_chunk": round(db_ms, 2),
        "state_db_cpu_ms_per_chunk": round(cpu_ms, 2) if cpu_ms is not None else None,
        "chunks_per_s_per_core": round(1000 / cost_ms, 0) if cost_ms else None,
        "step_ms_per_chunk": steps,
        "worker_cpu_ms_per_chunk": round(worker_ms / done, 2),
        "orchestration_ms_per_chunk": round(orchestration, 1),
    }
    met = {
        "chunks_per_s_per_core": (result["chunks_per_s_per_core"] or 0)
        >= GOALS["chunks_per_s_per_core"],
        "orchestration_ms_per_chunk": orchestration <= GOALS["orchestration_ms_per_chunk"],
    }
    out(f"  {done:,} chunks in {wall:.1f} s: {done / wall:.0f} chunks/s with 2 workers")
    cpu_text = f"{cpu_ms:.2f} ms of its CPU" if cpu_ms is not None else "its CPU not visible here"
    out(
        f"  state DB per chunk: {xacts:.1f} transactions, {cpu_text}, {db_ms:.2f} ms in "
        "statements (waits for a core and for the WAL included)"
    )
    for key, goal in GOALS.items():
        sense = "≥" if key.startswith("chunks") else "≤"
        verdict = "MET" if met[key] else "MISSED"
        out(f"  {key:<28} {result[key]}  (goal {sense} {goal})  {verdict}")
    out(f"  step ms per one-row chunk, up to each step's state-DB commit: {steps}")
    out(
        f"  worker CPU per chunk, steps and all between them: {worker_ms / done:.2f} ms "
        "(both workers' processes)"
    )
    return {**result, "goals": GOALS, "met": all(met.values())}
