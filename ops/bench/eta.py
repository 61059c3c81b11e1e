"""How far the ETA Baton shows is from the time a migration really took to finish.

The demo migration (the generated legacy DB, four streams) runs on two workers
while its view is read twice a second. At each checkpoint (10, 25, 50 and 75 %
of the rows the source really has) the shown ETA is kept; when the migration
has ended, each is divided by the time that was actually left. The goal: from
10 % on, every ratio within 1 ± 0.3.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ops.bench.system import BenchSystem, pg_database
from ops.demo_data import build_legacy_db, demo_spec

GOAL_ERROR = 0.30  # |ETA / actual remaining - 1| at most this, from 10 % of the rows on
CHECKPOINTS = (0.10, 0.25, 0.50, 0.75)
SCALE = 40.0  # the legacy DB's size (4,220,000 rows): about a minute on 2 cores
WORKERS = 2
POLL_S = 0.5


def run(
    home: Path, scale: float = SCALE, chunk_rows: int = 2000, out: Callable[[str], None] = print
) -> dict[str, Any]:
    source = home / "legacy.db"
    stats = build_legacy_db(source, scale=scale)
    total = stats.total_rows
    samples: list[dict[str, Any]] = []
    with pg_database() as target, BenchSystem(home) as system:
        names = [system.start_worker() for _ in range(WORKERS)]
        system.wait_ready(names)
        migration = system.submit(demo_spec(f"sqlite:///{source}", target, chunk_rows=chunk_rows))
        due = list(CHECKPOINTS)
        while (view := system.view(migration))["state"] in ("pending", "running"):
            handled = view["rows_loaded"] + view["rows_quarantined"]
            while due and handled >= due[0] * total:
                samples.append(
                    {
                        "checkpoint": due.pop(0),
                        "at": time.monotonic(),
                        "handled": handled,
                        "eta_s": view["eta_s"],
                        "percent_shown": view["percent"],
                        "fully_planned": view["fully_planned"],
                    }
                )
            time.sleep(POLL_S)
        ended = time.monotonic()
    if view["state"] != "succeeded":
        raise RuntimeError(f"migration {view['state']}: {view['error']}")
    for s in samples:
        actual = ended - s.pop("at")
        s["actual_s"] = round(actual, 1)
        s["ratio"] = None if s["eta_s"] is None or actual <= 0 else round(s["eta_s"] / actual, 3)
        shown = "—" if s["eta_s"] is None else f"{s['eta_s']:.1f} s"
        out(
            f"  at {s['checkpoint']:.0%} of {total:,} rows ({s['percent_shown']:.1f} % shown, "
            f"{'fully' if s['fully_planned'] else 'not fully'} planned): ETA {shown}, "
            f"actually {actual:.1f} s left → ratio {s['ratio']}"
        )
    met = bool(samples) and all(
        s["ratio"] is not None and abs(s["ratio"] - 1) <= GOAL_ERROR for s in samples
    )
    worst = max((abs(s["ratio"] - 1) for s in samples if s["ratio"] is not None), default=None)
    out(
        f"ETA over {view['elapsed_s']:.1f} s: worst error "
        + ("—" if worst is None else f"{worst:.0%}")
        + f" (goal ±{GOAL_ERROR:.0%} from 10 % on) → {'MET' if met else 'MISSED'}"
    )
    return {
        "rows": total,
        "elapsed_s": view["elapsed_s"],
        "samples": samples,
        "worst_error": None if worst is None else round(worst, 3),
        "goal": GOAL_ERROR,
        "met": met,
    }
