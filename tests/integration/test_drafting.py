"""Specs that write themselves: drafted from a schema, checked without submitting."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import yaml
from click.testing import CliRunner

from etl_tasks.connectors.sql.engines import create_sql_engine
from etl_tasks.drafting.draft import draft_spec, to_yaml
from etl_tasks.spec import parse_spec
from etl_tasks.state.models import Event, Migration
from ops.cli import main
from tests.checks import assert_migrated
from tests.data import sqlite_url
from tests.harness import Driver
from tests.integration.api_support import Api
from tests.integration.fidelity_support import migrate, pg_exec, refusals, sqlite_db

LEGACY = """
    CREATE TABLE "Region" (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
    CREATE TABLE "Office" (id INTEGER PRIMARY KEY, region_id INTEGER NOT NULL REFERENCES "Region",
                           head_id INTEGER REFERENCES "Employee");
    CREATE TABLE "Employee" (id INTEGER PRIMARY KEY, office_id INTEGER NOT NULL REFERENCES "Office",
                             boss_id INTEGER REFERENCES "Employee", tags TEXT);
    CREATE TABLE "AuditLog" (at TEXT NOT NULL, what TEXT);
    CREATE VIEW "Heads" AS SELECT * FROM "Employee" WHERE boss_id IS NULL;
"""
ROWS = {
    "Region": [(1, "North")],
    "Office": [(1, 1, 1)],
    "Employee": [(1, 1, None, "a"), (2, 1, 1, "b")],
    "AuditLog": [("2020-01-01", "x"), ("2020-01-01", "y")],
}


def _draft(source: str, target: str | None = None) -> tuple[dict[str, object], str]:
    src = create_sql_engine(source)
    tgt = create_sql_engine(target) if target else None
    try:
        drafted = draft_spec(
            src,
            tgt,
            name="legacy",
            source_endpoint={"url": source},
            target_endpoint={"url": target or "sqlite:////tmp/never.db"},
        )
    finally:
        src.dispose()
        if tgt is not None:
            tgt.dispose()
    return drafted.spec, to_yaml(drafted)


def test_a_draft_has_every_base_table_keyed_and_ordered(tmp_path: Path) -> None:
    source = sqlite_db(tmp_path / "legacy.db", LEGACY, ROWS)
    spec, text = _draft(source)
    streams = {s["source_table"]: s for s in spec["streams"]}  # type: ignore[attr-defined]
    # Base tables only (no view), each keyed and created in the target
    assert set(streams) == {"Region", "Office", "Employee", "AuditLog"}
    assert streams["Region"]["key"] == "id" and streams["Region"]["create_target"] is True
    # A table without a key is keyed by a column, with write: insert, and says so
    assert streams["AuditLog"]["write"] == "insert" and streams["AuditLog"]["key"] == "at"
    assert "no primary key" in text
    # Order from the foreign keys; the Office ↔ Employee cycle is broken at the nullable one
    assert streams["Office"]["after"] == ["Region"]
    assert streams["Employee"]["after"] == ["Office"]
    assert "closes a cycle" in text and "Office → Employee" in text
    # The YAML is the same spec, and a valid one
    assert yaml.safe_load(text) == spec
    parse_spec(spec)


def test_a_drafted_spec_migrates_into_a_target_with_foreign_keys(
    driver: Driver, tmp_path: Path, pg_url: str
) -> None:
    # Given a legacy database, and a target whose schema already has the foreign keys
    source = sqlite_db(tmp_path / "legacy.db", LEGACY, ROWS)
    pg_exec(
        pg_url,
        """
        CREATE TABLE "Region" (id int PRIMARY KEY, name text NOT NULL);
        CREATE TABLE "Office" (id int PRIMARY KEY, region_id int NOT NULL REFERENCES "Region",
                               head_id int);
        CREATE TABLE "Employee" (id int PRIMARY KEY, office_id int NOT NULL REFERENCES "Office",
                                 boss_id int, tags text);
    """,
    )
    # When the draft is submitted as it is
    spec, _ = _draft(source, pg_url)
    streams = {s["source_table"]: s for s in spec["streams"]}  # type: ignore[attr-defined]
    assert streams["Region"]["create_target"] is False
    assert streams["AuditLog"]["create_target"] is True
    mid, view = migrate(driver, spec)
    # Then it loads everything, in an order the foreign keys accept, with nothing set aside
    assert view["state"] == "succeeded" and view["rows_quarantined"] == 0, view
    assert_migrated(driver.rt.db, mid, spec, expected_bad={})


def test_a_draft_for_another_dialect_carries_what_it_cannot_hold(
    tmp_path: Path, pg_url: str, mariadb_url: str
) -> None:
    pg_exec(pg_url, "CREATE TABLE p (id int PRIMARY KEY, tags text[], span interval)")
    spec, text = _draft(pg_url, mariadb_url)
    stream = spec["streams"][0]  # type: ignore[index]
    assert stream["as"] == {"tags": "json", "span": "text"}
    assert "text[] has no exact counterpart in mysql: carried as json" in text


def test_spec_init_prints_yaml_and_json(tmp_path: Path) -> None:
    source = sqlite_db(tmp_path / "legacy.db", LEGACY, ROWS)
    yaml_out = CliRunner().invoke(main, ["spec", "init", source])
    assert yaml_out.exit_code == 0, yaml_out.output
    assert yaml.safe_load(yaml_out.output)["name"] == "legacy"
    json_out = CliRunner().invoke(main, ["spec", "init", source, "--json"])
    assert json_out.exit_code == 0 and '"comments"' in json_out.output
    secret = CliRunner().invoke(main, ["spec", "init", "postgresql://u:pw@127.0.0.1:1/x"])
    assert secret.exit_code != 0  # cannot connect: nothing printed with the password
    assert "pw" not in secret.output


def test_the_api_drafts_and_checks_without_creating_anything(
    api: Api, tmp_path: Path, pg_url: str
) -> None:
    source = sqlite_db(tmp_path / "legacy.db", LEGACY, ROWS)
    endpoints = {"source": {"url": source}, "target": {"url": pg_url}}
    drafted = api.client.post("/api/v1/specs/draft", json=endpoints)
    assert drafted.status_code == 200, drafted.get_data(as_text=True)
    spec = drafted.get_json()["spec"]
    checked = api.client.post("/api/v1/specs/check", json=spec)
    assert checked.status_code == 200, checked.get_data(as_text=True)
    assert checked.get_json()["keys"]["Region"] == ["id"]
    spec["streams"][0]["source_table"] = "Nope"
    refused = api.client.post("/api/v1/specs/check", json=spec)
    assert refused.status_code == 422
    assert api.ids() == []  # nothing was submitted
    assert pg_exec(pg_url, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == [(0,)]
    bad = api.client.post("/api/v1/specs/draft", json={"source": {"url": "redis://h/0"}})
    assert bad.status_code == 422


def test_an_empty_sqlite_target_needs_no_file_to_draft(tmp_path: Path) -> None:
    source = sqlite_db(tmp_path / "legacy.db", LEGACY, ROWS)
    spec, _ = _draft(source, sqlite_url(tmp_path / "new.db"))
    assert all(s["create_target"] for s in spec["streams"])  # type: ignore[index]


def test_the_order_a_spec_leaves_unsaid_comes_from_the_targets_foreign_keys(
    driver: Driver, tmp_path: Path, pg_url: str
) -> None:
    # Given a target whose tables refer to each other, and a spec that says nothing of order
    source = sqlite_db(tmp_path / "legacy.db", LEGACY, ROWS)
    pg_exec(
        pg_url,
        """
        CREATE TABLE "Region" (id int PRIMARY KEY, name text NOT NULL);
        CREATE TABLE "Office" (id int PRIMARY KEY, region_id int NOT NULL REFERENCES "Region",
                               head_id int);
    """,
    )
    spec = {
        "name": "unordered",
        "source": {"url": source},
        "target": {"url": pg_url},
        "streams": [
            {"source_table": "Office", "target_table": "Office"},
            {"source_table": "Region", "target_table": "Region"},
        ],
    }
    # When it runs
    mid, view = migrate(driver, spec)
    # Then Office waited for Region, and the migration says why
    assert view["state"] == "succeeded" and view["rows_quarantined"] == 0, view
    with driver.rt.db.reading() as s:
        stored = s.get(Migration, mid).spec  # type: ignore[union-attr]
        notes = [e.message for e in s.query(Event).filter(Event.migration_id == mid)]
    assert stored["streams"][0]["after"] == ["Region"]
    assert any("foreign keys" in n for n in notes)


def test_a_query_stream_reads_only_what_it_selects_read_only(
    driver: Driver, pg_url_factory: object, make_settings: object
) -> None:
    source, target = pg_url_factory(), pg_url_factory()  # type: ignore[operator]
    pg_exec(
        source,
        """
        CREATE TABLE customers (id int PRIMARY KEY, name text);
        CREATE TABLE orders (id int PRIMARY KEY, customer_id int, total numeric(10,2));
        INSERT INTO customers SELECT i, 'c' || i FROM generate_series(1, 20) i;
        INSERT INTO orders SELECT i, i % 20 + 1, i * 1.5 FROM generate_series(1, 300) i;
        CREATE TABLE touched (n int);
        CREATE FUNCTION touch() RETURNS int LANGUAGE sql
            AS 'INSERT INTO touched VALUES (1) RETURNING 1';
    """,
    )
    joined = "SELECT o.id, c.name, o.total FROM orders o JOIN customers c ON c.id = o.customer_id"
    spec = {
        "name": "joined",
        "source": {"url": source},
        "target": {"url": target},
        "chunk_rows": 40,
        "streams": [{"query": joined, "key": "id", "target_table": "order_names",
                     "create_target": True}],
    }  # fmt: skip
    mid, view = migrate(driver, spec)
    assert view["state"] == "succeeded" and view["rows_loaded"] == 300, view
    assert pg_exec(target, "SELECT name, total FROM order_names WHERE id = 7") == [
        ("c8", Decimal("10.50"))
    ]
    assert_migrated(driver.rt.db, mid, spec)
    # A query that would write (through a function) is refused by the read-only transaction
    spec["streams"][0]["query"] = "SELECT id, touch() AS t FROM orders"
    spec["name"] = "writes"
    problems = refusals(driver, spec)
    assert any("read-only" in message for message in problems.values()), problems
    assert pg_exec(source, "SELECT count(*) FROM touched") == [(0,)]


def test_only_an_admin_submits_a_query(secured: Api, tmp_path: Path) -> None:
    source = sqlite_db(tmp_path / "legacy.db", LEGACY, ROWS)
    spec = {
        "name": "q",
        "source": {"url": source},
        "target": {"url": sqlite_url(tmp_path / "t.db")},
        "streams": [{"query": 'SELECT id, name FROM "Region"', "key": "id",
                     "target_table": "r", "create_target": True}],
    }  # fmt: skip
    operator = {"Authorization": f"Bearer {secured.token('operator')}"}
    admin = {"Authorization": f"Bearer {secured.token('admin')}"}
    assert secured.submit(spec, operator).status_code == 403
    assert secured.submit(spec, admin).status_code == 201
