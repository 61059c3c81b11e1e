"""Quarantined rows on a migration's page: downloaded as CSV, then replayed once the source
is fixed, until the page shows the quarantine empty and the deleted row gone at source."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import System, screenshot, sign_in
from tests.data import bad_lines, build_source, spec_for, sqlite_url

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]

ORDERS, LINES, BAD_EVERY = 12, 3, 7


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1200, "height": 900}, accept_downloads=True)
    p = context.new_page()
    yield p
    context.close()


def test_download_then_replay_from_the_page(system: System, page: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    # Given a migration whose order lines with a quantity written "many" were quarantined
    source = tmp_path / "legacy.db"
    build_source(sqlite_url(source), customers=5, orders=ORDERS, bad_every=BAD_EVERY)
    spec = spec_for(sqlite_url(source), sqlite_url(tmp_path / "target.db"), chunk_rows=20)
    mid = system.submit(spec)
    system.driver.run()
    bad = bad_lines(ORDERS, LINES, BAD_EVERY)
    assert bad >= 3
    sign_in(page, system, "operator")
    page.goto(f"{system.api.url}/migrations/{mid}")
    expect(page.get_by_test_id("quarantined-order_lines")).to_have_text(str(bad))
    # When an operator downloads them from the page
    with page.expect_download() as event:
        page.get_by_test_id("download-csv").click()
    text = Path(event.value.path()).read_text(encoding="utf-8")
    # Then the CSV holds every quarantined row, with its key, reason and values
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == bad and {r["stream"] for r in rows} == {"order_lines"}
    assert all(json.loads(r["row"])["Qty"] == "many" for r in rows), rows[:2]
    assert all(r["status"] == "quarantined" and r["reason"] for r in rows)
    keys = [json.loads(r["key"]) for r in rows]
    # When the source is fixed (one of those lines deleted instead) and they are replayed
    conn = sqlite3.connect(source)
    conn.execute('DELETE FROM "OrderLine" WHERE "OrderId" = ? AND "LineNo" = ?', keys[0])
    conn.execute("""UPDATE "OrderLine" SET "Qty" = '2' WHERE "Qty" = 'many'""")
    conn.commit()
    conn.close()
    page.get_by_role("button", name="Replay quarantined rows").click()
    expect(page.locator(".flash")).to_have_text(f"replay: {bad} quarantined rows are read again")
    expect(page.get_by_test_id("state")).to_have_text("running")
    system.driver.publisher.queue.append(("baton.plan", {"migration_id": mid}))
    system.driver.run()
    # Then the page shows the quarantine empty but for the line gone at source
    page.reload()
    expect(page.get_by_test_id("state")).to_have_text("succeeded")
    expect(page.get_by_test_id("quarantined-order_lines")).to_have_text("0")
    expect(page.get_by_test_id("gone-order_lines")).to_have_text("1")
    expect(page.get_by_test_id("quarantine")).to_contain_text("gone")
    expect(page.get_by_role("button", name="Replay quarantined rows")).to_have_count(0)
    screenshot(page, "migration-replayed.png")


def test_a_viewer_downloads_masked_rows_and_cannot_replay(
    system: System, page: Any, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    source = tmp_path / "legacy.db"
    build_source(sqlite_url(source), customers=5, orders=ORDERS, bad_every=BAD_EVERY)
    mid = system.submit(spec_for(sqlite_url(source), sqlite_url(tmp_path / "t.db")))
    system.driver.run()
    sign_in(page, system, "viewer")
    page.goto(f"{system.api.url}/migrations/{mid}")
    expect(page.get_by_test_id("download-csv")).to_be_visible()
    expect(page.get_by_role("button", name="Replay quarantined rows")).to_have_count(0)
    with page.expect_download() as event:
        page.get_by_test_id("download-jsonl").click()
    lines = Path(event.value.path()).read_text(encoding="utf-8").splitlines()
    assert lines and "many" not in "".join(lines)
    assert {json.loads(line)["row"]["Qty"] for line in lines} == {"***"}
    # and a replay posted without the operator role is refused
    answer = page.request.post(f"{system.api.url}/migrations/{mid}/quarantine/replay")
    assert answer.status == 403
