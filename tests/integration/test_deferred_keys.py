"""A PostgreSQL table a stream creates gets its primary key once its rows are in
(etl_tasks/connectors/sql/schema.build_deferred_key), as a bulk load builds its indexes
after the data; whatever needs the key sooner builds it first, and rows that would
break it fail the stream rather than pass unnoticed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from etl_tasks.connectors.base import ChunkRef
from etl_tasks.connectors.sql.target import SqlTarget
from etl_tasks.settings import Settings
from etl_tasks.views import migration_view
from tests.checks import assert_migrated
from tests.data import build_items, items_spec, sqlite_url, submit
from tests.harness import Driver

ROWS = 600


def _key_of(url: str, table: str) -> tuple[list[str], str | None]:
    """The table's primary key columns, and its comment."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            key = conn.execute(
                text(
                    "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON "
                    "a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
                    "WHERE i.indrelid = to_regclass(:t) AND i.indisprimary"
                ),
                {"t": table},
            ).scalars()
            comment = conn.scalar(
                text("SELECT obj_description(to_regclass(:t), 'pg_class')"), {"t": table}
            )
            return list(key), comment
    finally:
        engine.dispose()


@pytest.fixture
def spec(tmp_path: Path, pg_url: str) -> dict[str, Any]:
    source = sqlite_url(tmp_path / "legacy.db")
    build_items(source, ROWS)
    return items_spec(source, pg_url, chunk_rows=100)


@pytest.fixture
def seen_before_build(monkeypatch: pytest.MonkeyPatch) -> list[tuple[list[str], int]]:
    """The table's key and row count each time its key is about to be built."""
    seen: list[tuple[list[str], int]] = []
    real = SqlTarget.build_key

    def watched(self: SqlTarget) -> bool:
        url = self.engine.url.render_as_string(hide_password=False)
        engine = create_engine(url)
        with engine.connect() as conn:
            rows = conn.scalar(text(f'SELECT count(*) FROM "{self.table_name}"'))
        engine.dispose()
        seen.append((_key_of(url, self.table_name)[0], int(rows or 0)))
        return real(self)

    monkeypatch.setattr(SqlTarget, "build_key", watched)
    return seen


def test_a_created_table_gets_its_primary_key_once_its_rows_are_in(
    driver: Driver,
    spec: dict[str, Any],
    pg_url: str,
    seen_before_build: list[tuple[list[str], int]],
) -> None:
    # When a stream that creates its PostgreSQL table migrates
    mid = submit(driver.rt.db, driver.publisher, spec)
    assert driver.run_to_end(mid) == "succeeded"
    # Then the table had no key while its rows went in: all of them were there when the
    # key was built, once
    assert seen_before_build[0] == ([], ROWS)
    # and it has its key now, its comment gone, every row as the source has it
    assert _key_of(pg_url, "items") == (["id"], None)
    assert_migrated(driver.rt.db, mid, spec, expected_bad={"items": 0})


def test_with_deferred_keys_off_the_table_is_created_with_its_key(
    make_settings: Callable[..., Settings],
    spec: dict[str, Any],
    pg_url: str,
    seen_before_build: list[tuple[list[str], int]],
) -> None:
    driver = Driver(make_settings(defer_target_keys=False))
    try:
        mid = submit(driver.rt.db, driver.publisher, spec)
        assert driver.run_to_end(mid) == "succeeded"
    finally:
        driver.close()
    assert all(key == ["id"] for key, _ in seen_before_build)  # there from the start
    assert _key_of(pg_url, "items") == (["id"], None)


def test_a_load_that_needs_the_key_builds_it_first(
    driver: Driver, spec: dict[str, Any], pg_url: str
) -> None:
    # Given the stream's table created, its key left for later
    mid = submit(driver.rt.db, driver.publisher, spec)
    target = driver.rt.target(mid, "items")
    assert isinstance(target, SqlTarget)
    target.prepare()
    owed = f'{{"key": ["id"], "migration": "{mid}", "stream": "items"}}'
    assert _key_of(pg_url, "items") == ([], f"baton: primary key built when the load ends {owed}")
    # When a chunk that is not a key range (a replay's key set) begins its write
    ref = ChunkRef(mid, "items", chunk_id=999, token=1, key_range=None)
    with target.begin_chunk(ref) as write:
        # Then its write merges on the key, and the key is there for it
        assert not write.direct
        assert _key_of(pg_url, "items") == (["id"], None)
    assert target.key_settled


def test_another_migration_into_the_table_builds_its_key_before_loading(
    driver: Driver, spec: dict[str, Any], pg_url: str, tmp_path: Path
) -> None:
    # Given a migration that created its table and is loading it, its key still owed
    first = submit(driver.rt.db, driver.publisher, spec)
    while (message := driver.publisher.queue.popleft())[0] != "baton.load":
        driver.deliver(*message)
    driver.deliver(*message)
    assert _key_of(pg_url, "items")[0] == []
    # When another migration into the same table is submitted (its preflight takes the
    # owed key for the table's) with rows of its own
    other_source = sqlite_url(tmp_path / "other.db")
    build_items(other_source, ROWS + 100)
    second = submit(
        driver.rt.db, driver.publisher, items_spec(other_source, pg_url, chunk_rows=100)
    )
    # Then its prepare builds the key first, and both migrations complete, the second's
    # rows upserted over the first's
    assert driver.run_to_end(second) == "succeeded"
    assert _key_of(pg_url, "items") == (["id"], None)
    assert driver.run_to_end(first) == "succeeded"
    engine = create_engine(pg_url)
    with engine.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM items")) == ROWS + 100
    engine.dispose()


def test_rows_that_would_break_the_key_fail_the_stream(
    driver: Driver, spec: dict[str, Any], pg_url: str
) -> None:
    # Given something besides the migration wrote a row into its table while it ran
    real = SqlTarget.build_key

    def after_a_stray_write(self: SqlTarget) -> bool:
        engine = create_engine(pg_url)
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO items (id, name) VALUES (7, 'stray')"))
        engine.dispose()
        return real(self)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(SqlTarget, "build_key", after_a_stray_write)
        mid = submit(driver.rt.db, driver.publisher, spec)
        state = driver.run_to_end(mid)
    # Then the key cannot be built, and the migration fails saying so, nothing hidden
    assert state == "failed"
    error = migration_view(driver.rt.db, mid)["error"]
    assert error.endswith(
        "cannot build the primary key of 'items': Key (id)=(7) is duplicated."
        " (rows written into it besides this migration's)"
    )
    assert _key_of(pg_url, "items")[0] == []
