"""Quarantined rows on a migration's page: downloaded as CSV, then replayed once the source
is fixed, until the page shows the quarantine empty and the deleted row gone at source;
their values purged by an admin, once confirmed."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from etl_tasks.retention import PURGED_KEY
from etl_tasks.state.models import Event, QuarantinedRow
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


def _finished_with_quarantine(system: System, tmp_path: Path, **spec_args: Any) -> str:
    """A finished migration of a legacy DB whose order lines with a quantity written
    "many" were quarantined."""
    source = tmp_path / "legacy.db"
    build_source(sqlite_url(source), customers=5, orders=ORDERS, bad_every=BAD_EVERY)
    spec = spec_for(sqlite_url(source), sqlite_url(tmp_path / "target.db"), **spec_args)
    mid = system.submit(spec)
    system.driver.run_to_end(mid)
    return mid


def test_download_then_replay_from_the_page(system: System, page: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    # Given a migration whose order lines with a quantity written "many" were quarantined
    mid = _finished_with_quarantine(system, tmp_path, chunk_rows=20)
    source = tmp_path / "legacy.db"
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
    system.driver.run_to_end(mid)
    # Then the page shows the quarantine empty but for the line gone at source
    page.reload()
    expect(page.get_by_test_id("state")).to_have_text("succeeded")
    expect(page.get_by_test_id("quarantined-order_lines")).to_have_text("0")
    expect(page.get_by_test_id("gone-order_lines")).to_have_text("1")
    expect(page.get_by_test_id("quarantine")).to_contain_text("gone")
    expect(page.get_by_role("button", name="Replay quarantined rows")).to_have_count(0)
    expect(page.get_by_test_id("purge")).to_have_count(0)  # admins only
    screenshot(page, "migration-replayed.png")


def test_a_viewer_downloads_masked_rows_and_cannot_replay(
    system: System, page: Any, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    mid = _finished_with_quarantine(system, tmp_path)
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
    # and a viewer is not offered the purge, and a purge posted is refused
    expect(page.get_by_test_id("purge")).to_have_count(0)
    answer = page.request.post(
        f"{system.api.url}/migrations/{mid}/quarantine/purge", form={"confirm": "purge"}
    )
    assert answer.status == 403
    assert _values_held(system, mid) == bad_lines(ORDERS, LINES, BAD_EVERY)


def _values_held(system: System, mid: str) -> int:
    """Quarantined rows of ``mid`` that still hold values or a key, in the state DB."""
    with system.driver.rt.db.reading() as s:
        rows = list(s.scalars(select(QuarantinedRow).where(QuarantinedRow.migration_id == mid)))
    return sum(1 for q in rows if q.row is not None or q.key != PURGED_KEY)


def _live_update(page: Any, mid: str) -> None:
    """Deliver the live event ``m-<mid>`` to every element listening for it, as the page's
    SSE extension does with each event the stream brings."""
    page.evaluate(
        """(name) => document.querySelectorAll(`[hx-trigger*="${name}"]`)
                      .forEach((el) => htmx.trigger(el, name))""",
        f"sse:m-{mid}",
    )


def _detail_refresh(page: Any, system: System, mid: str) -> Any:
    fragment = f"{system.api.url}/migrations/{mid}/fragments/detail"
    return page.expect_response(lambda r: r.url.startswith(fragment), timeout=15_000)


def _admin_on_finished_page(system: System, page: Any, tmp_path: Path) -> str:
    """An admin on the page of a finished migration with quarantined rows, once the page's
    first live event has refreshed its details; the migration's id."""
    mid = _finished_with_quarantine(system, tmp_path)
    sign_in(page, system, "admin")
    with _detail_refresh(page, system, mid):
        page.goto(f"{system.api.url}/migrations/{mid}")
    return mid


def test_the_details_catch_up_with_the_last_change_of_a_burst(
    system: System, page: Any, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    # Given an admin on a finished migration's page, just refreshed by its first live event
    mid = _admin_on_finished_page(system, page, tmp_path)
    expect(page.get_by_test_id("quarantine")).to_contain_text("Qty=many")
    # When the migration changes and its next live event comes within the 3 s throttle
    csrf = page.locator("details.purge input[name=csrf]").get_attribute("value")
    answer = page.request.post(
        f"{system.api.url}/migrations/{mid}/quarantine/purge",
        form={"csrf": csrf or "", "confirm": "purge"},
    )
    assert answer.ok
    _live_update(page, mid)
    # Then the details still show the change, a few seconds on, without a reload
    expect(page.get_by_test_id("quarantine")).not_to_contain_text("many", timeout=10_000)


def test_a_live_update_that_changes_nothing_leaves_the_page_as_it_is(
    system: System, page: Any, tmp_path: Path
) -> None:
    # Given an admin on a finished migration's page, its download link marked in the page
    mid = _admin_on_finished_page(system, page, tmp_path)
    link = page.get_by_test_id("download-csv")
    link.evaluate("(el) => { el.batonMark = 'kept' }")
    # When a live event comes and the details have not changed
    with _detail_refresh(page, system, mid) as refresh:
        _live_update(page, mid)
    assert refresh.value.status == 204
    page.wait_for_timeout(300)  # a swap would settle after the response
    # Then the link is the very element it was: nothing under the pointer was replaced
    assert link.evaluate("(el) => el.batonMark") == "kept"


def _note_event(system: System, mid: str) -> None:
    """Something that changes the migration's details: one more event in its log."""
    with system.driver.rt.db.session() as s:
        s.add(Event(migration_id=mid, kind="note", message="noted", at=system.driver.rt.db.now(s)))


def test_an_open_purge_form_outlives_the_pages_live_refresh(
    system: System, page: Any, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    # Given an admin on a finished migration's page, the purge form open and its box ticked
    mid = _admin_on_finished_page(system, page, tmp_path)
    page.get_by_text("Purge quarantined values…").click()
    page.get_by_label("Yes, remove them for good").check()
    # When the migration changes and the page's details are refreshed by a live update
    _note_event(system, mid)
    with _detail_refresh(page, system, mid) as refresh:
        _live_update(page, mid)
    assert refresh.value.status == 200
    expect(page.get_by_test_id("events")).to_contain_text("noted")
    # Then the form is still open and still ticked: the admin's half-done action stays
    expect(page.get_by_label("Yes, remove them for good")).to_be_visible()
    expect(page.get_by_label("Yes, remove them for good")).to_be_checked()


def test_an_admin_purges_the_quarantined_values_once_confirmed(
    system: System, page: Any, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    # Given a finished migration with quarantined order lines, on an admin's page
    mid = _finished_with_quarantine(system, tmp_path)
    bad = bad_lines(ORDERS, LINES, BAD_EVERY)
    sign_in(page, system, "admin")
    page.goto(f"{system.api.url}/migrations/{mid}")
    expect(page.get_by_test_id("state")).to_have_text("succeeded")
    expect(page.get_by_test_id("quarantine")).to_contain_text("Qty=many")
    # When the admin opens the purge control and submits it without ticking the box
    page.get_by_text("Purge quarantined values…").click()
    purge = page.get_by_role("button", name="Purge quarantined values")
    purge.click()
    # Then the browser keeps the form, and a post without the confirmation removes nothing
    expect(page.get_by_label("Yes, remove them for good")).to_be_visible()
    csrf = page.locator("details.purge input[name=csrf]").get_attribute("value")
    answer = page.request.post(
        f"{system.api.url}/migrations/{mid}/quarantine/purge", form={"csrf": csrf or ""}
    )
    assert answer.ok and "nothing removed" in answer.text()
    assert _values_held(system, mid) == bad
    # When it is confirmed
    page.reload()
    page.get_by_text("Purge quarantined values…").click()
    page.get_by_label("Yes, remove them for good").check()
    page.get_by_role("button", name="Purge quarantined values").click()
    # Then every value and key is gone, the counts stay, and the event names the admin
    expect(page.locator(".flash")).to_have_text(
        f"purge: the values of {bad} quarantined rows were removed"
    )
    assert _values_held(system, mid) == 0
    expect(page.get_by_test_id("quarantine")).not_to_contain_text("many")
    expect(page.get_by_test_id("quarantined-order_lines")).to_have_text(str(bad))
    expect(page.get_by_test_id("events")).to_contain_text("purged by")
    expect(page.get_by_test_id("purge")).to_have_count(0)  # nothing left to purge
    text = page.request.get(f"{system.api.url}/migrations/{mid}/quarantine.jsonl").text()
    assert len(text.splitlines()) == bad and "many" not in text
