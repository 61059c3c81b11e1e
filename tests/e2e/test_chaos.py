"""The short chaos tier: every fault kind once, against running migrations; nothing lost."""

from __future__ import annotations

from pathlib import Path

import pytest

from etl_tasks.verify import StreamCheck
from ops.chaos.faults import FAULTS
from ops.chaos.run import MigrationResult, judge_stream, run
from ops.chaos.services import postgres_unavailable
from tests import services


@pytest.mark.slow
@pytest.mark.chaos
@pytest.mark.timeout(480)
def test_short_tier_loses_nothing(tmp_path: Path) -> None:
    # Given root and PostgreSQL binaries, so the harness can run servers it may break
    reason = postgres_unavailable()
    if reason:
        services.unavailable(f"PostgreSQL for the chaos harness ({reason})")
    # When the short tier migrates the demo DB through every kind of fault
    lines: list[str] = []
    verdict = run("short", tmp_path, out=lines.append)
    report = "\n".join(lines)
    print(report)
    # Then every kind struck once, and every migration came out whole
    assert verdict.passed, report
    assert sorted(f.kind for f in verdict.faults) == sorted(FAULTS), report
    assert verdict.rows_lost == 0 and verdict.rows_duplicated == 0, report
    assert verdict.checksum_equal, report
    assert lines[-1].startswith("verdict: PASS"), report


def _judged(check: StreamCheck, target_keys: int, ledger: int = 2) -> MigrationResult:
    result = MigrationResult(1, "succeeded")
    stream = {"rows_loaded": check.target_rows, "rows_quarantined": check.bad_rows}
    stream |= {"chunks_done": 2, "chunks_total": 2}
    judge_stream(result, check, stream, ledger, target_keys, 1)
    return result


def test_the_judge_counts_lost_doubled_and_different_rows() -> None:
    whole = StreamCheck("s", source_rows=11, expected_rows=10, target_rows=10, bad_rows=1)
    assert _judged(whole, target_keys=10).ok
    lost = StreamCheck("s", expected_rows=10, target_rows=8, bad_rows=1, missing=[(1,), (2,)])
    assert _judged(lost, target_keys=8).rows_lost == 2
    hidden = StreamCheck("s", expected_rows=9, target_rows=9, bad_rows=2)  # a good row quarantined
    assert _judged(hidden, target_keys=9).rows_lost == 1
    doubled = StreamCheck("s", expected_rows=10, target_rows=11, bad_rows=1)
    assert _judged(doubled, target_keys=10).rows_duplicated == 1
    assert _judged(whole, target_keys=10, ledger=3).rows_duplicated == 1
    changed = StreamCheck("s", expected_rows=10, target_rows=10, bad_rows=1, different=[((3,), {})])
    assert not _judged(changed, target_keys=10).checksum_equal
