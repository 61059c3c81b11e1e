"""The benchmarks behind ``make bench`` still run: real workers, real signals, a report.

Only their mechanics are checked here (a timing per shutdown, exit codes, the
report's shape); whether a goal is met is the benchmark's own verdict, measured
on a quiet machine, never a test's.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ops.bench import shutdown, system
from tests import services


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_the_shutdown_benchmark_times_warm_shutdowns_of_busy_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not services.postgres_answers():
        services.unavailable(f"PostgreSQL at {services.PG_ADMIN_URL}")
    monkeypatch.setattr(system, "PG_URL", services.PG_ADMIN_URL)
    lines: list[str] = []
    report = shutdown.run(tmp_path, runs=2, out=lines.append)
    timed = [line for line in lines if line.startswith("shutdown ")]
    assert len(timed) == 2 and report["runs"] == 2, lines
    assert report["all_exit_0"], lines  # a warm shutdown ends with exit 0, step committed
    assert 0 < report["median_s"] <= report["slowest_s"] < 60
    assert report["goal_s"] == report["budget_s"] + shutdown.MARGIN_S
    assert lines[-1].startswith("warm shutdown of a busy worker: median"), lines
