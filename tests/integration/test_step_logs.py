"""A worker logs one line per chunk at INFO (its load's), the steps before it at DEBUG."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from etl_tasks.settings import Settings
from tests.data import build_items, items_spec, sqlite_url, submit
from tests.harness import Driver

STEP_LOGGER = "etl_tasks.steps"


def _step_lines(
    make_settings: Callable[..., Settings], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> dict[str, list[int]]:
    """The step lines of a 3-chunk migration, by level: the steps they name."""
    source = sqlite_url(tmp_path / "legacy.db")
    build_items(source, 30)
    driver = Driver(make_settings(), chain=True)
    try:
        spec = items_spec(source, sqlite_url(tmp_path / "target.db"), chunk_rows=10)
        mid = submit(driver.rt.db, driver.publisher, spec)
        assert driver.run_to_end(mid) == "succeeded"
    finally:
        driver.close()
    lines: dict[str, list[int]] = {}
    for record in caplog.records:
        if record.name == STEP_LOGGER and " done in " in record.getMessage():
            lines.setdefault(record.getMessage().split()[0], []).append(record.levelno)
    return lines


def test_at_info_a_chunk_is_one_line_when_its_load_is_done(
    make_settings: Callable[..., Settings], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Given the shipped log level
    with caplog.at_level(logging.INFO, logger=STEP_LOGGER):
        lines = _step_lines(make_settings, tmp_path, caplog)
    # Then each chunk's load logged its line, and no step before it did
    assert set(lines) == {"load"}
    assert len(lines["load"]) >= 3 and set(lines["load"]) == {logging.INFO}


def test_at_debug_every_step_is_a_line(
    make_settings: Callable[..., Settings], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger=STEP_LOGGER):
        lines = _step_lines(make_settings, tmp_path, caplog)
    assert set(lines) == {"extract", "transform", "load"}
    assert set(lines["extract"]) == set(lines["transform"]) == {logging.DEBUG}
    assert len(lines["extract"]) == len(lines["transform"]) == len(lines["load"])
