"""A slow step keeps its chunk: transform renews its lease as it goes, as extract and load do."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from etl_tasks.chunk_lease import claim
from etl_tasks.settings import Settings
from etl_tasks.state.models import Chunk
from etl_tasks.transforms import registry
from etl_tasks.transforms.registry import Transform
from tests.data import build_source, spec_for, sqlite_url, submit
from tests.harness import Driver


def _slow(value: Any, args: Mapping[str, Any]) -> Any:
    time.sleep(0.002)
    return value


def test_a_transform_longer_than_its_lease_is_not_taken_over(
    make_settings: Callable[..., Settings], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a transform that takes 0.002 s a row, and a lease of 1 s
    monkeypatch.setitem(registry._transforms, "test-slow", Transform("test-slow", _slow))
    settings = make_settings(lease_s=1.0, step_budget_s=0.5)
    legacy = sqlite_url(tmp_path / "legacy.db")
    build_source(legacy, customers=1500, orders=1)
    spec = spec_for(legacy, sqlite_url(tmp_path / "t.db"), chunk_rows=5000)
    spec["streams"] = spec["streams"][:1]
    spec["streams"][0]["columns"]["full_name"] = {"from": "FullName", "transform": "test-slow"}
    driver = Driver(settings)
    other = Driver(settings, name="other")
    try:
        submit(driver.rt.db, driver.publisher, spec)
        driver.run(on_message=lambda task, _: task != "baton.transform")  # up to transform
        chunk_id = _chunk_in(driver, "transform")
        # When one worker transforms its 1500 rows (3 s) and another tries to take the
        # chunk once the first lease would have run out
        worker = threading.Thread(
            target=driver.deliver, args=("baton.transform", {"chunk_id": chunk_id})
        )
        worker.start()
        time.sleep(1.6)
        taken = claim(other.rt, chunk_id, "transform")
        worker.join()
        # Then the chunk was still leased to the first, whose work counted
        assert taken is None
        assert _chunk_in(driver, "load") == chunk_id
    finally:
        driver.close()
        other.close()


def _chunk_in(driver: Driver, step: str) -> int:
    with driver.rt.db.reading() as s:
        chunk = s.query(Chunk).filter(Chunk.step == step).one()
        return int(chunk.id)
