"""The harness's own services: a Redis, PostgreSQL servers and Baton workers.

The faults kill and restart these, so they must belong to this run alone: each runs on
a free port, in folders of its own, never on the machine's shared servers, and
``close()`` ends everything it started, even after an error.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg2

from etl_tasks.settings import Settings
from ops.embedded import free_port, start_redis, worker_argv

PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"
#: Durability is not under test (the server is restarted, never its machine): skip fsyncs.
PG_OPTIONS = "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
#: Where the worker packages are importable from (the folder holding ``ops``).
ROOT = Path(__file__).resolve().parents[2]


class ServiceUnavailable(RuntimeError):
    """A service the harness needs cannot run on this machine."""


class OwnRedis:
    """A throwaway redis-server on a port of its own: the broker and staging store."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = start_redis(self.port, workdir)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def kill(self) -> None:
        """SIGKILL: every queued message and staged row is gone."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def restart_empty(self) -> None:
        """Kill, then an empty Redis on the same port (what a restart without persistence is)."""
        self.kill()
        self.proc = start_redis(self.port, self.workdir)

    def close(self) -> None:
        self.kill()


def postgres_bin_dir() -> Path | None:
    """The newest PostgreSQL server binaries installed from the distribution's packages."""

    def version(p: Path) -> tuple[int, ...]:
        return tuple(int(n) for n in re.findall(r"\d+", p.parent.name))

    found = [p for p in Path("/").glob(PG_BIN_GLOB.lstrip("/")) if (p / "initdb").exists()]
    return max(found, key=version) if found else None


def postgres_unavailable() -> str | None:
    """Why :class:`OwnPostgres` cannot run here, or ``None`` when it can."""
    if os.geteuid() != 0:
        return "running PostgreSQL as the postgres user needs root (runuser)"
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return "there is no postgres user"
    if postgres_bin_dir() is None:
        return f"no PostgreSQL server binaries under {PG_BIN_GLOB}"
    return None


class OwnPostgres:
    """A PostgreSQL server of the harness's own, run as ``postgres`` (it refuses root).

    Its data and socket live in a fresh folder under the system's temp dir, which the
    ``postgres`` user can reach (a pytest tmp_path under a 0700 folder it cannot); the
    server log is copied into ``workdir`` on close.
    """

    def __init__(self, workdir: Path, name: str = "postgres") -> None:
        reason = postgres_unavailable()
        if reason:
            raise ServiceUnavailable(f"cannot run PostgreSQL: {reason}")
        self.workdir, self.name = workdir, name
        self.bin = postgres_bin_dir() or Path()
        self.port = free_port()
        self.home = Path(tempfile.mkdtemp(prefix=f"baton-chaos-{name}-"))
        self.data, self.log = self.home / "data", self.home / "server.log"
        try:
            shutil.chown(self.home, user="postgres")
            self._as_postgres("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres")
            self.start()
        except BaseException:
            self.close()
            raise

    def _as_postgres(self, tool: str, *args: str) -> None:
        argv = ["runuser", "-u", "postgres", "--", str(self.bin / tool), *args]
        if tool == "initdb":
            argv.append("--no-sync")
        result = subprocess.run(argv, cwd=self.home, capture_output=True, text=True, timeout=90)
        if result.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise ServiceUnavailable(f"{tool} {' '.join(args)} failed: {result.stderr}\n{log}")

    def _ctl(self, action: str, *extra: str) -> None:
        options = f"-p {self.port} -k {self.home} -c listen_addresses=127.0.0.1 {PG_OPTIONS}"
        self._as_postgres(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-o", options, *extra, action
        )

    def start(self) -> None:
        self._ctl("start")

    def restart(self) -> None:
        """Fast restart: clients are disconnected, in-flight transactions roll back."""
        self._ctl("restart", "-m", "fast")

    def stop(self) -> None:
        """Immediate stop: like a crash, recovery runs at the next start."""
        self._ctl("stop", "-m", "immediate")

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create an empty database; return its URL."""
        conn = psycopg2.connect(self.url("postgres"), connect_timeout=5)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
        return self.url(name)

    def close(self) -> None:
        """Stop the server (if it runs), keep its log in ``workdir``, remove its files."""
        try:
            if (self.data / "postmaster.pid").exists():
                self.stop()
        finally:
            if self.log.exists():
                self.workdir.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(self.log, self.workdir / f"{self.name}.log")
            shutil.rmtree(self.home, ignore_errors=True)


@dataclass
class WorkerProcess:
    """One ``celery -A worker worker`` process; ``name`` is its node name and lease owner."""

    name: str
    prefork: bool
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def short(self) -> str:
        return self.name.split("@", 1)[0]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def ready(self) -> bool:
        if not self.log_path.exists():
            return False
        return f"worker {self.name} ready".encode() in self.log_path.read_bytes()


class Workers:
    """The live workers, plus the ones stopped or killed (until ``close()``)."""

    def __init__(self, settings: Settings, log_dir: Path, concurrency: int = 2) -> None:
        self.env = {**os.environ, **settings.as_env(), "PYTHONPATH": str(ROOT)}
        self.log_dir = log_dir
        self.concurrency = concurrency
        self.live: list[WorkerProcess] = []
        self.gone: list[WorkerProcess] = []
        self._seq = 0

    def start(self, prefork: bool = False) -> WorkerProcess:
        """Start one worker (its own session, so its pool children can be reaped)."""
        self._seq += 1
        name = f"w{self._seq}@chaos"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"w{self._seq}.log"
        argv = worker_argv("-n", name, "-c", str(self.concurrency), "--loglevel", "INFO")
        # The pool comes from BATON_WORKER_POOL: Celery cannot tell `-P prefork` from its default.
        env = {**self.env, "BATON_WORKER_POOL": "prefork" if prefork else "threads"}
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                argv, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        worker = WorkerProcess(name, prefork, proc, log_path)
        self.live.append(worker)
        return worker

    def wait_ready(self, timeout_s: float = 60) -> None:
        """Every live worker has logged that it is ready (one that exits fails this)."""
        deadline = time.monotonic() + timeout_s
        for w in self.live:
            while not w.ready():
                if w.proc.poll() is not None:
                    raise RuntimeError(f"worker {w.name} exited early; see {w.log_path}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"worker {w.name} not ready; see {w.log_path}")
                time.sleep(0.1)

    def by_name(self, name: str) -> WorkerProcess | None:
        return next((w for w in self.live if w.name == name), None)

    def prefork_worker(self) -> WorkerProcess | None:
        return next((w for w in self.live if w.prefork), None)

    def terminate(self, worker: WorkerProcess, timeout_s: float = 60) -> tuple[int, float]:
        """SIGTERM the main process (Celery's warm shutdown); return exit code and seconds."""
        started = time.monotonic()
        worker.proc.send_signal(signal.SIGTERM)
        try:
            code = worker.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self._reap(worker)
            code = -int(signal.SIGKILL)
        self._retire(worker)
        return code, time.monotonic() - started

    def kill(self, worker: WorkerProcess) -> None:
        """SIGKILL the main process, then whatever it left in its session (pool children)."""
        if worker.proc.poll() is None:
            worker.proc.kill()
        self._reap(worker)
        self._retire(worker)

    def replace(self, worker: WorkerProcess) -> WorkerProcess:
        """A new worker of the same kind as one that is gone."""
        return self.start(prefork=worker.prefork)

    def replace_exited(self) -> list[tuple[WorkerProcess, int]]:
        """Replace live workers that exited by themselves (as an orchestrator restarts them)."""
        exited = [(w, code) for w in self.live if (code := w.proc.poll()) is not None]
        for worker, _ in exited:
            self._reap(worker)
            self._retire(worker)
            self.replace(worker)
        return exited

    def _retire(self, worker: WorkerProcess) -> None:
        if worker in self.live:
            self.live.remove(worker)
            self.gone.append(worker)

    @staticmethod
    def _reap(worker: WorkerProcess) -> None:
        """SIGKILL the worker's whole session, then wait for its main process.

        Only before that wait: until then its pid (the session's id) cannot be reused.
        """
        if worker.proc.returncode is None:
            try:
                os.killpg(worker.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        worker.proc.wait()

    def close(self) -> None:
        for worker in list(self.live):
            self._reap(worker)
            self._retire(worker)
