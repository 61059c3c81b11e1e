"""The HTTP API through Flask's test client: submit, refusals, listing, controls, probes, auth.

Sources and targets are SQLite files in ``tmp_path`` (one test uses PostgreSQL);
the publisher records plan messages instead of sending them.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url
from werkzeug.test import TestResponse

from etl_tasks.boundary.sealing import new_key
from etl_tasks.settings import Settings
from etl_tasks.state.enums import MigrationState
from etl_tasks.state.models import Migration
from tests.data import sqlite_url
from tests.integration.api_support import (
    MIGRATIONS,
    PLAN_TASK,
    Api,
    Spec,
    bearer,
    error_body,
    make_api,
)

STREAM_FIELDS = {
    "name",
    "state",
    "rows_loaded",
    "rows_quarantined",
    "chunks_total",
    "chunks_done",
    "chunks_failed",
}
CONTRACT_PATHS = [
    "/api/v1/migrations",
    "/api/v1/migrations/{id}",
    "/api/v1/migrations/{id}/chunks",
    "/api/v1/migrations/{id}/pause",
    "/api/v1/migrations/{id}/resume",
    "/api/v1/migrations/{id}/cancel",
    "/api/v1/migrations/{id}/retry",
    "/api/v1/workers",
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
]
UNSET_ENV = "API_TEST_NEVER_SET_URL"


def assert_nothing_created(api: Api) -> None:
    assert api.ids() == []
    assert api.publisher.sent == []


def assert_refused(api: Api, resp: TestResponse, status: int) -> dict[str, Any]:
    body = error_body(resp, status)
    assert_nothing_created(api)
    return body


def assert_spec_errors(
    api: Api, resp: TestResponse, paths: list[str] | None, message: str
) -> list[dict[str, str]]:
    """A 422 listing ``{path, message}`` problems; ``paths`` exact unless None; nothing created."""
    body = assert_refused(api, resp, 422)
    assert set(body) == {"error", "errors"}
    errors: list[dict[str, str]] = body["errors"]
    assert errors and all(set(e) == {"path", "message"} for e in errors), errors
    assert all(isinstance(e["path"], str) and isinstance(e["message"], str) for e in errors)
    if paths is not None:
        assert [e["path"] for e in errors] == paths, errors
    assert any(message in e["message"] for e in errors), errors
    return errors


# --- submit ----------------------------------------------------------------------------------


def test_submit_creates_a_pending_migration_and_publishes_one_plan(
    api: Api, spec: Spec, source_db: Path, tmp_path: Path
) -> None:
    # When a valid spec is posted
    resp = api.submit(spec)

    # Then it is created, pending, with one entry per stream
    assert resp.status_code == 201, resp.get_data(as_text=True)
    body = resp.get_json()
    mid = body["id"]
    assert isinstance(mid, str) and mid
    assert body["state"] == "pending"
    assert body["name"] == "test-migration"
    assert resp.headers["Location"] == f"{MIGRATIONS}/{mid}"
    assert "Idempotent-Replayed" not in resp.headers
    assert [s["name"] for s in body["streams"]] == ["Customers", "order_lines"]
    for stream in body["streams"]:
        assert STREAM_FIELDS <= set(stream)
        assert stream["state"] == "pending"
        assert {f: stream[f] for f in STREAM_FIELDS - {"name", "state"}} == dict.fromkeys(
            STREAM_FIELDS - {"name", "state"}, 0
        )
    # And exactly one plan message went out, for this migration
    assert len(api.publisher.sent) == 1
    task, _queue, kwargs = api.publisher.sent[0]
    assert task == PLAN_TASK
    assert kwargs["migration_id"] == mid

    # And the Location answers with the same migration, endpoints shown (no secret in SQLite)
    shown = api.client.get(resp.headers["Location"])
    assert shown.status_code == 200
    view = shown.get_json()
    assert view["id"] == mid and view["state"] == "pending"
    assert view["source"] == {"url": sqlite_url(source_db)}
    assert view["target"] == {"url": sqlite_url(tmp_path / "target.db")}
    assert api.ids() == [mid]


def test_target_given_by_url_env_is_shown_by_name_only(
    api: Api, spec: Spec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("API_TEST_TARGET_URL", sqlite_url(tmp_path / "env-target.db"))
    spec["target"] = {"url_env": "API_TEST_TARGET_URL"}
    resp = api.submit(spec)
    assert resp.status_code == 201, resp.get_data(as_text=True)
    assert resp.get_json()["target"] == {"url_env": "API_TEST_TARGET_URL"}
    assert "env-target.db" not in resp.get_data(as_text=True)


@pytest.mark.parametrize("content_type", ["text/plain", None, "application/x-www-form-urlencoded"])
def test_a_body_that_is_not_declared_json_is_415(
    api: Api, spec: Spec, content_type: str | None
) -> None:
    resp = api.submit_raw(json.dumps(spec), content_type)
    assert assert_refused(api, resp, 415).keys() == {"error"}


@pytest.mark.parametrize("data", [b"{not json", b"", b"\xff\xfe"])
def test_a_json_content_type_with_a_body_that_is_not_json_is_400(api: Api, data: bytes) -> None:
    resp = api.submit_raw(data, "application/json")
    body = assert_refused(api, resp, 400)
    assert body.keys() == {"error"} and "not JSON" in body["error"]


def test_a_body_over_max_body_bytes_is_413(
    make_settings: Callable[..., Settings], spec: Spec
) -> None:
    api = make_api(make_settings(max_body_bytes=200))
    assert len(json.dumps(spec)) > 200
    resp = api.submit(spec)
    assert assert_refused(api, resp, 413).keys() == {"error"}


def test_a_json_value_that_is_not_an_object_is_422(api: Api) -> None:
    assert_spec_errors(api, api.submit([1, 2]), [""], "must be a JSON object")


# --- 422: the spec's shape and preflight --------------------------------------------------------


def _drop_name(spec: Spec, source_db: Path) -> None:
    del spec["name"]


def _unknown_stream_field(spec: Spec, source_db: Path) -> None:
    spec["streams"][0]["bogus"] = True


def _unknown_transform(spec: Spec, source_db: Path) -> None:
    spec["streams"][0]["columns"]["email"]["transform"] = "rot13"


def _unknown_source_column(spec: Spec, source_db: Path) -> None:
    spec["streams"][0]["columns"]["full_name"] = "Fullname_typo"


def _unknown_source_table(spec: Spec, source_db: Path) -> None:
    spec["streams"][0]["source_table"] = "Customers_typo"


def _table_without_primary_key(spec: Spec, source_db: Path) -> None:
    with sqlite3.connect(source_db) as conn:
        conn.execute('CREATE TABLE "Legacy" ("Code" TEXT, "Label" TEXT)')
        conn.execute("""INSERT INTO "Legacy" VALUES ('a', 'A'), ('b', 'B')""")
    conn.close()
    spec["streams"] = [{"source_table": "Legacy", "target_table": "legacy", "create_target": True}]


def _key_not_unique(spec: Spec, source_db: Path) -> None:
    spec["streams"][1]["key"] = "Sku"  # repeats across order lines, no unique index


def _after_unknown_stream(spec: Spec, source_db: Path) -> None:
    spec["streams"][1]["after"] = ["invoices"]


def _after_cycle(spec: Spec, source_db: Path) -> None:
    spec["streams"][0]["after"] = ["order_lines"]
    spec["streams"][1]["after"] = ["Customers"]


def _url_env_not_set(spec: Spec, source_db: Path) -> None:
    spec["target"] = {"url_env": UNSET_ENV}


def _missing_sqlite_source(spec: Spec, source_db: Path) -> None:
    spec["source"] = {"url": sqlite_url(source_db.with_name("missing.db"))}


REFUSALS = [
    pytest.param(_drop_name, ["name"], "Field required", id="missing_field"),
    pytest.param(
        _unknown_stream_field,
        ["streams/0/bogus"],
        "Extra inputs are not permitted",
        id="unknown_stream_field",
    ),
    pytest.param(
        _unknown_transform,
        ["streams/0/columns/email/transform"],
        "unknown transform 'rot13'",
        id="unknown_transform",
    ),
    pytest.param(
        _unknown_source_column,
        ["streams/0/columns/full_name"],
        "unknown source column 'Fullname_typo'",
        id="unknown_source_column",
    ),
    pytest.param(
        _unknown_source_table,
        ["streams/0/source_table"],
        "no table 'Customers_typo'",
        id="unknown_source_table",
    ),
    pytest.param(
        _table_without_primary_key,
        ["streams/0/key"],
        "has no primary key",
        id="no_primary_key_and_no_key",
    ),
    pytest.param(_key_not_unique, ["streams/1/key"], "is not unique", id="key_not_unique"),
    pytest.param(
        _after_unknown_stream,
        ["streams/1/after/0"],
        "no stream named 'invoices'",
        id="after_unknown_stream",
    ),
    pytest.param(_after_cycle, ["streams/0/after"], "cycle", id="after_cycle"),
    pytest.param(
        _url_env_not_set, ["target/url_env"], f"{UNSET_ENV} is not set", id="url_env_not_set"
    ),
    pytest.param(
        _missing_sqlite_source, ["source/url"], "does not exist", id="missing_sqlite_source"
    ),
]


@pytest.mark.parametrize(("mutate", "paths", "message"), REFUSALS)
def test_an_invalid_spec_is_422_and_creates_nothing(
    api: Api,
    spec: Spec,
    source_db: Path,
    monkeypatch: pytest.MonkeyPatch,
    mutate: Callable[[Spec, Path], None],
    paths: list[str] | None,
    message: str,
) -> None:
    # Given a spec with exactly one problem
    monkeypatch.delenv(UNSET_ENV, raising=False)
    mutate(spec, source_db)
    # When it is posted, Then it is refused with that problem located, and nothing exists
    assert_spec_errors(api, api.submit(spec), paths, message)


@pytest.mark.parametrize("key", ["", "k" * 201])
def test_an_idempotency_key_of_a_bad_length_is_422(api: Api, spec: Spec, key: str) -> None:
    resp = api.submit(spec, {"Idempotency-Key": key})
    assert_spec_errors(api, resp, ["Idempotency-Key"], "1 to 200 characters")


def test_several_problems_are_all_reported(api: Api, spec: Spec, source_db: Path) -> None:
    _unknown_transform(spec, source_db)
    _unknown_source_column(spec, source_db)
    _key_not_unique(spec, source_db)
    errors = assert_spec_errors(api, api.submit(spec), None, "rot13")
    assert sorted(e["path"] for e in errors) == [
        "streams/0/columns/email/transform",
        "streams/0/columns/full_name",
        "streams/1/key",
    ]


def test_an_unreachable_target_fails_fast_without_echoing_its_password(
    make_settings: Callable[..., Settings], spec: Spec
) -> None:
    # Given an API with secret keys, and a target URL with a password where nothing listens
    api = make_api(make_settings(secret_keys=new_key()))
    spec["target"] = {"url": "postgresql://u:secret@127.0.0.1:1/x"}
    # When it is posted
    started = time.monotonic()
    resp = api.submit(spec)
    elapsed = time.monotonic() - started
    # Then preflight refuses it at target/url, quickly, and the password is nowhere in the answer
    assert_spec_errors(api, resp, ["target/url"], "cannot connect")
    assert "secret" not in resp.get_data(as_text=True)
    assert elapsed < 3.0


def _with_password(url: str) -> str:
    """The test URL with a password in it (the machine's PostgreSQL trusts local clients)."""
    u = make_url(url)
    if u.password is None and "PGPASSWORD" not in os.environ:
        u = u.set(password="secret-pw")
    return u.render_as_string(hide_password=False)


def test_a_postgresql_target_passes_preflight_and_its_password_is_hidden(
    make_settings: Callable[..., Settings], spec: Spec, pg_url: str
) -> None:
    # Given an API with secret keys, and a PostgreSQL target whose URL carries a password
    api = make_api(make_settings(secret_keys=new_key()))
    target = _with_password(pg_url)
    password = make_url(target).password
    spec["target"] = {"url": target}
    # When it is posted
    resp = api.submit(spec)
    # Then it passes preflight, is kept sealed, and no answer shows the password
    assert resp.status_code == 201, resp.get_data(as_text=True)
    mid = resp.get_json()["id"]
    shown = api.client.get(f"{MIGRATIONS}/{mid}")
    listed = api.client.get(MIGRATIONS)
    assert shown.get_json()["target"] == {"sealed": True, "kind": "sql"}
    for answer in (resp, shown, listed):
        assert password not in answer.get_data(as_text=True)
    assert api.plans() == [mid]


def test_a_password_in_the_spec_without_secret_keys_is_refused(api: Api, spec: Spec) -> None:
    # Given an API without secret keys, and a target URL with a password in it
    spec["target"] = {"url": "postgresql://u:pw-in-clear@127.0.0.1:5432/x"}
    # When it is posted
    resp = api.submit(spec)
    # Then it is refused before anything is contacted, pointing at url_env
    assert_spec_errors(api, resp, ["target/url"], "url_env")
    assert "pw-in-clear" not in resp.get_data(as_text=True)


# --- Idempotency-Key ------------------------------------------------------------------------


def test_the_same_idempotency_key_and_body_replays_the_first_migration(
    api: Api, spec: Spec
) -> None:
    # Given a migration submitted with an Idempotency-Key
    key = {"Idempotency-Key": "deploy-42"}
    first = api.submit(spec, key)
    assert first.status_code == 201
    mid = first.get_json()["id"]
    # When the same body (keys in another order) is posted again with that key
    again = api.submit(dict(reversed(list(spec.items()))), key)
    # Then the first migration comes back, marked as a replay, and nothing new exists or is sent
    assert again.status_code == 201
    assert again.get_json()["id"] == mid
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["Location"] == f"{MIGRATIONS}/{mid}"
    assert api.ids() == [mid]
    assert api.plans() == [mid]


def test_the_same_idempotency_key_with_another_body_is_409(api: Api, spec: Spec) -> None:
    key = {"Idempotency-Key": "deploy-43"}
    mid = api.created(spec, key)
    resp = api.submit({**spec, "name": "something else"}, key)
    assert error_body(resp, 409).keys() == {"error"}
    assert api.ids() == [mid]
    assert api.plans() == [mid]


def test_different_idempotency_keys_create_different_migrations(api: Api, spec: Spec) -> None:
    a = api.created(spec, {"Idempotency-Key": "a"})
    b = api.created(spec, {"Idempotency-Key": "b"})
    assert a != b
    assert sorted(api.plans()) == sorted([a, b])


# --- reading ---------------------------------------------------------------------------------


def test_list_is_newest_first_and_filters_by_state(api: Api, spec: Spec) -> None:
    # Given three migrations, the second one paused
    first = api.created(spec)
    second = api.created({**spec, "name": "second"})
    third = api.created({**spec, "name": "third"})
    assert api.control(second, "pause").status_code == 200
    # Then the list is newest first, and a state filter keeps only that state
    assert api.ids() == [third, second, first]
    assert api.ids("?state=pending") == [third, first]
    assert api.ids("?state=paused") == [second]
    assert api.ids("?state=succeeded") == []
    item = api.client.get(MIGRATIONS).get_json()["items"][0]
    assert {"id", "name", "state", "source", "target", "created_at"} <= set(item)
    assert item["name"] == "third"


def test_list_with_an_unknown_state_is_400(api: Api) -> None:
    assert error_body(api.client.get(f"{MIGRATIONS}?state=bogus"), 400).keys() == {"error"}


def test_an_unknown_migration_is_404(api: Api) -> None:
    for path in (f"{MIGRATIONS}/nope", f"{MIGRATIONS}/nope/chunks"):
        assert error_body(api.client.get(path), 404).keys() == {"error"}


def test_chunks_of_a_new_migration(api: Api, spec: Spec) -> None:
    mid = api.created(spec)
    chunks = f"{MIGRATIONS}/{mid}/chunks"
    for query in ("", "?state=pending", "?state=done"):
        resp = api.client.get(chunks + query)
        assert resp.status_code == 200
        assert resp.get_json() == {"items": [], "total": 0, "next": None}
    assert error_body(api.client.get(f"{chunks}?state=bogus"), 400).keys() == {"error"}


def test_workers_on_a_fresh_state_db(api: Api) -> None:
    resp = api.client.get("/api/v1/workers")
    assert resp.status_code == 200
    assert resp.get_json() == {"items": []}


def test_a_wrong_method_is_405_with_allow(api: Api) -> None:
    resp = api.client.delete(MIGRATIONS)
    assert error_body(resp, 405).keys() == {"error"}
    assert set(resp.headers["Allow"].replace(" ", "").split(",")) >= {"GET", "POST"}


# --- controls --------------------------------------------------------------------------------


def _state_after(api: Api, migration_id: str, action: str) -> str:
    resp = api.control(migration_id, action)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    body = resp.get_json()
    assert body["id"] == migration_id
    shown = api.client.get(f"{MIGRATIONS}/{migration_id}").get_json()
    assert shown["state"] == body["state"]
    return str(body["state"])


def test_pause_resume_cancel(api: Api, spec: Spec) -> None:
    # Given a pending migration (one plan message sent)
    mid = api.created(spec)
    assert api.plans() == [mid]

    # When it is paused: paused, and pausing again is a conflict; no message is sent
    assert _state_after(api, mid, "pause") == "paused"
    assert error_body(api.control(mid, "pause"), 409).keys() == {"error"}
    assert api.plans() == [mid]

    # When it is resumed: running, and the planner is told again
    assert _state_after(api, mid, "resume") == "running"
    assert error_body(api.control(mid, "resume"), 409).keys() == {"error"}
    assert api.plans() == [mid, mid]

    # When it is cancelled: cancelled and finished; nothing else applies any more
    assert _state_after(api, mid, "cancel") == "cancelled"
    assert api.client.get(f"{MIGRATIONS}/{mid}").get_json()["finished_at"] is not None
    for action in ("pause", "resume", "cancel", "retry"):
        assert error_body(api.control(mid, action), 409).keys() == {"error"}
    assert api.plans() == [mid, mid]


def test_retry_only_applies_to_a_failed_migration(api: Api, spec: Spec) -> None:
    # Given a pending migration: retry is a conflict
    mid = api.created(spec)
    assert error_body(api.control(mid, "retry"), 409).keys() == {"error"}
    # When it has failed (set directly in the state DB), retry makes it run again
    with api.app.extensions["baton"].db.session() as s:
        mig = s.get(Migration, mid)
        assert mig is not None
        mig.state = MigrationState.FAILED
        mig.error = "boom"
    assert _state_after(api, mid, "retry") == "running"
    assert api.client.get(f"{MIGRATIONS}/{mid}").get_json()["error"] is None
    assert api.plans() == [mid, mid]


def test_an_unknown_action_or_id_is_404(api: Api, spec: Spec) -> None:
    mid = api.created(spec)
    assert error_body(api.control(mid, "explode"), 404).keys() == {"error"}
    for action in ("pause", "resume", "cancel", "retry"):
        assert error_body(api.control("nope", action), 404).keys() == {"error"}
    assert api.plans() == [mid]
    assert api.client.get(f"{MIGRATIONS}/{mid}").get_json()["state"] == "pending"


# --- probes, metrics, OpenAPI ----------------------------------------------------------------


def test_health_and_readiness(api: Api) -> None:
    health = api.client.get("/healthz")
    assert health.status_code == 200
    assert health.get_json()["status"] == "ok"
    ready = api.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json()["ready"] is True


def test_metrics_count_migrations_by_state(api: Api, spec: Spec) -> None:
    api.created(spec)
    resp = api.client.get("/metrics")
    assert resp.status_code == 200
    assert resp.mimetype == "text/plain"
    text = resp.get_data(as_text=True)
    assert "baton_migrations" in text
    assert 'baton_migrations{state="pending"} 1.0' in text


def _openapi(api: Api) -> dict[str, Any]:
    resp = api.client.get("/openapi.json")
    assert resp.status_code == 200
    doc = resp.get_json()
    assert isinstance(doc, dict)
    return doc


def test_openapi_document_lists_every_contract_path(api: Api) -> None:
    doc = _openapi(api)
    assert str(doc["openapi"]).startswith("3.")
    missing = [p for p in CONTRACT_PATHS if p not in doc["paths"]]
    assert missing == []
    assert "post" in doc["paths"][MIGRATIONS] and "get" in doc["paths"][MIGRATIONS]
    for action in ("pause", "resume", "cancel", "retry"):
        assert "post" in doc["paths"][f"{MIGRATIONS}/{{id}}/{action}"]
    schema = doc["components"]["schemas"]["MigrationSpec"]
    assert {"name", "source", "target", "streams"} <= set(schema["properties"])


def test_openapi_document_is_valid(api: Api) -> None:
    validator = pytest.importorskip("openapi_spec_validator")
    validator.validate(_openapi(api))


# --- auth ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization", [None, "Bearer bt_unknown", "Basic dXNlcjpwYXNz", "Bearer "]
)
def test_without_a_valid_token_reads_and_writes_are_401(
    secured: Api, spec: Spec, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    for resp in (
        secured.client.get(MIGRATIONS, headers=headers),
        secured.client.get("/api/v1/workers", headers=headers),
        secured.submit(spec, headers),
    ):
        assert error_body(resp, 401).keys() == {"error"}
        assert resp.headers["WWW-Authenticate"].lower().startswith("bearer")
    assert secured.ids(headers=bearer(secured.token("viewer"))) == []
    assert secured.publisher.sent == []


def test_a_viewer_reads_but_cannot_submit_or_control(secured: Api, spec: Spec) -> None:
    # Given a viewer, and a migration an operator submitted
    viewer = bearer(secured.token("viewer"))
    mid = secured.created(spec, bearer(secured.token("operator")))
    # Then the viewer can read it
    assert secured.ids(headers=viewer) == [mid]
    assert secured.client.get(f"{MIGRATIONS}/{mid}", headers=viewer).status_code == 200
    assert secured.client.get(f"{MIGRATIONS}/{mid}/chunks", headers=viewer).status_code == 200
    assert secured.client.get("/api/v1/workers", headers=viewer).status_code == 200
    # But neither submit nor control
    assert error_body(secured.submit({**spec, "name": "v"}, viewer), 403).keys() == {"error"}
    assert error_body(secured.control(mid, "pause", viewer), 403).keys() == {"error"}
    assert secured.ids(headers=viewer) == [mid]
    assert secured.plans() == [mid]


def test_an_operator_submits_and_controls(secured: Api, spec: Spec) -> None:
    operator = bearer(secured.token("operator"))
    mid = secured.created(spec, operator)
    assert secured.control(mid, "pause", operator).status_code == 200
    assert secured.ids("?state=paused", headers=operator) == [mid]


def test_probes_need_no_token(secured: Api) -> None:
    assert secured.client.get("/healthz").status_code == 200
    assert secured.client.get("/readyz").status_code == 200


def test_a_refused_spec_leaves_no_new_sqlite_target_file(
    api: Api, spec: Spec, tmp_path: Path
) -> None:
    # Given a spec whose new SQLite target would be fine but whose source table is missing
    target = tmp_path / "target.db"
    spec["streams"][0]["source_table"] = "Nope"
    # When it is refused
    resp = api.submit(spec)
    # Then not even the target file was created
    assert resp.status_code == 422
    assert not target.exists()
