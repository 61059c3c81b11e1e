"""Test harness: run steps in-process (a driver) or as real worker processes.

The driver executes published messages one by one in this process, so a test
can deliver a message twice, drop one, or stop between two steps. Worker
processes are real ``celery -A worker worker`` children with a watchdog: a
worker that hangs fails the test instead of hanging it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import select

from etl_tasks.advance import advance
from etl_tasks.constants import PIPELINE, TASK_PLAN, TASK_VERIFY
from etl_tasks.runtime import Runtime
from etl_tasks.settings import Settings
from etl_tasks.state.models import Migration
from etl_tasks.verification.step import verify_range
from ops.embedded import worker_argv

ROOT = Path(__file__).resolve().parent.parent


class QueuePublisher:
    """Keeps published messages in order, for the driver to deliver."""

    def __init__(self) -> None:
        self.queue: deque[tuple[str, dict[str, Any]]] = deque()
        self.history: list[tuple[str, dict[str, Any]]] = []

    def send(self, task: str, queue: str, kwargs: dict[str, object]) -> None:
        self.queue.append((task, dict(kwargs)))
        self.history.append((task, dict(kwargs)))


class Driver:
    """Delivers messages to the step functions in this process, like a one-thread worker."""

    def __init__(self, settings: Settings, name: str = "driver", *, chain: bool = False) -> None:
        """``chain``: a step runs its chunk's next step itself, as a worker does by default;
        off, every step goes through a message, which a test can hold, drop or repeat."""
        self.publisher = QueuePublisher()
        if not chain:
            settings = settings.model_copy(update={"chain_steps": False})
        self.rt = Runtime(settings, self.publisher, worker_name=name)

    def deliver(self, task: str, kwargs: dict[str, Any]) -> Any:
        if task == TASK_PLAN:
            return advance(self.rt, str(kwargs["migration_id"]))
        if task == TASK_VERIFY:
            return verify_range(self.rt, int(kwargs["range_id"]))
        step = next(s for s in PIPELINE if s.task == task)
        return step.function()(self.rt, int(kwargs["chunk_id"]))

    def run(
        self,
        max_messages: int = 10_000,
        on_message: Callable[[str, dict[str, Any]], bool] | None = None,
    ) -> int:
        """Deliver until the queue is empty; ``on_message`` may return False to drop one."""
        n = 0
        while self.publisher.queue and n < max_messages:
            task, kwargs = self.publisher.queue.popleft()
            n += 1
            if on_message is not None and not on_message(task, kwargs):
                continue
            self.deliver(task, kwargs)
        return n

    def run_to_end(self, migration_id: str, timeout_s: float = 60) -> str:
        """Deliver, and sweep as a worker's sweeper would, until the migration has ended:
        a step that met a transient error (a connection the watchdog cut on a loaded
        machine) waits for its ``not_before``, and only a sweep sends it again."""
        from etl_tasks.sweeper import sweep

        deadline = time.monotonic() + timeout_s
        self.run()
        while self.state(migration_id) in ("pending", "running"):
            if time.monotonic() > deadline:
                raise AssertionError(f"migration {migration_id} still running after {timeout_s}s")
            time.sleep(0.1)
            sweep(self.rt)
            self.run()
        return self.state(migration_id)

    def state(self, migration_id: str) -> str:
        with self.rt.db.session() as s:
            return s.scalar(select(Migration.state).where(Migration.id == migration_id)) or ""

    def close(self) -> None:
        self.rt.close()


class WorkerProcess:
    """A real Baton worker (``celery -A worker worker``) in a child process."""

    def __init__(
        self,
        settings: Settings,
        name: str,
        log_dir: Path,
        concurrency: int = 2,
        extra_env: dict[str, str] | None = None,
        pool: str = "threads",
        root: Path = ROOT,
    ) -> None:
        """``root``: the tree whose code the worker runs (another version's, for a
        compatibility test)."""
        self.name = f"{name}@test"
        env = {**os.environ, **settings.as_env(), **(extra_env or {})}
        env["BATON_WORKER_POOL"] = pool
        env["PYTHONPATH"] = str(root)
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            worker_argv("-n", self.name, "-c", str(concurrency), "--loglevel", "INFO"),
            env=env,
            cwd=root,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited early:\n{self.log()}")
            if b" ready" in self.log_path.read_bytes():
                return
            time.sleep(0.1)
        raise RuntimeError(f"worker not ready after {timeout_s}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def terminate(self, timeout_s: float = 30) -> int:
        """SIGTERM (warm shutdown); return the exit code. A hang is killed and fails."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            message = f"worker did not stop within {timeout_s}s:\n{self.log()}"
            raise AssertionError(message) from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def close(self) -> None:
        self.kill()
        self._log.close()


def wait_for(
    predicate: Callable[[], Any],
    timeout_s: float = 60,
    interval_s: float = 0.1,
    what: str = "condition",
) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def run_baton(
    *args: str, env: dict[str, str], cwd: Path = ROOT, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run the ``baton`` command line as an operator would, and capture what it says."""
    return subprocess.run(
        [sys.executable, "-m", "ops.cli", *args],
        env={**env, "PYTHONPATH": str(ROOT)},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
