"""The value path's parts, one rule at a time: casts, target types, encoders, canonical forms."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import psycopg
import pymysql
import pytest
from sqlalchemy import exc as sa_exc

from etl_tasks.connectors.sql.errors import classify
from etl_tasks.errors import BadRowError
from etl_tasks.values.canonical import canonical_for, interval_parts
from etl_tasks.values.casts import cast_to
from etl_tasks.values.ddl import Target, Uncarriable, carry
from etl_tasks.values.encoders import interval_text, mysql_param, pg_copy_field, sqlite_param
from etl_tasks.values.types import ColumnType, Kind

PG, MY, LITE = "postgresql", "mysql", "sqlite"


def col(kind: Kind, sql: str = "", dialect: str = PG, **kw: Any) -> ColumnType:
    return ColumnType(dialect, kind, sql or kind.value, **kw)


def ok(target: ColumnType, value: Any) -> Any:
    return cast_to(target)(value)


def refused(target: ColumnType, value: Any) -> str:
    with pytest.raises(BadRowError) as info:
        cast_to(target)(value)
    return info.value.reason


# --- strict casts ----------------------------------------------------------------------------


def test_integers_are_exact_and_in_range() -> None:
    small = col(Kind.INTEGER, "smallint", precision=16)
    assert ok(small, "42") == 42 and ok(small, 7.0) == 7 and ok(small, Decimal("3")) == 3
    assert ok(small, True) == 1 and type(ok(small, True)) is int
    assert "outside" in refused(small, 40000)
    assert "outside" in refused(col(Kind.INTEGER, precision=16, unsigned=True), -1)
    assert ok(col(Kind.INTEGER, precision=16, unsigned=True), 65535) == 65535
    for value in ("4.5", 4.5, "12abc", b"1"):
        refused(small, value)


def test_decimals_keep_every_digit_or_refuse() -> None:
    money = col(Kind.DECIMAL, "numeric(10,2)", precision=10, scale=2)
    assert ok(money, 2.5) == Decimal("2.5") and ok(money, "12345678.90") == Decimal("12345678.90")
    assert "rounded" in refused(money, "1.005")
    assert "rounded" in refused(money, 123456789)
    free = col(Kind.DECIMAL, "numeric")
    assert ok(free, 0.123456789012345) == Decimal("0.123456789012345")
    assert ok(free, "1" * 40) == Decimal("1" * 40)
    assert ok(free, float("nan")).is_nan()
    refused(col(Kind.DECIMAL, dialect=MY), float("nan"))
    refused(free, "n/a")


def test_floats_accept_what_a_float_holds_exactly() -> None:
    double = col(Kind.FLOAT, "double precision", precision=53)
    assert ok(double, "0.10") == 0.1 and ok(double, 2**53) == float(2**53)
    assert "exactly" in refused(double, "0.1000000000000000000001")
    refused(double, 2**53 + 1)
    refused(col(Kind.FLOAT, dialect=MY), float("inf"))


def test_special_floats_only_where_the_target_keeps_them() -> None:
    # MariaDB's DOUBLE and SQLite's REAL turn -0.0 into 0: a bad row, not a changed value
    assert "-0.0" in refused(col(Kind.FLOAT, dialect=MY), -0.0)
    assert "-0.0" in refused(col(Kind.FLOAT, "REAL", LITE), "-0.0")
    assert str(ok(col(Kind.FLOAT), -0.0)) == "-0.0"
    # SQLite stores infinities in a REAL, and NaN as NULL
    assert ok(col(Kind.FLOAT, "REAL", LITE), float("-inf")) == float("-inf")
    refused(col(Kind.FLOAT, "REAL", LITE), float("nan"))
    assert ok(col(Kind.FLOAT, "REAL", LITE), 0.0) == 0.0


def test_booleans_only_from_what_means_one() -> None:
    flag = col(Kind.BOOLEAN)
    assert [ok(flag, v) for v in (1, 0, "t", "FALSE", True)] == [True, False, True, False, True]
    for value in ("no", "N", 2, "yes"):
        assert "'bool' transform" in refused(flag, value)


def test_text_length_and_nul() -> None:
    short = col(Kind.TEXT, "varchar(3)", length=3)
    assert ok(short, "abc") == "abc" and ok(short, 12) == "12"
    assert "longer than 3" in refused(short, "abcd")
    assert "NUL" in refused(col(Kind.TEXT), "a\x00b")
    assert ok(col(Kind.TEXT, dialect=MY), "a\x00b") == "a\x00b"


def test_dates_times_and_instants() -> None:
    date = col(Kind.DATE)
    assert ok(date, "2019-03-14") == dt.date(2019, 3, 14)
    assert "'date' transform" in refused(date, "14/03/2019")
    stamp = col(Kind.TIMESTAMP, "timestamp(3)", scale=3)
    assert ok(stamp, "2020-01-01T10:00:00.123") == dt.datetime(2020, 1, 1, 10, 0, 0, 123000)
    assert "3 fractional" in refused(stamp, "2020-01-01 10:00:00.123456")
    assert "UTC offset" in refused(col(Kind.TIMESTAMP), "2020-01-01T10:00:00+02:00")
    on_mysql = ok(col(Kind.TIMESTAMP, dialect=MY), "2020-01-01T10:00:00+02:00")
    assert on_mysql == dt.datetime(2020, 1, 1, 8, 0)
    instant = col(Kind.TIMESTAMPTZ)
    assert ok(instant, "2020-01-01 10:00:00").tzinfo == dt.UTC  # no offset given: UTC


def test_time_from_a_duration_only_within_a_day() -> None:
    t = col(Kind.TIME, scale=6)
    assert ok(t, dt.timedelta(hours=1, microseconds=5)) == dt.time(1, 0, 0, 5)
    refused(t, dt.timedelta(hours=25))
    refused(t, dt.timedelta(seconds=-1))


def test_json_is_kept_as_its_exact_text() -> None:
    doc = col(Kind.JSON)
    assert ok(doc, '{"a": 2.50}') == '{"a": 2.50}'
    assert ok(doc, '"123"') == '"123"'
    assert ok(doc, {"a": [1]}) == '{"a":[1]}'
    assert "not JSON" in refused(doc, "hello")
    # numbers beyond a double are JSON all the same; constants that are not JSON are refused
    assert ok(doc, "1e400") == "1e400"
    assert ok(doc, '{"n": -1e400}') == '{"n": -1e400}'
    assert "not JSON" in refused(doc, "NaN") and "not JSON" in refused(doc, "[Infinity]")
    canon = canonical_for(doc)
    assert canon("1e400") == canon("1" + "0" * 400) != canon("1e399")


def test_labels_of_enums_and_sets() -> None:
    mood = col(Kind.ENUM, labels=("sad", "ok"))
    assert ok(mood, "ok") == "ok"
    assert "not one of" in refused(mood, "meh")
    features = col(Kind.SET, labels=("a", "b"), dialect=MY)
    assert ok(features, "a,b") == "a,b" and ok(features, "") == ""
    refused(features, "a,c")


# --- what created columns become -------------------------------------------------------------


def carried(src: ColumnType, to: Target, *, key: bool = False, keys: int = 1) -> str:
    return carry(src, to, "c", key=key, rep=None, key_columns=keys).sql


MARIA = Target(MY, mariadb=True, table="t")


def test_unsigned_integers_get_the_next_wider_signed_type() -> None:
    pg = Target(PG)
    assert carried(col(Kind.INTEGER, precision=16, unsigned=True, dialect=MY), pg) == "integer"
    assert carried(col(Kind.INTEGER, precision=32, unsigned=True, dialect=MY), pg) == "bigint"
    assert (
        carried(col(Kind.INTEGER, precision=64, unsigned=True, dialect=MY), pg) == "numeric(20,0)"
    )
    assert carried(col(Kind.INTEGER, "int(10) unsigned", MY, unsigned=True), MARIA) == (
        "int(10) unsigned"
    )


def test_text_keys_on_mariadb_are_binary_and_share_the_index_budget() -> None:
    text = col(Kind.TEXT, "TEXT", LITE)
    one = carried(text, MARIA, key=True)
    assert "utf8mb4_nopad_bin" in one and "VARCHAR(768)" in one
    assert "VARCHAR(384)" in carried(text, MARIA, key=True, keys=2)
    assert "utf8mb4_0900_bin" in carried(text, Target(MY, table="t"), key=True)
    assert "COLLATE" not in carried(text, MARIA)


def test_no_collation_crosses_dialects() -> None:
    binary = col(Kind.TEXT, "varchar(40)", MY, length=40, collation="utf8mb3_bin")
    assert carried(binary, Target(PG)) == "character varying(40)"


def test_kinds_without_a_counterpart_are_refused_with_the_option() -> None:
    for src, to in (
        (col(Kind.ARRAY, "text[]"), MARIA),
        (col(Kind.SET, "set('a')", MY), Target(PG)),
        (col(Kind.INTERVAL), MARIA),
        (col(Kind.NATIVE, "tsvector"), MARIA),
    ):
        with pytest.raises(Uncarriable) as info:
            carried(src, to)
        assert info.value.option and '"as"' in info.value.option
    assert carry(col(Kind.ARRAY, "text[]"), MARIA, "c", key=False, rep="json").sql == "JSON"


def test_mysql_labels_the_catalog_may_have_garbled_are_refused_with_the_option() -> None:
    # information_schema shows ENUM('ok','😀') as enum('ok','?'): recreating it would lose 😀
    garbled = col(Kind.ENUM, "enum('ok','?')", MY, labels=("ok", "?"))
    for to in (MARIA, Target(PG), Target(LITE)):
        with pytest.raises(Uncarriable) as info:
            carry(garbled, to, "e", key=False, rep=None)
        assert "3 bytes" in info.value.reason and info.value.option == '"as": "text"'
    assert carry(garbled, MARIA, "e", key=False, rep="text").sql == "LONGTEXT"
    assert carried(col(Kind.ENUM, "enum('ok')", MY, labels=("ok",)), MARIA) == "enum('ok')"


def test_within_postgresql_enums_and_domains_are_created() -> None:
    mood = col(Kind.ENUM, "mood", labels=("a", "b'c"), user_type="public.mood")
    done = carry(mood, Target(PG), "m", key=False, rep=None)
    assert (
        done.sql == "mood"
        and "CREATE TYPE \"public\".\"mood\" AS ENUM ('a', 'b''c')" in done.setup[0]
    )
    year = col(Kind.INTEGER, "year", user_type="public.year", base="integer CHECK (VALUE > 0)")
    assert (
        'CREATE DOMAIN "public"."year" AS integer CHECK'
        in carry(year, Target(PG), "y", key=False, rep=None).setup[0]
    )
    named = carry(
        col(Kind.ENUM, "enum('x')", MY, labels=("x",)),
        Target(PG, table="s.film"),
        "r",
        key=False,
        rep=None,
    )
    assert named.sql == '"s"."film_r_enum"'


def test_sqlite_to_sqlite_keeps_the_declaration_and_so_the_affinity() -> None:
    # the same affinity stores a value read from the source exactly as the source holds it
    assert carried(col(Kind.DECIMAL, "NUMERIC", LITE), Target(LITE)) == "NUMERIC"
    assert carried(col(Kind.JSON, "JSON", LITE), Target(LITE)) == "JSON"


def test_exact_counterparts_across_dialects() -> None:
    assert carried(col(Kind.DECIMAL, "numeric(10,2)"), Target(LITE)) == "TEXT"
    assert carried(col(Kind.TIMESTAMPTZ), MARIA) == "DATETIME(6)"
    assert carried(col(Kind.JSON, "longtext", MY), Target(PG)) == "json"
    assert carried(col(Kind.FLOAT, "float", MY, precision=24), Target(PG)) == "real"


# --- encoders and canonical forms ------------------------------------------------------------


def test_one_spelling_per_dialect() -> None:
    assert pg_copy_field(dt.timedelta(days=-1, microseconds=5)) == "-1 days 0.000005 seconds"
    assert pg_copy_field(dt.datetime(2020, 1, 1, tzinfo=dt.UTC)) == "2020-01-01T00:00:00+00:00"
    assert pg_copy_field("a\tb\\") == "a\\tb\\\\" and pg_copy_field(None) == "\\N"
    assert pg_copy_field(b"\x00\\") == "\\\\x005c"
    assert mysql_param({"a": 1}) == '{"a":1}'
    assert sqlite_param(Decimal("1.50")) == "1.50"
    assert sqlite_param(dt.datetime(2020, 1, 1, 10)) == "2020-01-01 10:00:00"


def test_intervals_compare_by_months_days_and_microseconds() -> None:
    assert interval_parts("1 year 2 mons 3 days 04:05:06.5") == (14, 3, 14_706_500_000)
    assert interval_parts("-3 days -04:05:06") == (0, -3, -14_706_000_000)
    assert interval_parts(dt.timedelta(days=2, seconds=1)) == (0, 2, 1_000_000)
    assert interval_parts(interval_text(dt.timedelta(days=2, seconds=1))) == (0, 2, 1_000_000)


@pytest.mark.parametrize(
    ("target", "a", "b"),
    [
        (col(Kind.DECIMAL), Decimal("2.50"), "2.5"),
        (col(Kind.JSON), '{"b": 1, "a": 2.50}', '{"a": 2.5, "b": 1}'),
        (
            col(Kind.TIMESTAMPTZ),
            "2020-01-01 10:00:00+02",
            dt.datetime(2020, 1, 1, 8, tzinfo=dt.UTC),
        ),
        (col(Kind.TIMESTAMP, dialect=MY), "2020-01-01 10:00:00", dt.datetime(2020, 1, 1, 10)),
        (col(Kind.BOOLEAN), "t", True),
        (col(Kind.TEXT, fixed=True), "ab ", "ab"),
        (col(Kind.SET, dialect=MY), "b,a", "a,b"),
        (col(Kind.BINARY), "\\x00ff", b"\x00\xff"),
    ],
)
def test_canonical_forms_agree_across_what_databases_return(
    target: ColumnType, a: Any, b: Any
) -> None:
    canon = canonical_for(target)
    assert canon(a) == canon(b)


def test_canonical_forms_tell_different_values_apart() -> None:
    assert canonical_for(col(Kind.JSON))('"123"') != canonical_for(col(Kind.JSON))("123")
    assert canonical_for(col(Kind.TEXT))("x") != canonical_for(col(Kind.TEXT))("x ")
    instant = canonical_for(col(Kind.TIMESTAMPTZ))
    assert instant("2020-01-01 10:00:00+02") != instant("2020-01-01 10:00:00+00")


# --- errors classified by code ---------------------------------------------------------------


def _mysql(code: int, kind: type[Exception] = pymysql.err.OperationalError) -> Exception:
    return sa_exc.OperationalError("x", None, kind(code, "message"))


@pytest.mark.parametrize(
    ("code", "expected"),
    [(1241, "fatal"), (1071, "fatal"), (2003, "transient"), (1205, "transient"), (1406, "bad_row")],
)
def test_mysql_errors_are_classified_by_number(code: int, expected: str) -> None:
    assert classify(_mysql(code)) == expected


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (psycopg.errors.SerializationFailure, "transient"),
        (psycopg.errors.UniqueViolation, "bad_row"),
        (psycopg.errors.UndefinedTable, "fatal"),
        (psycopg.errors.AdminShutdown, "transient"),
    ],
)
def test_the_state_dbs_driver_errors_are_classified_by_their_sqlstate(
    error: type[Exception], expected: str
) -> None:
    # psycopg 3 (the state DB's driver) names the code ``sqlstate``, psycopg2 ``pgcode``
    wrapped = sa_exc.DBAPIError("x", None, error("message"))
    assert classify(wrapped) == expected
