"""The benchmarks behind ``make bench`` still run: real workers, real signals, a report.

Only their mechanics are checked here (a timing per shutdown, exit codes, the
report's shape); whether a goal is met is the benchmark's own verdict, measured
on a quiet machine, never a test's.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ops.bench import coordination, scale, shutdown, system, throughput
from tests import services


@pytest.fixture(autouse=True)
def bench_postgres(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every benchmark makes its databases on the test services' PostgreSQL."""
    if not services.postgres_answers():
        services.unavailable(f"PostgreSQL at {services.PG_ADMIN_URL}")
    monkeypatch.setattr(system, "PG_URL", services.PG_ADMIN_URL)


@pytest.mark.slow
@pytest.mark.bench
@pytest.mark.timeout(180)
def test_the_shutdown_benchmark_times_warm_shutdowns_of_busy_workers(
    tmp_path: Path,
) -> None:
    lines: list[str] = []
    report = shutdown.run(tmp_path, runs=2, out=lines.append)
    timed = [line for line in lines if line.startswith("shutdown ")]
    assert len(timed) == 2 and report["runs"] == 2, lines
    assert report["all_exit_0"], lines  # a warm shutdown ends with exit 0, step committed
    assert 0 < report["median_s"] <= report["slowest_s"] < 60
    assert report["goal_s"] == report["budget_s"] + shutdown.MARGIN_S
    assert lines[-1].startswith("warm shutdown of a busy worker: median"), lines


@pytest.mark.slow
@pytest.mark.bench
@pytest.mark.timeout(240)
def test_the_throughput_benchmark_moves_every_row_with_each_contender(
    tmp_path: Path,
) -> None:
    lines: list[str] = []
    report = throughput.run(tmp_path, rows=4000, out=lines.append)
    # every contender ran, and moved every row (each one checks its own count, or raises)
    names = [r["name"] for r in report["runs"]]
    assert names == [
        "COPY pipe",
        "tuned script",
        "Baton PG→PG, 1 worker",
        "Baton PG→PG, 2 workers",
        "sqlite-tuned script",
        "Baton SQLite→PG, 2 workers",
        "Baton PG→PG, 2 workers, chunk_rows 50,000",
        "Baton SQLite→PG, 2 workers, chunk_rows 50,000",
        "COPY pipe (2)",
        "Baton PG→PG, 2 workers (2)",
        "COPY pipe (3)",
        "Baton PG→PG, 2 workers (3)",
        "naive script",
    ], lines
    assert all(r["rows"] == 4000 and r["wall_s"] > 0 for r in report["runs"])
    assert set(report["ratios"]) == {"pg_vs_tuned", "pg_vs_pipe", "sqlite_vs_tuned", "naive_vs_pg"}
    # the pipe ratio is the median of the pairs run side by side
    assert len(report["pipe_pairs"]) == 3
    assert report["ratios"]["pg_vs_pipe"] == sorted(report["pipe_pairs"])[1]
    assert set(report["ratios_with_larger_chunks"]) == {
        "pg_vs_tuned",
        "pg_vs_pipe",
        "sqlite_vs_tuned",
    }
    baton = report["runs"][3]["extra"]
    assert baton["chunks"] >= 1 and baton["state_db_xacts_per_chunk"] > 0, baton
    assert set(baton["step_ms_per_chunk"]) == {"extract", "transform", "load"}, baton
    assert any(r["peak_rss_mb"] > 0 for r in report["runs"])


@pytest.mark.slow
@pytest.mark.bench
@pytest.mark.timeout(240)
def test_the_scale_benchmark_times_both_sizes_and_weighs_each_worker(
    tmp_path: Path,
) -> None:
    lines: list[str] = []
    report = scale.run(tmp_path, out=lines.append, rows=(2000, 20000))
    # each size moved every row (Baton's run checks its own count, or raises)
    assert [r["rows"] for r in report["runs"]] == [2000, 20000], lines
    assert report["rows_ratio"] == 10 and report["time_ratio"] > 0, lines
    assert 0 < report["peak_rss_mb"] == max(r["peak_rss_mb"] for r in report["runs"]), lines
    assert [line.split()[0] for line in lines[-2:]] == ["time_ratio", "peak_rss_mb"], lines


@pytest.mark.slow
@pytest.mark.bench
@pytest.mark.timeout(180)
def test_the_coordination_benchmark_reads_the_state_db_s_own_statistics(
    tmp_path: Path,
) -> None:
    lines: list[str] = []
    report = coordination.run(tmp_path, chunks=12, out=lines.append)
    # one chunk per row (and the open-ended last one), each costing the state DB something,
    # through no-op ends and through SQL ones
    for run in (report, report["with_sql_ends"]):
        assert run["chunks"] >= 12, lines
        assert run["state_db_xacts_per_chunk"] >= 1 and run["state_db_ms_per_chunk"] > 0, lines
        assert set(run["step_ms_per_chunk"]) == {"extract", "transform", "load"}, lines
        # the server is local here: the capacity is reckoned from its sessions' CPU
        cpu_ms = run["state_db_cpu_ms_per_chunk"]
        assert cpu_ms is not None and cpu_ms > 0, lines
        assert run["chunks_per_s_per_core"] == pytest.approx(1000 / cpu_ms, rel=0.02), lines
        assert run["worker_cpu_ms_per_chunk"] > 0 and run["redis_cpu_ms_per_chunk"] >= 0, lines
        # a chunk's orchestration: all it costs the workers, the state DB and Redis
        parts = cpu_ms + run["worker_cpu_ms_per_chunk"] + run["redis_cpu_ms_per_chunk"]
        assert run["orchestration_ms_per_chunk"] == pytest.approx(parts, abs=0.02), lines
    assert set(report["goals"]) == {"chunks_per_s_per_core", "orchestration_ms_per_chunk"}
    # the no-op ends leave the database work out: a real source and target cost more
    sql = report["with_sql_ends"]
    assert sql["orchestration_ms_per_chunk"] > report["orchestration_ms_per_chunk"], lines


def test_the_bench_help_gives_the_deploys_benchmark_s_own_default_scale() -> None:
    from click.testing import CliRunner

    from ops.bench import deploys
    from ops.cli import main

    shown = CliRunner().invoke(main, ["bench", "--help"], terminal_width=200)
    assert shown.exit_code == 0, shown.output
    assert f"[default: {deploys.SCALE:g}," in " ".join(shown.output.split())
