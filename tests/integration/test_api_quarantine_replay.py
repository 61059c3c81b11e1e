"""``POST /api/v1/migrations/{id}/quarantine/replay``: amended columns fix a cast failure,
and every refusal (404, 409, 403, 415, 400, 422) changes nothing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import func, select, update

from etl_tasks import control
from etl_tasks.boundary.sealing import new_key
from etl_tasks.constants import TASK_PLAN
from etl_tasks.settings import Settings
from etl_tasks.state.models import Chunk, Event, Migration, QuarantinedRow
from etl_tasks.views import list_quarantine, migration_view
from tests.checks import assert_migrated
from tests.data import bad_lines, build_source, spec_for, sqlite_url, submit
from tests.harness import Driver
from tests.integration.api_support import MIGRATIONS, Api, bearer, make_api
from tests.integration.fidelity_support import pg_exec, sqlite_db
from tests.integration.test_api_masking import _quarantine_two_rows
from tests.integration.test_dashboard import _sign_in

LEGACY = "CREATE TABLE items (id INTEGER PRIMARY KEY, qty TEXT NOT NULL, qty_num INTEGER);"
TARGET = "CREATE TABLE items (id int PRIMARY KEY, qty int NOT NULL)"
ROWS = 30
WORDS = {4: "four", 11: "eleven", 23: "twenty-three"}
CAST = {"from": "qty", "transform": "int"}
CANARY = "canary-pw-5d2b"


def _spec(source: str, target: str) -> dict[str, Any]:
    return {
        "name": "replay-api",
        "source": {"url": source},
        "target": {"url": target},
        "chunk_rows": 10,
        "streams": [
            {"source_table": "items", "target_table": "items", "columns": {"id": "id", "qty": CAST}}
        ],
    }


@pytest.fixture
def migrated(driver: Driver, tmp_path: Path, pg_url: str) -> tuple[str, dict[str, Any]]:
    """A succeeded migration whose three quantities written as words failed the cast."""
    rows = [(i, WORDS.get(i, str(i)), i) for i in range(1, ROWS + 1)]
    source = sqlite_db(tmp_path / "legacy.db", LEGACY, {"items": rows})
    pg_exec(pg_url, TARGET)
    spec = _spec(source, pg_url)
    mid = submit(driver.rt.db, driver.publisher, spec)
    driver.run_to_end(mid)
    view = migration_view(driver.rt.db, mid)
    assert (view["state"], view["rows_quarantined"]) == ("succeeded", len(WORDS)), view
    return mid, spec


def _url(mid: str) -> str:
    return f"{MIGRATIONS}/{mid}/quarantine/replay"


def _snapshot(driver: Driver, mid: str) -> tuple[Any, ...]:
    with driver.rt.db.reading() as s:
        mig = s.get(Migration, mid)
        assert mig is not None
        return (
            mig.state,
            orjson.dumps(mig.spec, option=orjson.OPT_SORT_KEYS),
            s.scalar(select(func.count()).select_from(Chunk).where(Chunk.migration_id == mid)),
            s.scalar(select(func.count()).select_from(Event).where(Event.migration_id == mid)),
            sorted(
                (r.key, r.status, r.reason)
                for r in s.scalars(select(QuarantinedRow).where(QuarantinedRow.migration_id == mid))
            ),
        )


def test_amended_columns_fix_a_cast_failure_and_are_kept_as_a_revision(
    api: Api, driver: Driver, migrated: tuple[str, dict[str, Any]]
) -> None:
    mid, spec = migrated
    driver.rt.binding(mid, "items")  # a worker that still holds the first revision
    # When the replay amends the stream's columns: the quantity from the numeric column
    fixed = {"id": "id", "qty": {"from": "qty_num"}}
    resp = api.client.post(_url(mid), json={"streams": {"items": {"columns": fixed}}})
    # Then it is accepted, the spec is revised, the revision recorded in an event
    assert resp.status_code == 202, resp.get_data(as_text=True)
    body = resp.get_json()
    assert (body["rows"], body["revised_streams"], body["migration"]["state"]) == (
        3,
        ["items"],
        "running",
    )
    assert api.plans() == [mid]
    with driver.rt.db.reading() as s:
        stored = s.get(Migration, mid).spec  # type: ignore[union-attr]
        revised = s.scalar(
            select(Event.message).where(Event.migration_id == mid, Event.kind == "spec_revised")
        )
    assert stored["streams"][0]["columns"] == fixed
    assert orjson.loads(revised or "{}") == {
        "columns": {"items": {"previous": {"id": "id", "qty": CAST}, "revised": fixed}}
    }
    # and once the workers ran it, the three rows loaded through the amended columns
    driver.deliver(TASK_PLAN, {"migration_id": mid})
    driver.run_to_end(mid)
    view = migration_view(driver.rt.db, mid)
    assert (view["state"], view["rows_loaded"], view["rows_quarantined"]) == (
        "succeeded",
        ROWS,
        0,
    ), view
    assert list_quarantine(driver.rt.db, mid) == []
    spec["streams"][0]["columns"] = fixed
    assert_migrated(driver.rt.db, mid, spec, expected_bad={"items": 0})


BAD_AMENDMENTS: list[tuple[Any, str | None]] = [
    ({"streams": {"nope": {"columns": {"id": "id"}}}}, "streams/nope"),
    ({"streams": {"items": {"columns": {"id": "id", "qty": "missing"}}}}, None),  # preflight
    ({"streams": {"items": {"columns": {}}}}, None),
    ({"streams": {"items": {"cols": {"id": "id"}}}}, "streams/items/cols"),
    ({"replay": True}, "replay"),
    (["not", "an", "object"], None),
]


def test_a_bad_amendment_is_refused_whole(
    api: Api, driver: Driver, migrated: tuple[str, dict[str, Any]]
) -> None:
    mid, _ = migrated
    before = _snapshot(driver, mid)
    for body, path in BAD_AMENDMENTS:
        resp = api.client.post(_url(mid), json=body)
        assert resp.status_code == 422, (body, resp.get_data(as_text=True))
        answer = resp.get_json()
        assert answer["errors"], answer
        if path is not None:
            assert path in [e["path"] for e in answer["errors"]], answer
    assert _snapshot(driver, mid) == before
    assert api.plans() == []


def test_refusals_by_state_media_and_role_change_nothing(
    api: Api, secured: Api, driver: Driver, migrated: tuple[str, dict[str, Any]]
) -> None:
    mid, spec = migrated
    before = _snapshot(driver, mid)
    assert api.client.post(_url("0" * 32)).status_code == 404
    not_json = api.client.post(_url(mid), data="{", content_type="application/json")
    assert not_json.status_code == 400
    as_text = api.client.post(_url(mid), data="{}", content_type="text/plain")
    assert as_text.status_code == 415
    viewer = secured.client.post(_url(mid), headers=bearer(secured.token("viewer")))
    assert viewer.status_code == 403
    assert _snapshot(driver, mid) == before
    # A paused or cancelled migration is not replayed
    other = submit(driver.rt.db, driver.publisher, spec)
    control.pause(driver.rt.db, other, "test")
    paused = _snapshot(driver, other)
    resp = api.client.post(_url(other))
    assert resp.status_code == 409 and "paused" in resp.get_json()["error"]
    assert _snapshot(driver, other) == paused
    control.cancel(driver.rt.db, other, "test")
    assert api.client.post(_url(other)).status_code == 409
    # One replay at a time: a second is refused while the first runs
    operator = secured.client.post(_url(mid), headers=bearer(secured.token("operator")))
    assert operator.status_code == 202, operator.get_data(as_text=True)
    running = _snapshot(driver, mid)
    again = api.client.post(_url(mid))
    assert again.status_code == 409 and "already running" in again.get_json()["error"]
    assert _snapshot(driver, mid) == running


def test_a_revision_of_a_sealed_spec_stays_sealed(
    make_settings: Callable[..., Settings], tmp_path: Path, pg_url: str
) -> None:
    # Given a migration whose target URL holds a password, sealed, with bad order lines
    settings = make_settings(secret_keys=new_key())
    driver, api = Driver(settings), make_api(settings)
    legacy = sqlite_url(tmp_path / "legacy.db")
    build_source(legacy, customers=5, orders=10, bad_every=7)
    spec = spec_for(legacy, pg_url.replace("postgres@", f"postgres:{CANARY}@"), chunk_rows=20)
    mid = api.created(spec)
    driver.deliver(TASK_PLAN, {"migration_id": mid})
    driver.run_to_end(mid)
    assert migration_view(driver.rt.db, mid)["rows_quarantined"] == bad_lines(10, 3, 7)
    # When the replay revises the order lines' quantity (a constant, for the test)
    lines = dict(spec["streams"][1]["columns"], qty={"value": 0})
    resp = api.client.post(_url(mid), json={"streams": {"order_lines": {"columns": lines}}})
    assert resp.status_code == 202, resp.get_data(as_text=True)
    # Then the revised spec is kept sealed: no password in clear, and the workers open it
    with driver.rt.db.reading() as s:
        mig = s.get(Migration, mid)
        assert mig is not None and mig.sealed is not None
        assert CANARY not in orjson.dumps(mig.spec).decode()
        assert mig.spec["streams"][1]["columns"]["qty"] == {"value": 0}
    driver.deliver(TASK_PLAN, {"migration_id": mid})
    driver.run_to_end(mid)
    view = migration_view(driver.rt.db, mid)
    assert (view["state"], view["rows_quarantined"]) == ("succeeded", 0), view
    driver.close()


def test_the_pages_replay_control_wants_an_operator_and_the_csrf_token(
    secured: Api, spec: dict[str, Any]
) -> None:
    mid = secured.created(spec, bearer(secured.token("operator")))
    _quarantine_two_rows(secured, mid)
    db = secured.app.extensions["baton"].db
    with db.session() as s:
        s.execute(update(Migration).where(Migration.id == mid).values(state="succeeded"))
    url = f"/migrations/{mid}/quarantine/replay"
    # A viewer sees no replay control, and one posted anyway is refused
    viewer_csrf = _sign_in(secured, "viewer")
    assert "Replay quarantined rows" not in secured.client.get(f"/migrations/{mid}").text
    assert secured.client.post(url, data={"csrf": viewer_csrf}).status_code == 403
    # An operator's post without the page's CSRF token is refused, and changes nothing
    operator = Api(secured.app, secured.app.test_client(), secured.publisher)
    csrf = _sign_in(operator, "operator")
    assert "Replay quarantined rows" in operator.client.get(f"/migrations/{mid}").text
    assert operator.client.post(url, data={"csrf": "forged"}).status_code == 403
    assert migration_view(db, mid)["state"] == "succeeded"
    # With it, the rows are read again and the migration runs again
    resp = operator.client.post(url, data={"csrf": csrf})
    assert resp.status_code == 302
    assert migration_view(db, mid)["state"] == "running"
    page = operator.client.get(f"/migrations/{mid}").text
    assert "replay: 2 quarantined rows are read again" in page
    assert secured.plans() == [mid, mid]  # the submit's and the replay's
