"""The progress arithmetic: expected rows, the recent window without paused seconds, ETA."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from etl_tasks.progress import (
    PRIOR_CHUNKS,
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


def _stream(state: str = "running", **counts: int) -> StreamFigures:
    """A stream of 100-row chunks whose source estimated ``estimate`` rows."""
    estimate = counts.pop("estimate", 0)
    return StreamFigures(state=state, rows_estimate=estimate, chunk_rows=100, **counts)


def test_the_eta_counts_each_streams_own_cost_not_one_rate() -> None:
    # Given an expensive stream (1 ms a row) that has just finished and a cheap one
    # (0.25 ms a row) running since, both in the window: 3,000 + 6,000 rows in 30 s
    done = _stream("done", rows=3000, recent_rows=3000, work_ms=3000, recent_work_ms=3000)
    cheap = _stream(estimate=60_000, rows=6000, recent_rows=6000, work_ms=1500, recent_work_ms=1500)
    figures = Figures("running", started_at=at(0), finished_at=None, streams=[done, cheap])
    now = at(100)
    # Then the pace is 4,500 step ms over 30 s, and the 54,000 rows left cost the cheap
    # stream's own 0.25 ms each (pulled a little towards the usual 0.5 by its prior)
    assert figures.pace(now) == pytest.approx(150.0)
    prior = PRIOR_CHUNKS * 100
    cost = (1500 + 0.5 * prior) / (6000 + prior)
    assert figures.eta_s(now) == pytest.approx(54_000 * cost / 150.0, abs=0.1)
    # where the one migration-wide rate (300 rows/s) would say 180 s: twice as long
    assert figures.recent_rate(now) == pytest.approx(300.0)
    assert figures.as_dict(now)["eta_s"] == pytest.approx(54_000 * cost / 150.0, abs=0.1)
    assert figures.as_dict(now)["eta_s"] < 0.6 * 54_000 / 300.0


def test_streams_running_side_by_side_each_cost_their_own() -> None:
    # Given two streams sharing the workers: one at 2 ms a row, one at 0.2 ms a row
    slow = _stream(estimate=10_000, rows=2000, recent_rows=2000, work_ms=4000, recent_work_ms=4000)
    fast = _stream(
        estimate=50_000, rows=10_000, recent_rows=10_000, work_ms=2000, recent_work_ms=2000
    )
    figures = Figures("running", started_at=at(0), finished_at=None, streams=[slow, fast])
    now = at(100)
    # Then the ETA is the work both still have, over the pace they share (6,000 ms / 30 s)
    usual = 6000 / 12_000
    prior = PRIOR_CHUNKS * 100
    work = 8000 * (4000 + usual * prior) / (2000 + prior) + 40_000 * (2000 + usual * prior) / (
        10_000 + prior
    )
    assert figures.eta_s(now) == pytest.approx(work / 200.0, abs=0.1)
    # And swapping which stream has more left changes it: rows are not all alike
    slow.rows_estimate, fast.rows_estimate = 50_000, 10_000 + 2000
    assert figures.eta_s(now) > 3 * (work / 200.0)


def test_a_stream_not_started_costs_the_usual_and_an_idle_one_its_own_past() -> None:
    # Given a stream done long ago (nothing of it in the window) at 1 ms a row, one running
    # at 0.5 ms a row, and one held back by ``after`` with 10,000 rows estimated
    early = _stream("done", rows=1000, work_ms=1000)
    running = _stream(estimate=4000, rows=2000, recent_rows=2000, work_ms=1000, recent_work_ms=1000)
    waiting = _stream("pending", estimate=10_000)
    figures = Figures(
        "running", started_at=at(0), finished_at=None, streams=[early, running, waiting]
    )
    now = at(100)
    usual = (1000 + 1000) / (1000 + 2000)  # every done chunk's cost, per row
    assert waiting.ms_per_row(usual) == usual
    prior = PRIOR_CHUNKS * 100
    own = (1000 + usual * prior) / (2000 + prior)
    assert running.ms_per_row(usual) == pytest.approx(own)
    pace = 1000 / RATE_WINDOW_S
    assert figures.eta_s(now) == pytest.approx((2000 * own + 10_000 * usual) / pace, abs=0.1)
    # A stream that ran before the window costs what all its done chunks cost
    idle = _stream(estimate=5000, rows=1000, work_ms=3000)
    assert idle.ms_per_row(usual) == pytest.approx((3000 + usual * prior) / (1000 + prior))


def test_one_odd_first_chunk_does_not_swing_the_eta() -> None:
    # Given a stream whose first chunk took 5 ms a row (cold caches) after others at 0.1
    before = _stream("done", rows=20_000, recent_rows=20_000, work_ms=2000, recent_work_ms=2000)
    first = _stream(estimate=100_000, rows=100, recent_rows=100, work_ms=500, recent_work_ms=500)
    figures = Figures("running", started_at=at(0), finished_at=None, streams=[before, first])
    usual = 2500 / 20_100
    # Then the usual cost weighs as much as PRIOR_CHUNKS chunks of it (four: a fifth of the way
    # from the usual 0.12 ms to its own 5 ms), not all of it
    assert first.ms_per_row(usual) == pytest.approx(
        (500 + usual * PRIOR_CHUNKS * 100) / (100 + PRIOR_CHUNKS * 100)
    )
    assert first.ms_per_row(usual) < 1.2
    # And once it has many chunks of its own, its own cost wins
    first.rows = first.recent_rows = 20_000
    first.work_ms = first.recent_work_ms = 4000
    assert first.ms_per_row(usual) == pytest.approx(0.2, rel=0.05)
    assert figures.eta_s(at(100)) is not None


def test_without_step_timings_the_eta_is_rows_over_the_rate() -> None:
    stream = _stream(estimate=10_000, rows=2000, recent_rows=1000)
    figures = Figures("running", started_at=at(0), finished_at=None, streams=[stream])
    assert figures.eta_s(at(100)) == pytest.approx(8000 / (1000 / RATE_WINDOW_S), abs=0.1)


def test_a_few_recent_chunks_weigh_against_the_streams_own_past_not_the_usual() -> None:
    # Given a stream with 50 chunks done at 2 ms a row before the window, and one in it at
    # 1 ms a row, beside a cheap stream that sets the usual cost low
    cheap = _stream("done", rows=100_000, work_ms=10_000)
    old = _stream(estimate=100_000, rows=5100, recent_rows=100, work_ms=10_100, recent_work_ms=100)
    usual = (10_000 + 10_100) / (100_000 + 5100)
    prior = PRIOR_CHUNKS * 100
    earlier = (10_000 + usual * prior) / (5000 + prior)
    # Then its cost stays near its own past, not the usual 0.19 ms a row
    assert old.ms_per_row(usual) == pytest.approx((100 + earlier * prior) / (100 + prior))
    assert 1.6 < old.ms_per_row(usual) < 2.0  # the usual alone would give 0.19
    figures = Figures("running", started_at=at(0), finished_at=None, streams=[cheap, old])
    assert figures.eta_s(at(100)) == pytest.approx(
        old.rows_left() * old.ms_per_row(usual) / (100 / RATE_WINDOW_S), abs=0.1
    )
