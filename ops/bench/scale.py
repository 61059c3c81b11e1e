"""Scale: ten times the rows should take ten times as long, in the same memory.

Baton moves ``pgbench_accounts`` PostgreSQL → PostgreSQL with two workers at shipped
defaults twice in one run: at 1M rows and at 10M (``pgbench -i -s 10`` and ``-s 100``),
each after a checkpoint, and reports the ratio of the two wall times and each worker's
peak RSS (its process tree). A worker streams a chunk at a time, so memory must not grow
with the table; time grows with the rows, plus what a ten times larger target index and
the checkpoints a 10M-row load cannot avoid add to it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ops.bench.system import pg_database
from ops.bench.throughput import ROWS_PER_SCALE, Run, baton, checkpoint, make_source

SCALES = (10, 100)  # 1M and 10M rows
GOALS = {"time_ratio": 10.5, "peak_rss_mb": 250.0}


def _one(home: Path, scale: int, rows: int | None) -> Run:
    with pg_database() as source, pg_database() as target:
        moved = make_source(source, scale, rows)
        checkpoint(target)
        return baton(f"Baton PG→PG, {moved:,} rows", home, source, target, moved, 2)


def run(
    home: Path,
    out: Callable[[str], None] = print,
    rows: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """Both sizes; ``rows`` instead of the pgbench scales only to check the benchmark."""
    home.mkdir(parents=True, exist_ok=True)
    runs: list[Run] = []
    for i, scale in enumerate(SCALES):
        out(f"making {(rows[i] if rows else scale * ROWS_PER_SCALE):,} rows …")
        r = _one(home / f"s{scale}", scale, rows[i] if rows else None)
        runs.append(r)
        out(r.line(" (a worker's process tree)"))
    small, large = runs
    result = {
        "time_ratio": large.wall_s / small.wall_s,
        "rows_ratio": large.rows / small.rows,
        "peak_rss_mb": float(max(round(r.peak_rss_mb) for r in runs)),
    }
    met = {k: result[k] <= goal for k, goal in GOALS.items()}
    out("")
    for key, goal in GOALS.items():
        verdict = "MET" if met[key] else "MISSED"
        out(f"  {key:<12} {result[key]:7.2f}  (goal ≤ {goal})  {verdict}")
    return {
        "runs": [r.as_json() for r in runs],
        **{k: round(v, 2) for k, v in result.items()},
        "goals": GOALS,
        "met": all(met.values()),
    }
