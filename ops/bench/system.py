"""A throwaway Baton for benchmarks: its own Redis, state DB and worker processes.

Shaped like a deployment: the state DB and the targets are PostgreSQL databases
of the benchmark's own (created and dropped here) on the server named by
``BATON_BENCH_POSTGRES_URL``. The source is the generated demo legacy DB.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2
from sqlalchemy import select
from sqlalchemy.engine import make_url

from etl_tasks.boundary.policy import Boundary
from etl_tasks.control import create_migration
from etl_tasks.preflight import preflight
from etl_tasks.publisher import publish_plan
from etl_tasks.settings import Settings
from etl_tasks.spec import parse_spec
from etl_tasks.state.db import StateDB, upgrade
from etl_tasks.state.enums import ChunkState
from etl_tasks.state.models import Chunk
from etl_tasks.views import migration_view
from ops.embedded import free_port, start_redis, worker_argv
from worker.celery_app import CeleryPublisher, create_celery

#: The shipped timings, but for the heartbeat a benchmark reads to see its workers ready:
#: what a benchmark of Baton at its defaults runs with (others sweep every second).
SHIPPED_TIMINGS: dict[str, Any] = {
    "sweep_interval_s": Settings.model_fields["sweep_interval_s"].default,
    "worker_heartbeat_s": 1.0,
}

PG_URL = os.environ.get("BATON_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


@contextmanager
def pg_database(slow_s: float = 0.0) -> Iterator[str]:
    """A PostgreSQL database of the benchmark's own; ``slow_s`` makes every write that slow."""
    name = f"baton_bench_{uuid.uuid4().hex[:8]}"
    u = make_url(PG_URL)
    params = {"host": u.host, "port": u.port or 5432, "user": u.username, "dbname": u.database}
    admin = psycopg2.connect(**params)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
        # Statements slower than 0.5 s go to the server's log: where a slow step waited.
        cur.execute(f'ALTER DATABASE "{name}" SET log_min_duration_statement = 500')
    url = u.set(database=name).render_as_string(hide_password=False)
    try:
        if slow_s:
            _slow_writes(url, slow_s)
        yield url
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def xact_stats(url: str) -> tuple[int, float]:
    """A database's transactions so far (committed or rolled back: one that only read may
    end either way) and the milliseconds its sessions spent executing statements."""
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT pg_stat_clear_snapshot(); SELECT xact_commit + xact_rollback, active_time "
            "FROM pg_stat_database WHERE datname = current_database()"
        )
        xacts, active_ms = cur.fetchone()
    return int(xacts), float(active_ms)


_CLOCK_TICK_S = 1 / os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a process on this machine, None if it is not here."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) * _CLOCK_TICK_S


def _is_postgres(pid: int) -> bool:
    """Whether the process of this pid here is a PostgreSQL backend (its title says so)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().startswith(b"postgres")
    except OSError:
        return False


class SessionCpu:
    """CPU seconds the server spent on one database's sessions, read from /proc: the
    resource a state DB's server supplies per chunk. Its sessions are listed and read
    every 250 ms, so those that open meanwhile count (from zero) and one that closes
    keeps what it had used at its last reading. ``seconds`` is None when the server's
    processes are not on this machine (a remote PostgreSQL): then only the statistics'
    statement time is known."""

    def __init__(self, url: str) -> None:
        self._conn = psycopg2.connect(url)
        self._conn.autocommit = True
        self._start: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._first = True
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> SessionCpu:
        self._sample()
        self._first = False
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        self._conn.close()

    def _loop(self) -> None:
        while not self._stop.wait(0.25):
            self._sample()

    def _sample(self) -> None:
        with self._conn.cursor() as cur:
            cur.execute(
                "SELECT pid FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            pids = [pid for (pid,) in cur.fetchall()]
        for pid in pids:
            used = process_cpu_s(pid) if _is_postgres(pid) else None
            if used is None:
                continue  # not on this machine (a remote server's pid, or one here by chance)
            if self._first:
                self._start[pid] = used
            self._last[pid] = used

    @property
    def seconds(self) -> float | None:
        if not self._last:
            return None
        return sum(used - self._start.get(pid, 0.0) for pid, used in self._last.items())


def _slow_writes(url: str, seconds: float) -> None:
    """An event trigger adds a per-statement delay to every table Baton creates."""
    conn = psycopg2.connect(url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"""
            CREATE FUNCTION bench_slow() RETURNS trigger LANGUAGE plpgsql AS
            $$ BEGIN PERFORM pg_sleep({seconds}); RETURN NULL; END $$;
            CREATE FUNCTION bench_add_slow() RETURNS event_trigger LANGUAGE plpgsql AS $$
            DECLARE obj record;
            BEGIN
              FOR obj IN SELECT * FROM pg_event_trigger_ddl_commands()
                         WHERE command_tag = 'CREATE TABLE' LOOP
                IF obj.object_identity NOT LIKE '%baton_ledger%'
                   AND obj.schema_name NOT LIKE 'pg_temp%' THEN
                  EXECUTE format('CREATE TRIGGER bench_slow AFTER INSERT ON %s
                                  FOR EACH STATEMENT EXECUTE FUNCTION bench_slow()',
                                 obj.object_identity);
                END IF;
              END LOOP;
            END $$;
            CREATE EVENT TRIGGER bench_add_slow ON ddl_command_end
                WHEN TAG IN ('CREATE TABLE') EXECUTE FUNCTION bench_add_slow();
        """)
    conn.close()


@dataclass
class BenchSystem:
    """Own Redis + PostgreSQL state DB + worker processes, for one benchmark run."""

    home: Path
    overrides: dict[str, Any] = field(default_factory=dict)  # Settings fields
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    redis: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)
    worker_app: str = "worker"  # the module whose Celery app the workers run
    _n: int = 0

    def __enter__(self) -> BenchSystem:
        self.home.mkdir(parents=True, exist_ok=True)
        self._stack = ExitStack()
        state_url = self._stack.enter_context(pg_database())
        self.redis_port = free_port()
        self.redis = start_redis(self.redis_port, self.home / "redis")
        self.settings = Settings(
            broker_url=f"redis://127.0.0.1:{self.redis_port}/0",
            database_url=state_url,
            key_prefix="bench:",
            **{"sweep_interval_s": 1, "worker_heartbeat_s": 1, **self.overrides},
        )
        self.env = {**os.environ, **self.settings.as_env()}
        upgrade(self.settings.database_url)
        self.db = StateDB(self.settings.database_url)
        self.app = create_celery(self.settings)
        return self

    def __exit__(self, *_: object) -> None:
        for proc in self.workers.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if self.redis is not None:
            self.redis.kill()
            self.redis.wait()
        self.app.close()
        self.db.dispose()
        self._stack.close()  # drops the state DB

    def start_worker(self, concurrency: int | None = 2) -> str:
        """A worker; ``concurrency`` None: the shipped default (``BATON_WORKER_CONCURRENCY``)."""
        self._n += 1
        name = f"b{self._n}@bench"
        log = open(self.home / f"{self._n}.log", "ab")
        pool = [] if concurrency is None else ["-c", str(concurrency)]
        self.workers[name] = subprocess.Popen(
            worker_argv("-n", name, *pool, "-l", "WARNING", app=self.worker_app),
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        return name

    def step_ms(self, migration_id: str) -> dict[str, float]:
        """Mean milliseconds per chunk of each step, from the chunks' own timings."""
        from sqlalchemy import select

        from etl_tasks.state.models import Chunk

        with self.db.reading() as s:
            chunks = list(s.scalars(select(Chunk).where(Chunk.migration_id == migration_id)))
        totals: dict[str, list[int]] = {}
        for chunk in chunks:
            for step, ms in chunk.step_timings().items():
                totals.setdefault(step, []).append(ms)
        return {step: round(sum(v) / len(v), 1) for step, v in totals.items()}

    def wait_ready(self, names: list[str], timeout_s: float = 60) -> None:
        from etl_tasks.workers import list_workers

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            live = {w["name"] for w in list_workers(self.db)}
            if set(names) <= live:
                return
            time.sleep(0.1)
        raise RuntimeError(f"workers {names} not ready")

    def stop_worker(self, name: str, timeout_s: float = 60) -> tuple[float, int]:
        """SIGTERM (warm shutdown); return (seconds until exit, exit code)."""
        proc = self.workers.pop(name)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout_s)
        return time.monotonic() - started, code

    def kill_worker(self, name: str) -> None:
        """SIGKILL: no warm shutdown, no acknowledgement, the leases left to expire."""
        proc = self.workers.pop(name)
        proc.kill()
        proc.wait()

    def revive_exited(self) -> list[tuple[str, int]]:
        """Start a new worker for each that exited on its own, as a supervisor would."""
        exited = [(n, p.returncode) for n, p in self.workers.items() if p.poll() is not None]
        for name, _ in exited:
            del self.workers[name]
            self.start_worker()
        return exited

    def restart_redis_empty(self) -> None:
        """SIGKILL the broker and start it again, empty, on the same port."""
        assert self.redis is not None
        self.redis.kill()
        self.redis.wait()
        self._n += 1
        self.redis = start_redis(self.redis_port, self.home / f"redis-{self._n}")

    def submit(self, spec: dict[str, Any]) -> str:
        parsed = parse_spec(spec)
        keys = preflight(parsed, Boundary.from_settings(self.settings))
        migration_id, _ = create_migration(self.db, parsed, keys)
        publish_plan(CeleryPublisher(self.app), migration_id)
        return migration_id

    def view(self, migration_id: str) -> dict[str, Any]:
        return migration_view(self.db, migration_id)

    def leases_of(self, name: str) -> dict[int, int]:
        """The chunks whose step ``name`` is running now: chunk id → fencing token."""
        with self.db.reading() as s:
            now = self.db.now(s)
            rows = s.execute(
                select(Chunk.id, Chunk.lease_token).where(
                    Chunk.lease_owner == name, Chunk.lease_expires_at > now
                )
            ).all()
        return {chunk_id: token for chunk_id, token in rows}

    def unfinished(self, migration_id: str) -> dict[int, int]:
        """The migration's chunks sent to the broker and not done: chunk id → fencing token."""
        with self.db.reading() as s:
            rows = s.execute(
                select(Chunk.id, Chunk.lease_token).where(
                    Chunk.migration_id == migration_id,
                    Chunk.state.in_([ChunkState.PENDING, ChunkState.RUNNING]),
                    Chunk.queued_at.is_not(None),
                )
            ).all()
        return {chunk_id: token for chunk_id, token in rows}

    def claimed_again(self, tokens: dict[int, int]) -> bool:
        """Whether every chunk is done or has been claimed since (its fencing token moved on)."""
        with self.db.reading() as s:
            rows = s.execute(
                select(Chunk.id, Chunk.lease_token, Chunk.state).where(Chunk.id.in_(list(tokens)))
            ).all()
        return all(
            token > tokens[chunk_id] or state == ChunkState.DONE for chunk_id, token, state in rows
        )

    def holder_of_a_step(self, name: str, step: str | None = None) -> bool:
        with self.db.reading() as s:
            now = self.db.now(s)
            query = select(Chunk.id).where(Chunk.lease_owner == name, Chunk.lease_expires_at > now)
            if step is not None:
                query = query.where(Chunk.step == step)
            return s.scalar(query.limit(1)) is not None
