"""The container's signal path, with real processes and no Docker.

The image runs ``tini -- baton worker`` (tini without ``-g`` as PID 1). Kubernetes
and ``docker stop`` send SIGTERM to PID 1 only. For a warm shutdown, tini must pass
it to its one child, and that child must be Celery's main process itself, which it
is only because ``baton worker`` execs Celery instead of running it as a child.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from etl_tasks.settings import Settings
from tests import services

ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 10.0

pytestmark = pytest.mark.slow


@pytest.fixture
def tini() -> str:
    """tini (the Debian package the image installs): skipped locally, required in CI."""
    path = shutil.which("tini")
    if path is None:
        message = "tini is not installed (apt-get install -y tini)"
        if services.IN_CI:
            pytest.fail(f"{message}; CI must install it", pytrace=False)
        pytest.skip(message)
    return path


@pytest.fixture
def baton() -> str:
    path = Path(sys.executable).parent / "baton"
    assert path.exists(), f"{path}: install the project into this virtualenv"
    return str(path)


class Container:
    """``tini -- baton ARGS`` in a session of its own, as in the image; killed whatever happens."""

    def __init__(self, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.proc = subprocess.Popen(
            argv,
            env=env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if text in self.log():
                return
            if self.proc.poll() is not None:
                pytest.fail(f"exited early ({self.proc.returncode}):\n{self.log()[-4000:]}")
            time.sleep(0.1)
        pytest.fail(f"no {text!r} in the log after {timeout_s}s:\n{self.log()[-4000:]}")

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the watchdog: a hang fails, never hangs
            self.proc.wait()
        self._log.close()


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[[list[str], Settings], Container]]:
    started: list[Container] = []

    def run(argv: list[str], settings: Settings) -> Container:
        env = {**os.environ, **settings.as_env(), "PYTHONPATH": str(ROOT)}
        c = Container(argv, env, tmp_path / f"container{len(started)}.log")
        started.append(c)
        return c

    yield run
    for c in started:
        c.close()


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (read from /proc, like ``ps``)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        # Fields after the command name, which is in parentheses and may hold spaces.
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def cmdline(pid: int) -> list[str]:
    return (Path("/proc") / str(pid) / "cmdline").read_bytes().decode().split("\0")[:-1]


def test_sigterm_to_tini_is_a_warm_shutdown_of_celery_itself(
    tini: str,
    baton: str,
    make_settings: Callable[..., Settings],
    start: Callable[[list[str], Settings], Container],
) -> None:
    # Given: the image's entrypoint, `tini -- baton`, running a worker
    container = start(
        [tini, "--", baton, "worker", "-n", "sig@test", "--loglevel", "INFO"], make_settings()
    )
    container.wait_for_log("worker sig@test ready", READY_TIMEOUT_S)  # Baton's own line

    # Then: tini's one child is Celery, under the pid tini started `baton worker` with
    tini_pid = container.proc.pid
    kids = children(tini_pid)
    assert len(kids) == 1, [cmdline(k) for k in kids]
    argv = cmdline(kids[0])
    assert argv[1:6] == ["-m", "celery", "-A", "worker", "worker"], argv
    assert not any(Path(arg).name == "baton" for arg in argv), argv
    assert children(kids[0]) == [], "the threads pool forks no child processes"

    # When: SIGTERM goes to tini alone, as Kubernetes sends it to PID 1
    started = time.monotonic()
    os.kill(tini_pid, signal.SIGTERM)
    try:
        code = container.proc.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"tini still running {STOP_TIMEOUT_S}s after SIGTERM:\n{container.log()}")

    # Then: Celery did a warm shutdown, Baton logged its summary, and everything exited 0
    log = container.log()
    assert code == 0, log[-4000:]
    assert time.monotonic() - started < STOP_TIMEOUT_S
    assert "worker: Warm shutdown" in log, log[-4000:]
    assert "stopped: steps done=" in log, log[-4000:]
    assert "Cold shutdown" not in log, log[-4000:]
