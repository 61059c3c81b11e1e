"""How long recovery takes with the default timings, after the two faults that lose work.

- **SIGKILL.** A worker dies in the middle of its steps, acknowledging nothing.
  Its chunks are taken over when their leases (``BATON_LEASE_S``, 30 s) have
  expired and a sweep (every ``BATON_SWEEP_INTERVAL_S``, 5 s) finds them; a
  message it had taken but not started is re-sent once its chunk has been queued
  for ``BATON_REQUEUE_AFTER_S`` (30 s). Timed from the kill until every chunk it
  held, and every chunk queued at that moment, has been claimed again; goal ≤ 60 s.
- **Broker loss.** Redis is SIGKILLed and started again empty: queued messages
  and staged rows are gone. A sweep notices the broker's epoch key is missing and
  publishes every unfinished chunk again. Timed from the restart until every
  chunk queued or running at that moment is done or has been claimed again;
  goal ≤ 30 s.

A worker that exits by itself meanwhile (a Redis client can give up during the
restart) is replaced at once, as a supervisor would; nobody acts on the system.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from ops.bench.system import SHIPPED_TIMINGS, BenchSystem, pg_database
from ops.demo_data import build_legacy_db, demo_spec

KILL_GOAL_S = 60.0
BROKER_GOAL_S = 30.0
WORKERS = 2
TIMEOUT_S = 180.0

Out = Callable[[str], None]
T = TypeVar("T")


class Trials:
    """One system, one migration kept running (resubmitted when it ends), faults in turn."""

    def __init__(self, system: BenchSystem, spec: dict[str, Any], out: Out) -> None:
        self.system, self.spec, self.out = system, spec, out
        self.names = [system.start_worker() for _ in range(WORKERS)]
        system.wait_ready(self.names)
        self.migration = system.submit(spec)
        self.hit: set[int] = set()  # chunks whose worker was killed

    def running(self) -> dict[str, Any]:
        """The migration's view, after resubmitting it if it has ended."""
        view = self.system.view(self.migration)
        if view["state"] in ("succeeded", "failed", "cancelled"):
            if view["state"] != "succeeded":
                raise RuntimeError(f"migration {view['state']}: {view['error']}")
            self.migration = self.system.submit(self.spec)
            view = self.system.view(self.migration)
        return view

    def supervise(self) -> None:
        for name, code in self.system.revive_exited():
            self.out(f"  worker {name} exited {code} by itself; a new one started")
        self.names = list(self.system.workers)

    def kill(self) -> float:
        """SIGKILL a worker holding steps; seconds until its chunks, and every chunk queued
        then (it may have taken some messages it had not started), were claimed again."""
        victim, held = self._wait(self._a_holder, "no worker took a step")
        tokens = {**self.system.unfinished(self.migration), **held}
        self.system.kill_worker(victim)
        killed = time.monotonic()
        self.system.start_worker()  # the supervisor's replacement; it does not speed recovery
        seconds = self._until_claimed_again(tokens, killed)
        self.out(
            f"  SIGKILL {victim} holding chunks {sorted(held)} ({len(tokens) - len(held)} more "
            f"queued): all run again after {seconds:.1f} s"
        )
        return seconds

    def broker_loss(self) -> float:
        """Restart the broker empty; seconds until every chunk it held has been claimed again."""
        tokens = self._wait(self._sent, "nothing was sent to the broker")
        self.system.restart_redis_empty()
        seconds = self._until_claimed_again(tokens, time.monotonic())
        self.out(
            f"  broker restarted empty with {len(tokens)} chunks queued or running: "
            f"all running again after {seconds:.1f} s"
        )
        return seconds

    def _until_claimed_again(self, tokens: dict[int, int], since: float) -> float:
        """Seconds from ``since`` until every chunk is done or was claimed again."""
        self._wait(lambda: self.system.claimed_again(tokens) or None, "chunks never ran again")
        return time.monotonic() - since

    def _sent(self) -> dict[int, int] | None:
        """The unfinished chunks, once the broker holds at least two of them."""
        self.running()
        tokens = self.system.unfinished(self.migration)
        return tokens if len(tokens) >= 2 else None

    def _a_holder(self) -> tuple[str, dict[int, int]] | None:
        """A worker running steps, none of them on a chunk an earlier kill already hit."""
        self.running()
        for name in list(self.system.workers):
            tokens = self.system.leases_of(name)
            if tokens and not self.hit & tokens.keys():
                self.hit |= tokens.keys()
                return name, tokens
        return None

    def _wait(self, probe: Callable[[], T | None], failure: str) -> T:
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            self.supervise()
            value = probe()
            if value:
                return value
            time.sleep(0.05)
        raise RuntimeError(failure)


def run(home: Path, trials: int = 3, out: Out = print) -> dict[str, Any]:
    source = home / "legacy.db"
    build_legacy_db(source, scale=8.0)
    with pg_database() as target, BenchSystem(home / "sys", SHIPPED_TIMINGS) as system:
        out(
            f"default timings: lease {system.settings.lease_s:g} s, sweep every "
            f"{system.settings.sweep_interval_s:g} s, requeue after "
            f"{system.settings.requeue_after_s:g} s"
        )
        runner = Trials(system, demo_spec(f"sqlite:///{source}", target, chunk_rows=5000), out)
        kills = [runner.kill() for _ in range(trials)]
        brokers = [runner.broker_loss() for _ in range(trials)]
    report = {
        "trials": trials,
        "sigkill_s": [round(s, 2) for s in kills],
        "sigkill_goal_s": KILL_GOAL_S,
        "broker_loss_s": [round(s, 2) for s in brokers],
        "broker_loss_goal_s": BROKER_GOAL_S,
        "met": max(kills) <= KILL_GOAL_S and max(brokers) <= BROKER_GOAL_S,
    }
    out(
        f"recovery after SIGKILL: median {statistics.median(kills):.1f} s, slowest "
        f"{max(kills):.1f} s (goal ≤ {KILL_GOAL_S:.0f} s); after the broker lost everything: "
        f"median {statistics.median(brokers):.1f} s, slowest {max(brokers):.1f} s "
        f"(goal ≤ {BROKER_GOAL_S:.0f} s) → {'MET' if report['met'] else 'MISSED'}"
    )
    return report
