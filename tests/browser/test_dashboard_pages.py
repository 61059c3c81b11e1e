"""The dashboard in a real browser: live progress, 100 % at the end, pause, a viewer's view."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.browser.conftest import System, screenshot, sign_in
from tests.data import build_source, spec_for, sqlite_url

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

STEP_DELAY_S = 0.1  # between two messages the driver delivers: progress a page can watch


def _expect() -> Any:
    from playwright.sync_api import expect

    return expect


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    p = context.new_page()
    refused: list[str] = []
    p.on(
        "console", lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None
    )
    yield p
    context.close()
    assert not refused, refused  # nothing on the pages breaks their own policy


@pytest.fixture
def spec(tmp_path: Path) -> dict[str, Any]:
    source = tmp_path / "legacy.db"
    build_source(sqlite_url(source), customers=240, orders=20)
    return spec_for(sqlite_url(source), sqlite_url(tmp_path / "target.db"), chunk_rows=20)


def _run_in_background(system: System, delay_s: float) -> threading.Thread:
    def slowly(_task: str, _kwargs: dict[str, Any]) -> bool:
        time.sleep(delay_s)
        return True

    thread = threading.Thread(target=system.driver.run, kwargs={"on_message": slowly}, daemon=True)
    thread.start()
    return thread


def _percent(page: Any) -> float:
    text = page.locator("[data-testid=progress] [data-testid=percent]").inner_text()
    return float(text.replace("%", "").strip())


def test_progress_moves_live_and_ends_at_100(
    system: System, page: Any, spec: dict[str, Any]
) -> None:
    expect = _expect()
    mid = system.submit(spec)
    sign_in(page, system, "operator")
    page.goto(f"{system.api.url}/migrations/{mid}")
    expect(page.locator("body[sse-connect]")).to_have_count(1)
    page.evaluate("window.loadedOnce = true")  # gone if the page were reloaded
    start = _percent(page)
    assert start == 0
    # When the migration runs
    worker = _run_in_background(system, STEP_DELAY_S)
    # Then the page's progress moves without a reload: seen between 0 and 100 %
    seen: set[float] = set()
    shot = False
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline and 100.0 not in seen:
        seen.add(_percent(page))
        if not shot and 40 <= max(seen) <= 80:
            page.wait_for_timeout(3500)  # the chunk map and event log follow within 3 s
            screenshot(page, "migration-running.png")
            shot = True
        time.sleep(0.1)
    worker.join(30)
    assert any(0 < p < 100 for p in seen), seen
    # And once it has finished it reads 100 %, still on the same page
    expect(page.locator("[data-testid=progress] [data-testid=percent]")).to_have_text(
        "100 %", timeout=10_000
    )
    expect(page.locator("[data-testid=progress] [data-testid=state]")).to_have_text("succeeded")
    assert page.evaluate("window.loadedOnce") is True
    page.goto(f"{system.api.url}/")
    expect(page.locator(f"tr[data-migration='{mid}'] [data-testid=percent]")).to_have_text("100 %")
    screenshot(page, "migrations.png")


def test_pause_on_the_page_pauses_the_migration(
    system: System, page: Any, spec: dict[str, Any]
) -> None:
    expect = _expect()
    mid = system.submit(spec)
    system.driver.run(max_messages=4)  # planned, a chunk on its way: running
    sign_in(page, system, "operator")
    page.goto(f"{system.api.url}/migrations/{mid}")
    expect(page.locator("[data-testid=progress] [data-testid=state]")).to_have_text("running")
    page.click("button.control.pause")
    expect(page.locator("[data-testid=progress] [data-testid=state]")).to_have_text("paused")
    expect(page.locator(".flash")).to_have_text("pause: done")
    token = system.api.token("viewer", "checker")
    state = requests.get(
        f"{system.api.url}/api/v1/migrations/{mid}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=5,
    ).json()["state"]
    assert state == "paused"
    events = page.locator("[data-testid=events]")
    expect(events).to_contain_text("operator-in-browser")


def test_a_viewer_sees_no_controls(system: System, page: Any, spec: dict[str, Any]) -> None:
    expect = _expect()
    mid = system.submit(spec)
    system.driver.run(max_messages=4)
    sign_in(page, system, "viewer")
    page.goto(f"{system.api.url}/migrations/{mid}")
    expect(page.locator("[data-testid=who]")).to_have_text("viewer-in-browser (viewer)")
    expect(page.locator("[data-testid=progress]")).to_be_visible()
    expect(page.locator("[data-testid=controls]")).to_have_count(0)
    expect(page.locator("button.control")).to_have_count(0)
    screenshot(page, "migration-viewer.png")
    page.goto(f"{system.api.url}/workers")
    expect(page.locator("h1")).to_have_text("Workers")
