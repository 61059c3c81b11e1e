"""The progress arithmetic: expected rows, the recent window without paused seconds, ETA."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from etl_tasks.progress import (
    RATE_WINDOW_S,
    UNFINISHED_CAP,
    Figures,
    StreamFigures,
    pause_overlap,
)

T0 = datetime(2026, 1, 1, 12, 0, 0)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_expected_rows_take_the_estimate_until_planning_knows_more() -> None:
    early = StreamFigures(
        state="running", rows_estimate=100_000, chunk_rows=1000, chunks_total=16, chunks_done=2
    )
    early.rows = 2000
    assert early.expected_rows() == 100_000  # planning has seen 16,000 so far
    low = StreamFigures(state="running", rows_estimate=5, chunk_rows=1000, chunks_total=3)
    assert low.expected_rows() == 3000  # the estimate was low: what is planned wins
    planned = StreamFigures(
        state="running", fully_planned=True, rows_estimate=100_000, chunk_rows=1000
    )
    planned.chunks_total, planned.chunks_done, planned.rows = 10, 8, 8000
    assert planned.expected_rows() == 10_000  # fully planned: the estimate no longer counts
    done = StreamFigures(state="done", rows_estimate=100_000, rows=9_876, chunk_rows=1000)
    assert done.expected_rows() == 9_876
    unknown = StreamFigures(state="pending", rows_estimate=None)
    assert unknown.expected_rows() == 0


def test_pause_overlap() -> None:
    assert pause_overlap(at(0), at(30), None, None) == 0.0
    assert pause_overlap(at(0), at(30), at(10), at(20)) == 10.0
    assert pause_overlap(at(0), at(30), at(-50), at(5)) == 5.0  # began before the window
    assert pause_overlap(at(0), at(30), at(25), None) == 5.0  # still paused
    assert pause_overlap(at(0), at(30), at(-60), at(-40)) == 0.0  # long over
    assert pause_overlap(at(0), at(30), at(10), at(5)) == 20.0  # resumed before a new pause


def test_rate_and_eta_leave_paused_seconds_out() -> None:
    stream = StreamFigures(
        state="running", rows_estimate=10_000, chunk_rows=500, chunks_total=8, chunks_done=4
    )
    stream.rows, stream.recent_rows = 2000, 1000
    running = Figures("running", started_at=at(0), finished_at=None, streams=[stream])
    now = at(100)
    assert running.window_s(now) == RATE_WINDOW_S
    view = running.as_dict(now)
    assert view["rows_per_s"] == pytest.approx(1000 / RATE_WINDOW_S, abs=0.1)
    assert view["eta_s"] == pytest.approx((10_000 - 2000) / (1000 / RATE_WINDOW_S), abs=0.1)
    assert view["percent"] == 20.0 and not view["fully_planned"]
    # Resumed 10 s ago after a 60 s pause: only 10 s of the window ran.
    resumed = Figures(
        "running",
        started_at=at(0),
        finished_at=None,
        paused_at=at(30),
        resumed_at=at(90),
        paused_s=60.0,
        streams=[stream],
    )
    assert resumed.window_s(now) == pytest.approx(10.0)
    assert resumed.as_dict(now)["rows_per_s"] == pytest.approx(100.0)
    # Started 4 s ago: the window is the 4 s it has run.
    young = Figures("running", started_at=at(96), finished_at=None, streams=[stream])
    assert young.window_s(now) == pytest.approx(4.0)
    assert young.as_dict(now)["eta_s"] == pytest.approx(8000 / 250.0, abs=0.1)
    # Its first counted chunk started 2 s ago: the seconds of preparing and planning before
    # it are not in the window
    stream.recent_since = at(98)
    assert young.window_s(now) == pytest.approx(2.0)
    stream.recent_since = at(60)  # before the window began: the whole window counts
    assert running.window_s(now) == RATE_WINDOW_S


def test_paused_and_finished_migrations() -> None:
    stream = StreamFigures(state="running", rows_estimate=1000, chunk_rows=100, chunks_total=5)
    stream.chunks_done, stream.rows, stream.recent_rows = 5, 1000, 500
    paused = Figures(
        "paused", started_at=at(0), finished_at=None, paused_at=at(40), streams=[stream]
    )
    view = paused.as_dict(at(100))
    assert view["eta_s"] is None and view["rows_per_s"] == 0.0
    assert view["paused_s"] == 60.0  # the pause that is still going on counts
    assert view["percent"] == UNFINISHED_CAP  # every row handled, but it has not succeeded
    assert view["throughput_rows_per_s"] == pytest.approx(1000 / 40, abs=0.1)
    done = StreamFigures(state="done", rows=1000, chunk_rows=100, chunks_total=5, chunks_done=5)
    finished = Figures(
        "succeeded", started_at=at(0), finished_at=at(50), paused_s=10.0, streams=[done]
    )
    view = finished.as_dict(at(500))
    assert view["percent"] == 100.0 and view["eta_s"] is None
    assert view["throughput_rows_per_s"] == pytest.approx(1000 / 40, abs=0.1)
