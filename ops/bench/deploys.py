"""What deploying in the middle of a migration costs: the same migration with and without.

Each repeat runs the migration once undisturbed and once with rolling deploys
spread over its expected duration (each deploy: start two new workers, wait
until they are ready, SIGTERM the old ones one by one). The goal: the median
with deploys is at most 1.15 times the median without, for a migration that
takes at least a minute without them (the report says when it did not).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ops.bench.system import BenchSystem, pg_database
from ops.demo_data import build_legacy_db, demo_spec

GOAL_RATIO = 1.15
MIN_PLAIN_S = 60.0  # the goal is stated for a migration of at least a minute
SCALE = 75.0  # the legacy DB's size (7.9M rows): 80 to 90 s without deploys on 2 cores
WORKERS = 2


def _migrate(
    home: Path,
    source: Path,
    dirty: int,
    deploys: int,
    expected_s: float,
    out: Callable[[str], None],
) -> float:
    with pg_database() as target, BenchSystem(home) as system:
        names = [system.start_worker() for _ in range(WORKERS)]
        system.wait_ready(names)
        spec = demo_spec(f"sqlite:///{source}", target, chunk_rows=5000, dirty_rows=dirty)
        migration = system.submit(spec)
        next_deploy = [expected_s * (i + 1) / (deploys + 1) for i in range(deploys)]
        started = time.monotonic()
        while (view := system.view(migration))["state"] in ("pending", "running"):
            if next_deploy and time.monotonic() - started >= next_deploy[0]:
                next_deploy.pop(0)
                names = _rolling_deploy(system, names, out)
            time.sleep(0.1)
        if view["state"] != "succeeded":
            raise RuntimeError(f"migration {view['state']}: {view['error']}")
        return float(view["elapsed_s"])


def _rolling_deploy(system: BenchSystem, old: list[str], out: Callable[[str], None]) -> list[str]:
    new = [system.start_worker() for _ in old]
    system.wait_ready(new)
    stops = [system.stop_worker(name) for name in old]
    out(
        f"  deploy: {len(new)} new workers, old ones stopped in "
        + ", ".join(f"{s:.1f}s (exit {c})" for s, c in stops)
    )
    return new


def run(
    home: Path,
    repeats: int = 3,
    deploys: int = 5,
    scale: float = SCALE,
    out: Callable[[str], None] = print,
) -> dict[str, Any]:
    source = home / "legacy.db"
    dirty = sum(build_legacy_db(source, scale=scale).dirty.values())
    plain: list[float] = []
    deployed: list[float] = []
    for r in range(repeats):
        plain.append(_migrate(home / f"plain{r}", source, dirty, 0, 0, out))
        out(f"run {r + 1}: without deploys {plain[-1]:.1f} s")
        deployed.append(_migrate(home / f"deploy{r}", source, dirty, deploys, plain[-1], out))
        out(f"run {r + 1}: with {deploys} rolling deploys {deployed[-1]:.1f} s")
    ratio = statistics.median(deployed) / statistics.median(plain)
    long_enough = statistics.median(plain) >= MIN_PLAIN_S
    report = {
        "repeats": repeats,
        "deploys": deploys,
        "without_s": plain,
        "with_s": deployed,
        "ratio": round(ratio, 3),
        "goal": GOAL_RATIO,
        "long_enough": long_enough,
        "met": ratio <= GOAL_RATIO and long_enough,
    }
    out(
        f"median {statistics.median(plain):.1f} s without deploys, "
        f"{statistics.median(deployed):.1f} s with {deploys}: ratio {ratio:.3f} "
        f"(goal ≤ {GOAL_RATIO}) → {'MET' if report['met'] else 'MISSED'}"
        + ("" if long_enough else f": the migration took under {MIN_PLAIN_S:.0f} s, raise --scale")
    )
    return report
