"""Sealed specs: endpoints kept encrypted in the state DB, opened by workers, keys rotated.

Versions side by side: the API seals only when every live worker advertises
that it can open a sealed spec, and then refuses a credential written in a
spec rather than keep it in clear.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import text

from api import create_app
from etl_tasks.boundary.sealing import Sealer, new_key, storage_form
from etl_tasks.publisher import RecordingPublisher
from etl_tasks.settings import Settings
from etl_tasks.spec import parse_spec
from etl_tasks.state.db import StateDB
from etl_tasks.state.models import Migration, Worker
from etl_tasks.workers import WorkerInfo, capabilities, heartbeat, missing_kinds
from ops.cli import main
from tests.data import build_source, open_boundary, spec_for, sqlite_url
from tests.harness import Driver

CANARY = "canary-pw-7c1e"


def _spec_with_password(tmp_path: Path, pg_url: str) -> dict[str, object]:
    legacy = sqlite_url(tmp_path / "legacy.db")
    build_source(legacy, customers=30, orders=5)
    target = pg_url.replace("postgres@", f"postgres:{CANARY}@")  # trust auth ignores it
    return spec_for(legacy, target, chunk_rows=10)


def _record(db: StateDB, spec: dict[str, object], sealer: Sealer | None) -> str:
    from etl_tasks.control import create_migration
    from etl_tasks.preflight import preflight

    parsed = parse_spec(spec)
    keys = preflight(parsed, open_boundary(db))
    storage = storage_form(parsed.to_stored(), sealer, workers_can_unseal=True)
    migration_id, _ = create_migration(db, parsed, keys, storage=storage)
    return migration_id


def test_a_sealed_spec_runs_and_its_password_is_nowhere_in_the_state_db(
    make_settings: Callable[..., Settings], tmp_path: Path, pg_url: str
) -> None:
    # Given a spec whose target URL carries a password, sealed at submit
    settings = make_settings(secret_keys=new_key())
    driver = Driver(settings)
    migration_id = _record(driver.rt.db, _spec_with_password(tmp_path, pg_url), driver.rt.sealer)
    # When a worker runs it
    driver.publisher.send("baton.plan", "", {"migration_id": migration_id})
    driver.run_to_end(migration_id)
    # Then it succeeds, and the state DB file holds no trace of the password
    assert driver.state(migration_id) == "succeeded"
    driver.close()
    state_file = Path(settings.database_url.removeprefix("sqlite:///"))
    for part in state_file.parent.glob(state_file.name + "*"):  # the WAL too
        assert CANARY.encode() not in part.read_bytes()
    with StateDB(settings.database_url).reading() as s:
        mig = s.get(Migration, migration_id)
        assert (
            mig is not None and mig.sealed and mig.spec["target"] == {"sealed": True, "kind": "sql"}
        )


def test_a_worker_without_the_key_fails_the_migration_with_the_reason(
    make_settings: Callable[..., Settings], tmp_path: Path, pg_url: str
) -> None:
    sealed_with = Sealer([new_key()])
    driver = Driver(make_settings(secret_keys=new_key()))  # another key
    migration_id = _record(driver.rt.db, _spec_with_password(tmp_path, pg_url), sealed_with)
    driver.publisher.send("baton.plan", "", {"migration_id": migration_id})
    driver.run_to_end(migration_id)
    with driver.rt.db.reading() as s:
        mig = s.get(Migration, migration_id)
        assert mig is not None and mig.state == "failed"
        assert "none of BATON_SECRET_KEYS" in str(mig.error)
    driver.close()


def test_rotation_reseals_with_the_newest_key(
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    pg_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    old, new = new_key(), new_key()
    settings = make_settings(secret_keys=old)
    db = StateDB(settings.database_url)
    migration_id = _record(db, _spec_with_password(tmp_path, pg_url), Sealer([old]))
    monkeypatch.setenv("BATON_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("BATON_SECRET_KEYS", f"{new},{old}")
    result = CliRunner().invoke(main, ["secrets", "rotate", "--json"])
    assert result.exit_code == 0, result.output
    assert '"resealed": 1' in result.output
    with db.reading() as s:
        mig = s.get(Migration, migration_id)
        assert mig is not None and mig.sealed is not None
        assert CANARY in Sealer([new]).unseal(mig.sealed)["target"]["url"]
    # a second run changes nothing it cannot open; without the old key listed it says so
    monkeypatch.setenv("BATON_SECRET_KEYS", new_key())
    result = CliRunner().invoke(main, ["secrets", "rotate"])
    assert result.exit_code == 1 and "keep its old key listed" in result.output
    db.dispose()


def test_the_api_keeps_literal_credentials_out_until_every_live_worker_can_open_them(
    make_settings: Callable[..., Settings], tmp_path: Path, pg_url: str
) -> None:
    # Given an API with keys, and a live worker of an older version (no capabilities)
    settings = make_settings(secret_keys=new_key())
    app = create_app(settings, RecordingPublisher())
    db = StateDB(settings.database_url)
    info = WorkerInfo("old@host", "0.0.9", "host", 1, None)
    heartbeat(db, info, state="active", in_flight=0, steps_done=0)
    with db.session() as s:
        row = s.get(Worker, "old@host")
        assert row is not None
        row.capabilities = None
    spec = _spec_with_password(tmp_path, pg_url)
    client = app.test_client()
    # When a spec with a password in its URL is posted, it is refused and nothing is kept
    resp = client.post("/api/v1/migrations", json=spec)
    assert resp.status_code == 422, resp.get_data(as_text=True)
    assert "upgrade the workers" in resp.get_json()["errors"][0]["message"]
    # A spec without one is kept in clear, which the old worker can read
    clean = spec_for(str(spec["source"]["url"]), sqlite_url(tmp_path / "t.db"))  # type: ignore[index]
    resp = client.post("/api/v1/migrations", json=clean)
    assert resp.status_code == 201, resp.get_data(as_text=True)
    assert resp.get_json()["target"]["url"].startswith("sqlite")
    # Once the old worker is gone (silent past the live window), specs are sealed again
    with db.session() as s:
        row = s.get(Worker, "old@host")
        assert row is not None
        row.heartbeat_at -= timedelta(minutes=5)
    new = WorkerInfo("new@host", "0.1.0", "host", 2, None)
    heartbeat(db, new, state="active", in_flight=0, steps_done=0)
    resp = client.post("/api/v1/migrations", json=spec)
    assert resp.status_code == 201, resp.get_data(as_text=True)
    assert resp.get_json()["target"] == {"sealed": True, "kind": "sql"}
    with db.reading() as s:
        assert s.get(Worker, "new@host").capabilities == capabilities()  # type: ignore[union-attr]
        dump = s.execute(text("SELECT spec, sealed FROM migrations")).all()
    assert CANARY not in repr(dump)
    db.dispose()


def test_a_migration_no_live_worker_can_move_says_so(
    make_settings: Callable[..., Settings],
) -> None:
    # Given live workers that move SQL endpoints only (one from before they said so)
    db = StateDB(make_settings().database_url)
    for name, pid in (("new@host", 1), ("old@host", 2)):
        info = WorkerInfo(name, "0.1.0", "host", pid, None)
        heartbeat(db, info, state="active", in_flight=0, steps_done=0)
    with db.session() as s:
        row = s.get(Worker, "old@host")
        assert row is not None
        row.capabilities = None
        sql_only = s.get(Worker, "new@host")
        assert sql_only is not None
        sql_only.capabilities = {
            **capabilities(),
            "endpoint_kinds": ["sql"],
            "source_kinds": ["sql"],
            "target_kinds": ["sql"],
        }
    # Then a spec with an HTTP target waits for a worker that can, by name; SQL is fine
    http = {"source": {"url": "sqlite:////x.db"}, "target": {"http": {"url": "http://h/{table}"}}}
    assert missing_kinds(db, http) == ["http targets"]
    assert (
        missing_kinds(db, {"source": {"sealed": True, "kind": "sql"}, "target": {"url_env": "X"}})
        == []
    )
    db.dispose()
