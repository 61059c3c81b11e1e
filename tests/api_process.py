"""A real ``baton api`` (gunicorn) on a free port, with a state DB of the test's own.

The state DB is a SQLite file in the work folder unless the test hands over its own.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from etl_tasks.state.db import StateDB, upgrade
from etl_tasks.tokens import create_token
from ops.embedded import free_port
from tests.harness import ROOT


class ApiProcess:
    """``python -m ops.cli api`` in its own process group; stopped (or killed) on close."""

    def __init__(
        self,
        workdir: Path,
        redis_url: str,
        key_prefix: str,
        database_url: str | None = None,
        processes: int = 1,
        **env: str,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.database_url = database_url or f"sqlite:///{workdir / 'state.db'}"
        upgrade(self.database_url)
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("BATON_")},
            "PYTHONPATH": str(ROOT),
            "BATON_DATABASE_URL": self.database_url,
            "BATON_BROKER_URL": redis_url,
            "BATON_KEY_PREFIX": key_prefix,
            **env,
        }
        self.log_path = workdir / "api.log"
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ops.cli",
                "api",
                "--port",
                str(self.port),
                "--workers",
                str(processes),
            ],
            env=self.env,
            cwd=workdir,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout_s: float = 30) -> ApiProcess:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"baton api exited early:\n{self.log()}")
            try:
                if requests.get(f"{self.url}/healthz", timeout=1).ok:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"baton api not ready after {timeout_s}s:\n{self.log()}")

    def token(self, role: str, name: str | None = None) -> str:
        db = StateDB(self.database_url)
        try:
            return create_token(db, name or f"test-{role}", role)
        finally:
            db.dispose()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()
