"""Every value arrives exactly, or its row is quarantined with the reason: the reported cases.

Each test here reproduces a case where a migration reported success (and
verification agreed) while the target held different data, or where it failed
where it should have succeeded. Every one ends with the target verified
against the source in the canonical form of each column.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

from etl_tasks.state.models import Event
from tests.checks import assert_migrated
from tests.data import sqlite_url
from tests.harness import Driver
from tests.integration.fidelity_support import (
    maria_exec,
    migrate,
    one_stream,
    pg_exec,
    reasons,
    refusals,
    sqlite_db,
    sqlite_rows,
)

# --- keys ------------------------------------------------------------------------------------


def test_mariadb_keys_that_differ_by_case_accent_or_trailing_space_stay_distinct(
    driver: Driver, tmp_path: Path, mariadb_url: str
) -> None:
    # Given text keys that a case- and accent-insensitive, space-padding collation merges
    keys = ["abc", "ABC", "Jose", "José", "x", "x "]
    source = sqlite_db(
        tmp_path / "k.db",
        'CREATE TABLE "Tag" (code VARCHAR(20) PRIMARY KEY NOT NULL, n INTEGER)',
        {"Tag": [(k, i) for i, k in enumerate(keys)]},
    )
    # When they migrate into a MariaDB table Baton creates
    spec = one_stream(source, mariadb_url, source_table="Tag", target_table="tags")
    mid, view = migrate(driver, spec)
    # Then every one is its own row
    assert view["rows_loaded"] == 6
    got = maria_exec(mariadb_url, "SELECT code FROM tags")
    assert sorted(r[0] for r in got) == sorted(keys)
    assert_migrated(driver.rt.db, mid, spec)


def test_an_existing_mariadb_target_whose_key_collation_merges_keys_is_refused(
    driver: Driver, tmp_path: Path, mariadb_url: str
) -> None:
    source = sqlite_db(
        tmp_path / "k.db", 'CREATE TABLE "Tag" (code VARCHAR(20) PRIMARY KEY NOT NULL)', {}
    )
    maria_exec(mariadb_url, "CREATE TABLE tags (code VARCHAR(20) PRIMARY KEY)")
    spec = one_stream(source, mariadb_url, source_table="Tag", target_table="tags")
    errors = refusals(driver, spec)
    assert "collation" in errors["streams/0/target_table"]


def test_rows_with_a_null_key_are_refused_with_their_count_not_dropped(
    driver: Driver, tmp_path: Path, pg_url: str
) -> None:
    # Given a SQLite table whose TEXT primary key holds NULLs (SQLite allows it)
    rows = [(None, 1), (None, 2), ("a", 3)]
    source = sqlite_db(
        tmp_path / "n.db", 'CREATE TABLE "T" (k TEXT PRIMARY KEY, v INT)', {"T": rows}
    )
    # When it is submitted, preflight says how many rows cannot be keyed
    errors = refusals(driver, one_stream(source, pg_url, source_table="T", target_table="t"))
    assert "2 rows" in errors["streams/0/key"] and "on_null_key" in errors["streams/0/key"]


def test_rows_with_a_null_key_can_be_quarantined_instead(
    driver: Driver, tmp_path: Path, pg_url: str
) -> None:
    rows = [(None, 1), (None, 1), (None, 2), ("a", 3), ("b", 4)]
    source = sqlite_db(
        tmp_path / "n.db", 'CREATE TABLE "T" (k TEXT PRIMARY KEY, v INT)', {"T": rows}
    )
    spec = one_stream(source, pg_url, source_table="T", target_table="t", on_null_key="quarantine")
    mid, view = migrate(driver, spec)
    assert view["rows_loaded"] == 2 and view["rows_quarantined"] == 3
    assert all("NULL" in why for why in reasons(driver, mid).values())
    assert_migrated(driver.rt.db, mid, spec)
    # And a second delivery of every message changes nothing
    assert migrate(driver, {**spec, "name": "again"})[1]["rows_quarantined"] == 3


def test_a_partial_unique_index_does_not_prove_a_key(
    driver: Driver, tmp_path: Path, pg_url: str
) -> None:
    pg_exec(pg_url, "CREATE TABLE legacy (email text NOT NULL, active boolean NOT NULL)")
    pg_exec(pg_url, "CREATE UNIQUE INDEX one_active ON legacy (email) WHERE active")
    target = sqlite_url(tmp_path / "t.db")
    spec = one_stream(pg_url, target, source_table="legacy", target_table="l", key="email")
    assert "partial" in refusals(driver, spec)["streams/0/key"]


def test_a_datetime_key_stored_with_a_t_plans_and_loads_every_row(
    driver: Driver, tmp_path: Path, pg_url: str
) -> None:
    # Given a SQLite DATETIME key stored as ISO text with a 'T'
    rows = [(f"2020-01-{d:02d}T10:00:{s:02d}", d * 100 + s) for d in range(1, 6) for s in range(40)]
    source = sqlite_db(
        tmp_path / "d.db", 'CREATE TABLE "E" (at DATETIME PRIMARY KEY, v INT)', {"E": rows}
    )
    # When it migrates in small chunks
    spec = one_stream(source, pg_url, source_table="E", target_table="e", chunk_rows=7)
    mid, view = migrate(driver, spec)
    # Then planning ended and every row arrived
    assert view["state"] == "succeeded" and view["rows_loaded"] == 200
    assert view["chunks_total"] <= 200 // 7 + 2
    assert_migrated(driver.rt.db, mid, spec)


def test_a_key_of_mixed_storage_classes_loads(driver: Driver, tmp_path: Path, pg_url: str) -> None:
    # Given an untyped key and an INTEGER key holding one stray text value
    source = sqlite_db(
        tmp_path / "m.db",
        'CREATE TABLE "U" (k PRIMARY KEY, v INT); CREATE TABLE "I" (k INT PRIMARY KEY, v INT)',
        {"U": [(1, 1), ("b", 2), (3.5, 3)], "I": [(i, i) for i in range(1, 30)]},
    )
    sqlite_rows(source, "UPDATE \"I\" SET k = '12abc' WHERE k = 12")
    spec = one_stream(source, pg_url, source_table="I", target_table="i", chunk_rows=5)
    spec["streams"].append({"source_table": "U", "target_table": "u", "create_target": True})
    mid, view = migrate(driver, spec)
    # Then the migration succeeds; the stray key cannot be an integer: quarantined, not lost
    assert view["state"] == "succeeded", view
    assert any("'12abc'" in why for why in reasons(driver, mid).values())
    assert pg_exec(pg_url, "SELECT count(*) FROM i")[0][0] == 28
    assert sorted(pg_exec(pg_url, "SELECT k FROM u")) == [("1",), ("3.5",), ("b",)]
    assert_migrated(driver.rt.db, mid, spec)


# --- values as stored, converted once --------------------------------------------------------


def test_a_sqlite_boolean_column_is_not_converted_on_the_way_in(
    driver: Driver, tmp_path: Path, pg_url: str
) -> None:
    # Given a column declared BOOLEAN that holds what legacy software wrote into it
    rows = [(1, 1), (2, 0), (3, "no"), (4, "N"), (5, "true")]
    source = sqlite_db(
        tmp_path / "b.db", 'CREATE TABLE "F" (id INTEGER PRIMARY KEY, ok BOOLEAN)', {"F": rows}
    )
    # When it migrates as it is
    spec = one_stream(source, pg_url, source_table="F", target_table="f")
    mid, _ = migrate(driver, spec)
    # Then 'no' and 'N' are not True: they are quarantined, saying what they are
    got = dict(pg_exec(pg_url, "SELECT id, ok FROM f"))
    assert got == {1: True, 2: False, 5: True}
    why = reasons(driver, mid)
    assert len(why) == 2 and all("'no'" in r or "'N'" in r for r in why.values())
    assert all("bool" in r for r in why.values())
    assert_migrated(driver.rt.db, mid, spec)
    # And with the 'bool' transform, the operator says what they mean
    pg_exec(pg_url, "DROP TABLE f")
    spec["streams"][0]["columns"] = {"id": "id", "ok": {"from": "ok", "transform": "bool"}}
    spec["name"] = "again"
    mid, _ = migrate(driver, spec)
    assert dict(pg_exec(pg_url, "SELECT id, ok FROM f")) == {
        1: True,
        2: False,
        3: False,
        4: False,
        5: True,
    }
    assert_migrated(driver.rt.db, mid, spec)


def test_declared_types_that_lie_reach_the_transforms_as_stored(
    driver: Driver, tmp_path: Path, pg_url: str
) -> None:
    # Given a DATE column holding day-first text and a NUMERIC one holding 'n/a'
    rows = [(1, "14/03/2019", "12.5"), (2, "2019-03-15", 5), (3, None, 7), (4, "01/01/2020", "n/a")]
    source = sqlite_db(
        tmp_path / "l.db",
        'CREATE TABLE "L" (id INTEGER PRIMARY KEY, born DATE, amount NUMERIC)',
        {"L": rows},
    )
    # When the date goes through the documented transform, and the amount as it is
    columns = {
        "id": "id",
        "born": {"from": "born", "transform": "date", "args": {"format": "%d/%m/%Y"}},
        "amount": "amount",
    }
    spec = one_stream(source, pg_url, source_table="L", target_table="l", columns=columns)
    mid, view = migrate(driver, spec)
    # Then nothing crashed: each bad value is a quarantined row with its reason
    assert view["state"] == "succeeded", view
    assert [r[0] for r in pg_exec(pg_url, "SELECT id FROM l ORDER BY id")] == [1, 3]
    why = " ".join(reasons(driver, mid).values())
    assert "'2019-03-15'" in why and "'n/a'" in why
    assert_migrated(driver.rt.db, mid, spec)


def test_a_sqlite_numeric_keeps_every_digit(driver: Driver, tmp_path: Path, pg_url: str) -> None:
    rows = [(1, 0.123456789012345), (2, "12345678901234567890.123456789"), (3, 10)]
    source = sqlite_db(
        tmp_path / "n.db", 'CREATE TABLE "N" (id INTEGER PRIMARY KEY, x NUMERIC)', {"N": rows}
    )
    spec = one_stream(source, pg_url, source_table="N", target_table="n")
    mid, _ = migrate(driver, spec)
    got = dict(pg_exec(pg_url, "SELECT id, x FROM n"))
    assert got[1] == Decimal("0.123456789012345")
    assert got[3] == 10
    assert_migrated(driver.rt.db, mid, spec)


def test_sqlite_to_sqlite_keeps_each_value_in_its_storage_class(
    driver: Driver, tmp_path: Path
) -> None:
    # Given a JSON column whose NUMERIC affinity made '1e400' an infinite REAL and '2.50' 2.5,
    # and a NUMERIC column holding text it could not convert without loss
    rows = [(1, "1e400", "12345678901234567890.123456789"), (2, '"x"', 2.5), (3, "2.50", "0.1")]
    source = sqlite_db(
        tmp_path / "s.db",
        'CREATE TABLE "D" (id INTEGER PRIMARY KEY, doc JSON, n NUMERIC)',
        {"D": rows},
    )
    target = sqlite_url(tmp_path / "t.db")
    # When the table migrates into another SQLite database
    spec = one_stream(source, target, source_table="D", target_table="d")
    mid, _ = migrate(driver, spec)
    # Then every value is held as the source holds it, storage class included
    read = "SELECT id, doc, typeof(doc), n, typeof(n) FROM {} ORDER BY id"
    assert sqlite_rows(target, read.format("d")) == sqlite_rows(source, read.format('"D"'))
    assert_migrated(driver.rt.db, mid, spec)


def _pg_source(url: str) -> None:
    pg_exec(
        url,
        """
        CREATE TABLE ev (
            id int PRIMARY KEY,
            at timestamptz,
            span interval,
            doc jsonb,
            raw json,
            tags text[]
        );
        INSERT INTO ev VALUES
            (1, '2020-03-29 01:30:00+02', '1 mon 2 days', '"123"', '{"a": 2.50}', '{a,"b c"}'),
            (2, '2020-01-01 00:00:00.000001-05:30', '-3 days 04:05:06.5', '"true"', '2.50', '{}'),
            (3, NULL, NULL, 'null', 'null', NULL),
            (4, '1999-12-31 23:59:59+00', '1 year', '{"b": [1, "x"], "a": 1}', '[1]', '{NULL}');
    """,
    )


def test_postgresql_to_postgresql_keeps_instants_intervals_and_json_text_on_both_load_paths(
    driver: Driver, pg_url_factory: Any
) -> None:
    # Given instants with offsets, intervals with months, JSON strings that look like
    # numbers and booleans, JSON numbers with trailing zeros, and an array
    source, target = pg_url_factory(), pg_url_factory()
    _pg_source(source)
    spec = one_stream(source, target, source_table="ev", target_table="ev")
    # When it migrates (COPY straight into the empty table) and migrates again (the
    # range is no longer empty: COPY into a stage, then an upsert)
    first, _ = migrate(driver, spec)
    created = pg_exec(
        target,
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = 'ev'::regclass AND attnum > 0 ORDER BY attnum",
    )
    once = pg_exec(
        target, "SELECT id, at, span::text, doc::text, raw::text, tags::text FROM ev ORDER BY id"
    )
    spec["name"] = "again"
    second, _ = migrate(driver, spec)
    twice = pg_exec(
        target, "SELECT id, at, span::text, doc::text, raw::text, tags::text FROM ev ORDER BY id"
    )
    # Then the types were kept, both load paths wrote the same values, and they are exact
    assert [c[0] for c in created] == [
        "integer",
        "timestamp with time zone",
        "interval",
        "jsonb",
        "json",
        "text[]",
    ]
    assert once == twice
    by_id = {row[0]: row for row in once}
    assert by_id[1][2] == "1 mon 2 days"
    assert by_id[1][3] == '"123"' and by_id[2][3] == '"true"'
    assert by_id[1][4] == '{"a": 2.50}' and by_id[2][4] == "2.50"
    assert by_id[1][5] == '{a,"b c"}'
    assert by_id[2][1].isoformat() == "2020-01-01T05:30:00.000001+00:00"
    for mid in (first, second):
        assert_migrated(driver.rt.db, mid, spec)


def test_an_instant_into_a_column_without_time_zone_is_quarantined_not_shifted(
    driver: Driver, tmp_path: Path, pg_url: str
) -> None:
    rows = [(1, "2020-01-01 10:00:00"), (2, "2020-01-01T10:00:00+02:00")]
    source = sqlite_db(
        tmp_path / "t.db", 'CREATE TABLE "T" (id INTEGER PRIMARY KEY, at DATETIME)', {"T": rows}
    )
    spec = one_stream(source, pg_url, source_table="T", target_table="t")
    mid, _ = migrate(driver, spec)
    assert [r[0] for r in pg_exec(pg_url, "SELECT id FROM t")] == [1]
    assert "UTC offset" in next(iter(reasons(driver, mid).values()))
    assert_migrated(driver.rt.db, mid, spec)


# --- MySQL-flavoured sources -----------------------------------------------------------------


def test_mysql_types_are_carried_or_refused_by_name(
    driver: Driver, mariadb_url: str, pg_url: str
) -> None:
    # Given unsigned integers, an ENUM, a SET and a column collation in a MariaDB table
    maria_exec(
        mariadb_url,
        """
        CREATE TABLE film (
            id SMALLINT UNSIGNED PRIMARY KEY,
            rating ENUM('G', 'PG-13') NOT NULL,
            features SET('Trailers', 'Deleted Scenes'),
            title VARCHAR(40) COLLATE utf8mb3_bin,
            seats INT UNSIGNED,
            released YEAR
        )
    """,
    )
    maria_exec(
        mariadb_url,
        "INSERT INTO film VALUES (40000, 'PG-13', 'Trailers,Deleted Scenes', "
        "'Zoo', 4000000000, 2006), (2, 'G', '', 'Abc', 0, NULL)",
    )
    spec = one_stream(mariadb_url, pg_url, source_table="film", target_table="film")
    # When the SET is not said how to carry, preflight names it and the option
    errors = refusals(driver, spec)
    assert set(errors) == {"streams/0/columns/features"}
    assert '"as"' in errors["streams/0/columns/features"]
    # And with "as": "json" everything else is carried exactly
    spec["streams"][0]["as"] = {"features": "json"}
    mid, view = migrate(driver, spec)
    assert view["state"] == "succeeded", view
    got = pg_exec(
        pg_url,
        "SELECT id, rating::text, features::text, title, seats, released FROM film ORDER BY id",
    )
    assert got == [
        (2, "G", "[]", "Abc", 0, None),
        (40000, "PG-13", '["Trailers","Deleted Scenes"]', "Zoo", 4000000000, 2006),
    ]
    assert_migrated(driver.rt.db, mid, spec)


def test_a_mariadb_float_is_carried_as_stored_not_as_its_six_digit_text(
    driver: Driver, mariadb_url: str, pg_url: str
) -> None:
    # Given single-precision values MariaDB writes out as 0.333333 and 1e38
    maria_exec(mariadb_url, "CREATE TABLE f (id INT PRIMARY KEY, x FLOAT)")
    maria_exec(mariadb_url, "INSERT INTO f VALUES (1, 0.33333334), (2, 1e38), (3, NULL)")
    # When they migrate into PostgreSQL's real
    spec = one_stream(mariadb_url, pg_url, source_table="f", target_table="f")
    mid, _ = migrate(driver, spec)
    # Then each arrives as the float MariaDB stores
    assert dict(pg_exec(pg_url, "SELECT id, x::text FROM f")) == {
        1: "0.33333334",
        2: "1e+38",
        3: None,
    }
    assert_migrated(driver.rt.db, mid, spec)
    # And on the way back, verification reads the MariaDB FLOAT as stored too
    back = one_stream(pg_url, mariadb_url, source_table="f", target_table="f_back")
    mid, _ = migrate(driver, {**back, "name": "back"})
    stored = maria_exec(mariadb_url, "SELECT id, CAST(x AS DOUBLE) FROM f_back ORDER BY id")
    assert stored == [(1, 0.3333333432674408), (2, 9.999999680285692e37), (3, None)]
    assert_migrated(driver.rt.db, mid, back)


def test_a_mariadb_enum_label_beyond_three_bytes_is_refused_unless_carried_as_text(
    driver: Driver, mariadb_url: str, pg_url: str
) -> None:
    # Given an ENUM label the catalog shows as '?'
    maria_exec(mariadb_url, "CREATE TABLE m (id INT PRIMARY KEY, e ENUM('ok', '😀'))")
    maria_exec(mariadb_url, "INSERT INTO m VALUES (1, '😀'), (2, 'ok')")
    spec = one_stream(mariadb_url, pg_url, source_table="m", target_table="m")
    # Then preflight refuses to recreate the labels, pointing at "as": "text"
    assert '"as": "text"' in refusals(driver, spec)["streams/0/columns/e"]
    spec["streams"][0]["as"] = {"e": "text"}
    mid, _ = migrate(driver, spec)
    assert pg_exec(pg_url, "SELECT id, e FROM m ORDER BY id") == [(1, "😀"), (2, "ok")]
    assert_migrated(driver.rt.db, mid, spec)


def test_an_array_into_mariadb_is_refused_at_preflight_unless_carried_as_json(
    driver: Driver, pg_url: str, mariadb_url: str
) -> None:
    pg_exec(pg_url, "CREATE TABLE p (id int PRIMARY KEY, tags text[], mood text)")
    pg_exec(pg_url, "INSERT INTO p VALUES (1, '{a,b}', 'ok'), (2, NULL, NULL)")
    spec = one_stream(pg_url, mariadb_url, source_table="p", target_table="p")
    errors = refusals(driver, spec)
    assert (
        "text[]" in errors["streams/0/columns/tags"]
        and '"as": "json"' in errors["streams/0/columns/tags"]
    )
    spec["streams"][0]["as"] = {"tags": "json"}
    mid, _ = migrate(driver, spec)
    assert maria_exec(mariadb_url, "SELECT tags FROM p ORDER BY id") == [('["a","b"]',), (None,)]
    assert_migrated(driver.rt.db, mid, spec)


def test_a_postgresql_enum_is_created_in_the_target(driver: Driver, pg_url_factory: Any) -> None:
    source, target = pg_url_factory(), pg_url_factory()
    pg_exec(source, "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')")
    pg_exec(source, "CREATE TABLE person (id int PRIMARY KEY, m mood NOT NULL)")
    pg_exec(source, "INSERT INTO person VALUES (1, 'happy'), (2, 'sad')")
    spec = one_stream(source, target, source_table="person", target_table="person")
    mid, _ = migrate(driver, spec)
    assert pg_exec(target, "SELECT enum_range(NULL::public.mood)::text")[0][0] == "{sad,ok,happy}"
    assert_migrated(driver.rt.db, mid, spec)


def test_enum_labels_that_differ_by_case_or_accent_stay_distinct_in_mariadb(
    driver: Driver, pg_url: str, mariadb_url: str
) -> None:
    # Given a PostgreSQL enum whose labels a case- and accent-insensitive collation merges
    pg_exec(pg_url, "CREATE TYPE tag AS ENUM ('a', 'A', 'é', 'e')")
    pg_exec(pg_url, "CREATE TABLE t (id int PRIMARY KEY, v tag)")
    pg_exec(pg_url, "INSERT INTO t VALUES (1, 'a'), (2, 'A'), (3, 'é'), (4, 'e')")
    # When it migrates into MariaDB, and from there into another MariaDB table
    spec = one_stream(pg_url, mariadb_url, source_table="t", target_table="t")
    mid, _ = migrate(driver, spec)
    again = one_stream(mariadb_url, mariadb_url, source_table="t", target_table="t2")
    mid2, _ = migrate(driver, {**again, "name": "again"})
    # Then the ENUMs were created and every value arrived as it was
    want = [(1, "a"), (2, "A"), (3, "é"), (4, "e")]
    assert maria_exec(mariadb_url, "SELECT id, v FROM t ORDER BY id") == want
    assert maria_exec(mariadb_url, "SELECT id, v FROM t2 ORDER BY id") == want
    assert_migrated(driver.rt.db, mid, spec)
    assert_migrated(driver.rt.db, mid2, again)


def test_a_table_named_with_another_case_says_what_was_meant(
    driver: Driver, tmp_path: Path, pg_url: str
) -> None:
    pg_exec(pg_url, 'CREATE TABLE "Order Details" (id int PRIMARY KEY)')
    target = sqlite_url(tmp_path / "t.db")
    spec = one_stream(pg_url, target, source_table="order details", target_table="od")
    assert "did you mean 'Order Details'?" in refusals(driver, spec)["streams/0/source_table"]


# --- keys that are not unique ------------------------------------------------------------------


def test_a_table_without_a_primary_key_and_a_view_move_with_write_insert(
    make_settings: Any, tmp_path: Path, pg_url: str
) -> None:
    # Given a log table without a primary key whose key repeats in runs longer than a chunk,
    # and a view over it; and a step budget so short that steps stop at their deadline
    rows = [(day, n, f"event {day}-{n}") for day in range(1, 41) for n in range(day % 7 * 9 + 1)]
    source = sqlite_db(
        tmp_path / "log.db",
        'CREATE TABLE "Log" (day INTEGER NOT NULL, n INTEGER, what TEXT);'
        'CREATE VIEW "Recent" AS SELECT day, what FROM "Log" WHERE day > 20',
        {"Log": rows},
    )
    driver = Driver(make_settings(step_budget_s=0.02))
    try:
        insert = {"key": "day", "write": "insert"}
        spec = one_stream(
            source, pg_url, source_table="Log", target_table="log", chunk_rows=20, **insert
        )
        recent_stream = {"source_table": "Recent", "target_table": "recent", **insert}
        spec["streams"].append({**recent_stream, "create_target": True})
        # When they migrate (a key that is not unique is refused unless write is insert)
        mid, view = migrate(driver, spec)
        # Then every row arrived once, runs of equal keys were never split by a cut
        assert view["state"] == "succeeded", view
        assert pg_exec(pg_url, "SELECT count(*) FROM log")[0][0] == len(rows)
        recent = sum(1 for r in rows if r[0] > 20)
        assert pg_exec(pg_url, "SELECT count(*) FROM recent")[0][0] == recent
        assert_migrated(driver.rt.db, mid, spec)
        with driver.rt.db.reading() as s:
            notes = [e.message for e in s.query(Event).filter(Event.kind == "preflight_note")]
        assert any("repeats up to 55 times" in n for n in notes), notes
    finally:
        driver.close()
    # And without write: insert, preflight says what would make it acceptable
    spec["streams"][0]["write"] = "upsert"
    spec["name"] = "refused"
    spec["streams"].pop()
    other = Driver(make_settings())
    try:
        assert "write: insert" in refusals(other, spec)["streams/0/key"]
    finally:
        other.close()
