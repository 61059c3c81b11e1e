"""Quarantined rows of any size: many in one chunk, and keys of any length.

The target ledger keeps a chunk's quarantined rows as one JSON text, so on
MariaDB it needs LONGTEXT (TEXT holds 64 KiB); the state DB's ``quarantine``
table keeps each row's key as TEXT, unique by a hash of it (PostgreSQL's btree
cannot index a long text).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Column, MetaData, Table, Text, insert, text

from etl_tasks.connectors.sql.engines import create_sql_engine
from etl_tasks.constants import LEDGER_TABLE
from etl_tasks.settings import Settings
from etl_tasks.views import list_quarantine, migration_view
from tests.checks import assert_migrated
from tests.data import build_items, items_spec, sqlite_url, submit
from tests.harness import Driver

# A step budget long enough that a whole chunk loads in one step (so one ledger row
# holds every bad row of it), with the lease and visibility timeout it requires.
ONE_STEP = {"step_budget_s": 60.0, "lease_s": 120.0, "visibility_timeout_s": 300}
OLD_LEDGER = f"""
CREATE TABLE {LEDGER_TABLE} (
    migration_id VARCHAR(32) NOT NULL, stream VARCHAR(200) NOT NULL, chunk_id BIGINT NOT NULL,
    fencing_token INTEGER NOT NULL, rows_loaded INTEGER NOT NULL,
    rows_quarantined INTEGER NOT NULL, quarantine TEXT NOT NULL, committed_at DATETIME NOT NULL,
    PRIMARY KEY (migration_id, stream, chunk_id)
)"""


def _ledger_types(url: str) -> dict[str, str]:
    engine = create_sql_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT COLUMN_NAME, DATA_TYPE FROM information_schema.COLUMNS "
                "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = :t"
            ),
            {"t": LEDGER_TABLE},
        ).all()
    engine.dispose()
    return {str(name): str(kind).lower() for name, kind in rows}


def test_thousands_of_bad_rows_in_one_chunk_on_mariadb(
    make_settings: Callable[..., Settings], tmp_path: Path, mariadb_url: str
) -> None:
    # Given one chunk of 5,000 rows, half of them bad: about 200 KB of quarantine
    source = sqlite_url(tmp_path / "legacy.db")
    build_items(source, 5000, bad_every=2)
    spec = items_spec(source, mariadb_url)
    driver = Driver(make_settings(**ONE_STEP))
    # When it runs into MariaDB
    mid = submit(driver.rt.db, driver.publisher, spec)
    driver.run_to_end(mid)
    # Then the ledger row holds them all, and the migration succeeds
    assert_migrated(driver.rt.db, mid, spec, expected_bad={"items": 2500})
    assert _ledger_types(mariadb_url)["quarantine"] == "longtext"
    driver.close()


def test_a_ledger_an_older_version_made_is_widened(
    make_settings: Callable[..., Settings], tmp_path: Path, mariadb_url: str
) -> None:
    # Given a target whose ledger an older version created: TEXT, and no cut_key
    engine = create_sql_engine(mariadb_url)
    with engine.begin() as conn:
        conn.execute(text(OLD_LEDGER))
        conn.execute(
            text(f"INSERT INTO {LEDGER_TABLE} VALUES ('old', 'items', 1, 1, 10, 0, '[]', NOW())")
        )
    engine.dispose()
    source = sqlite_url(tmp_path / "legacy.db")
    build_items(source, 4000, bad_every=2)
    spec = items_spec(source, mariadb_url)
    driver = Driver(make_settings(**ONE_STEP))
    # When a migration prepares its stream there
    mid = submit(driver.rt.db, driver.publisher, spec)
    driver.run_to_end(mid)
    # Then the ledger gained cut_key and both are LONGTEXT, its old rows kept
    assert_migrated(driver.rt.db, mid, spec, expected_bad={"items": 2000})
    types = _ledger_types(mariadb_url)
    assert types["quarantine"] == types["cut_key"] == "longtext"
    engine = create_sql_engine(mariadb_url)
    with engine.connect() as conn:
        old = conn.execute(
            text(f"SELECT rows_loaded FROM {LEDGER_TABLE} WHERE migration_id = 'old'")
        )
        assert old.scalar() == 10
    engine.dispose()


def test_a_bad_row_with_a_10_kb_key_on_a_postgresql_state_db(
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    pg_state_url_factory: Callable[[], str],
) -> None:
    # Given a source whose text keys include one of 10 KB (random, so it does not
    # compress), on a row that a transform refuses
    long_key = secrets.token_urlsafe(7500)[:10_000]
    source = sqlite_url(tmp_path / "legacy.db")
    engine = create_sql_engine(source)
    codes = Table("codes", MetaData(), Column("code", Text, primary_key=True), Column("qty", Text))
    codes.metadata.create_all(engine)
    with engine.begin() as conn:
        rows = [{"code": f"c{i:03d}", "qty": str(i)} for i in range(50)]
        conn.execute(insert(codes), [*rows, {"code": long_key, "qty": "many"}])
    engine.dispose()
    spec = items_spec(source, sqlite_url(tmp_path / "cloud.db"))
    spec["streams"][0].update(
        source_table="codes",
        target_table="codes",
        columns={"code": "code", "qty": {"from": "qty", "transform": "int"}},
    )
    driver = Driver(make_settings(database_url=pg_state_url_factory()))
    # When it runs
    mid = submit(driver.rt.db, driver.publisher, spec)
    driver.run_to_end(mid)
    # Then the row is quarantined with its whole key, and the migration succeeds
    view = migration_view(driver.rt.db, mid)
    assert view["state"] == "succeeded", view
    assert view["rows_loaded"] == 50 and view["rows_quarantined"] == 1
    (entry,) = list_quarantine(driver.rt.db, mid)
    assert long_key in entry["key"] and len(entry["key"]) > 10_000
    driver.close()
