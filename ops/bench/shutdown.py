"""How long a busy worker's warm shutdown takes: the deploy latency.

A migration runs against a deliberately slow target, so every load works up
to its deadline. Again and again, a fresh worker is started, allowed to take
a load, and sent SIGTERM at a random point into it. Each shutdown is timed from the signal to
the process's exit; the goal is the step budget + 1.5 s for the slowest.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ops.bench.system import BenchSystem, pg_database
from ops.demo_data import build_legacy_db, demo_spec

MARGIN_S = 1.5


def run(
    home: Path, runs: int = 20, budget_s: float = 2.0, out: Callable[[str], None] = print
) -> dict[str, Any]:
    source = home / "legacy.db"
    build_legacy_db(source, scale=2.0)
    times: list[float] = []
    codes: list[int] = []
    rng = random.Random(1)
    env = {"step_budget_s": budget_s}
    with pg_database(slow_s=0.3) as target, BenchSystem(home / "sys", env) as system:
        spec = demo_spec(f"sqlite:///{source}", target, chunk_rows=5000)
        spec["streams"] = [s for s in spec["streams"] if s["target_table"] == "invoice_lines"]
        spec["streams"][0]["after"] = []
        background = system.start_worker(concurrency=1)
        system.wait_ready([background])
        migration = system.submit(spec)
        for i in range(runs):
            if system.view(migration)["state"] != "running":
                migration = system.submit(spec)
            name = system.start_worker(concurrency=2)
            system.wait_ready([name])
            _wait(lambda name=name: system.holder_of_a_step(name, "load"), 60)  # type: ignore[misc]
            time.sleep(rng.uniform(0, budget_s * 0.6))  # somewhere into the load
            seconds, code = system.stop_worker(name)
            times.append(seconds)
            codes.append(code)
            out(f"shutdown {i + 1:2d}: {seconds:.2f} s (exit {code})")
    return _report(times, codes, budget_s, out)


def _wait(predicate: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError("the worker never took a step")
        time.sleep(0.02)


def _report(
    times: list[float], codes: list[int], budget_s: float, out: Callable[[str], None]
) -> dict[str, Any]:
    goal = budget_s + MARGIN_S
    slowest = max(times)
    report = {
        "runs": len(times),
        "budget_s": budget_s,
        "goal_s": goal,
        "median_s": round(statistics.median(times), 3),
        "slowest_s": round(slowest, 3),
        "ratio_to_goal": round(slowest / goal, 3),
        "all_exit_0": all(c == 0 for c in codes),
        "met": slowest <= goal and all(c == 0 for c in codes),
    }
    out(
        f"warm shutdown of a busy worker: median {report['median_s']} s, slowest "
        f"{report['slowest_s']} s, goal ≤ {goal} s (budget {budget_s} s + {MARGIN_S} s): "
        f"ratio {report['ratio_to_goal']} → {'MET' if report['met'] else 'MISSED'}"
    )
    return report
