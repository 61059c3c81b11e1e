"""Tables of every supported column type per source dialect, filled with adversarial values.

Each source dialect gets one column per type Baton carries out of it (docs/spec.md, "Types:
what each column becomes"), plus a key that is an integer or a text. Every value strategy
is biased towards the values that break converters: NaN, ±0.0, ±inf, 40-digit numerics,
4-byte unicode, NUL, empty text next to NULL, trailing spaces, case and accent variants,
leap days, DST-ambiguous local times, UTC offsets, JSON scalars written as text, huge
blobs. Strategies only draw values the source column can hold; a row the source still
refuses is left out of the table (the source is the truth the target is compared with).

Left out on purpose (covered by tests/integration/test_fidelity_cases.py instead):
PostgreSQL arrays and dialect-only types (ranges, ``inet``, ``money``…), which cross
dialects only with ``"as"``; fixed-width ``CHAR(n)``, whose padding each dialect reads
differently.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import strategies as st

SOURCES = ("sqlite", "postgresql", "mariadb")
TARGETS = ("postgresql", "mariadb", "sqlite")

Strategy = st.SearchStrategy[Any]


@dataclass(frozen=True)
class Col:
    """One source column: its declaration, what it holds (the oracle's kind), its values."""

    name: str
    kind: str  # int, decimal, float, real, bool, text, binary, date, time, timestamp,
    # instant, interval, json, uuid, enum, set, untyped
    sql: str
    values: Strategy
    carried_as: dict[str, str] = field(default_factory=dict)  # target dialect → "text"/"json"


def _biased(special: list[Any], general: Strategy) -> Strategy:
    """Mostly the adversarial values, sometimes anything the general strategy draws."""
    return st.one_of(st.sampled_from(special), st.sampled_from(special), general)


# --- text -----------------------------------------------------------------------------------

HUGE_TEXT = "🚀ü" * 150_000  # 750 kB of UTF-8, 4-byte characters included

TEXTS = [
    "",
    " ",
    "x ",
    " x",
    "trailing  ",
    "abc",
    "ABC",
    "Abc",
    "José",
    "Jose",
    "Jose\u0301",  # the same José, decomposed
    "JOSÉ",
    "ß",
    "SS",
    "😀",
    "\U0001d518\U0001d52b\U0001d526",  # mathematical letters, 4 bytes each
    "李雷",
    "tab\there",
    "line\nbreak",
    "cr\r\nlf",
    "back\\slash",
    "\\N",
    "NULL",
    "null",
    "O'Brien",
    '"quoted"',
    "\u2028\ufeff\u200b",
]
NUL_TEXTS = ["\x00", "a\x00b"]


def texts(max_size: int | None, nul: bool = True, huge: bool = False) -> Strategy:
    special = TEXTS + (NUL_TEXTS if nul else [])
    special = [t for t in special if max_size is None or len(t) <= max_size]
    alphabet = st.characters(exclude_categories=["Cs"] if nul else ["Cs", "Cc"])
    general = st.text(alphabet=alphabet, max_size=min(max_size or 30, 30))
    if huge:
        special = [*special, HUGE_TEXT]
    return _biased(special, general)


def key_texts(dialect: str) -> Strategy:
    special = [t for t in TEXTS if len(t) <= 40]
    alphabet = st.characters(exclude_categories=["Cs", "Cc"])
    return _biased(special, st.text(alphabet=alphabet, max_size=20))


# --- numbers --------------------------------------------------------------------------------

FORTY = Decimal("1234567890123456789012345678901234567890")
DECIMALS = [
    Decimal("0"),
    Decimal("-0"),
    Decimal("0.000"),
    Decimal("-0.00001"),
    Decimal("2.50"),
    FORTY,
    -FORTY,
    Decimal("0.1234567890123456789"),
    Decimal("99999999999999999999.99999999999999999999"),
    Decimal("1E+30"),
    Decimal("1E-20"),
]
SPECIAL_DECIMALS = [Decimal("NaN"), Decimal("Infinity"), Decimal("-Infinity")]


def decimals(whole: int, places: int, special: bool) -> Strategy:
    """Decimals with at most ``whole`` integer digits and ``places`` fractional digits."""

    def fits(d: Decimal) -> bool:
        if not d.is_finite():
            return special
        _, digits, exponent = d.normalize().as_tuple()
        assert isinstance(exponent, int)
        return max(0, -exponent) <= places and max(0, len(digits) + exponent) <= whole

    general = st.decimals(allow_nan=False, allow_infinity=False, places=min(places, 8)).filter(
        lambda d: abs(d) < Decimal(10) ** min(whole, 30)
    )
    return _biased([d for d in DECIMALS + SPECIAL_DECIMALS if fits(d)], general.filter(fits))


FLOATS = [
    float("nan"),
    float("inf"),
    float("-inf"),
    0.0,
    -0.0,
    0.1,
    1 / 3,
    5e-324,
    1.7976931348623157e308,
    -2.2250738585072014e-308,
    9007199254740993.0,
    1e16,
    123456789.125,
]


def floats(width: int, special: bool) -> Strategy:
    keep = [f for f in FLOATS if special or (f == f and abs(f) != float("inf"))]
    if width == 32:
        keep = [f for f in keep if f != f or abs(f) in (0.0, float("inf")) or f in (0.1, 1 / 3)]
    general = st.floats(width=width, allow_nan=special, allow_infinity=special)
    return _biased(keep, general)


def ints(low: int, high: int) -> Strategy:
    edges = [0, 1, -1, low, high, low + 1, high - 1]
    return _biased([e for e in edges if low <= e <= high], st.integers(low, high))


# --- time -----------------------------------------------------------------------------------

LEAP_DAYS = [dt.date(2000, 2, 29), dt.date(2024, 2, 29), dt.date(1904, 2, 29)]


def dates(low: dt.date) -> Strategy:
    special = [*LEAP_DAYS, dt.date(1900, 2, 28), dt.date(1970, 1, 1), dt.date(9999, 12, 31)]
    special += [low]
    return _biased([d for d in special if d >= low], st.dates(low, dt.date(9999, 12, 31)))


def times() -> Strategy:
    special = [dt.time(0), dt.time(23, 59, 59, 999999), dt.time(12, 0, 0, 500000), dt.time(2, 30)]
    return _biased(special, st.times())


# Local times that happen twice or never in the zones around them (they must not move).
DST_LOCAL = [
    dt.datetime(2021, 11, 7, 1, 30),  # America/New_York: twice
    dt.datetime(2021, 10, 31, 2, 30),  # Europe/Berlin: twice
    dt.datetime(2021, 3, 28, 2, 30),  # Europe/Berlin: never
    dt.datetime(2021, 3, 14, 2, 30, 0, 1),  # America/New_York: never
    dt.datetime(2024, 2, 29, 23, 59, 59, 999999),
    dt.datetime(2000, 2, 29, 0, 0),
]


def naive_datetimes(low: dt.datetime) -> Strategy:
    general = st.datetimes(low, dt.datetime(9999, 12, 31, 23, 59, 59))
    return _biased([d for d in DST_LOCAL if d >= low], general)


ZONES = [
    dt.UTC,
    dt.timezone(dt.timedelta(hours=5, minutes=30)),
    dt.timezone(dt.timedelta(hours=-3)),
    dt.timezone(dt.timedelta(hours=14)),
    dt.timezone(dt.timedelta(hours=-12)),
    dt.timezone(dt.timedelta(hours=-9, minutes=-30)),
    ZoneInfo("America/New_York"),
    ZoneInfo("Europe/Berlin"),
]


def instants(low: dt.datetime, high: dt.datetime) -> Strategy:
    """Aware datetimes (a DST-ambiguous local time in its zone, either fold), in range."""
    ambiguous = [
        dt.datetime(2021, 11, 7, 1, 30, tzinfo=ZoneInfo("America/New_York"), fold=f) for f in (0, 1)
    ] + [dt.datetime(2021, 10, 31, 2, 30, 0, 5, tzinfo=ZoneInfo("Europe/Berlin"), fold=1)]
    general = st.datetimes(
        low.replace(tzinfo=None), high.replace(tzinfo=None), timezones=st.sampled_from(ZONES)
    )
    return _biased(ambiguous, general).filter(lambda d: low <= d <= high)


def offset_texts() -> Strategy:
    """SQLite: ISO timestamps as text, some with a UTC offset, a 'T' or a 'Z'."""
    return st.one_of(
        naive_datetimes(dt.datetime(1, 1, 1)).map(lambda d: d.isoformat(sep=" ")),
        naive_datetimes(dt.datetime(1, 1, 1)).map(dt.datetime.isoformat),
        instants(
            dt.datetime(1900, 1, 1, tzinfo=dt.UTC), dt.datetime(9999, 1, 1, tzinfo=dt.UTC)
        ).map(dt.datetime.isoformat),
        st.sampled_from(["2020-01-01T10:00:00Z", "2020-02-29 12:00:00+00:00"]),
    )


def intervals() -> Strategy:
    """PostgreSQL interval text: months, days and microseconds apart (none converts)."""
    special = ["1 mon", "-1 mon 30 days", "1 year 2 mons -3 days 04:05:06.5", "00:00:00", "-1 days"]
    general = st.builds(
        lambda mo, d, us: f"{mo} mons {d} days {us} microseconds",
        st.integers(-2000, 2000),
        st.integers(-40000, 40000),
        st.integers(-(10**12), 10**12),
    )
    return _biased(special, general)


# --- JSON -----------------------------------------------------------------------------------

JSON_TEXTS = [
    '"123"',
    '"true"',
    '"null"',
    "null",
    "true",
    "2.50",
    "-0",
    "0.0",
    "1e400",
    "12345678901234567890123456789012345678901",
    '""',
    '" trailing "',
    '"\\u00e9"',
    '"é"',
    '"😀"',
    '"\\ud83d\\ude00"',
    "[]",
    "{}",
    '{"b": 1, "a": [1, "x", null, 2.50]}',
    '{"a":{"a":{"a":[[[]]]}}}',
    " [1, 2] ",
]
JSON_NUL = '"a\\u0000b"'  # not in PostgreSQL jsonb


def json_texts(nul: bool) -> Strategy:
    leaves = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=8),
    )
    documents = st.recursive(
        leaves,
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
        ),
        max_leaves=8,
    )
    general = documents.map(lambda v: json.dumps(v, ensure_ascii=False))
    if not nul:
        general = general.filter(lambda t: "\\u0000" not in t)
    return _biased(JSON_TEXTS + ([JSON_NUL] if nul else []), general)


# --- the rest -------------------------------------------------------------------------------

HUGE_BLOB = bytes(range(256)) * 8192  # 2 MiB


def blobs() -> Strategy:
    special = [b"", b"\x00", b"\x00\x00 ", b"\xff\xfe", "é".encode(), b"\\x00", HUGE_BLOB]
    return _biased(special, st.binary(max_size=40))


MOODS = ("sad", "ok", "Happy", "happy", "Zoë", "Zoe", "😀")  # distinct only by case, accent
# MariaDB's catalog shows a 4-byte character in an ENUM label as '?', so such a column is
# refused at preflight unless carried "as": "text" (tests/unit/test_values.py,
# tests/integration/test_fidelity_cases.py); the generated MariaDB ENUM leaves 😀 out.
MARIA_MOODS = MOODS[:-1]
SET_MEMBERS = ("a", "B", "b", "c d")
BINARY = "CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin"  # so 'B' and 'b' can both be labels


def set_texts() -> Strategy:
    return st.sets(st.sampled_from(SET_MEMBERS)).map(lambda s: ",".join(sorted(s)))


def untyped() -> Strategy:
    """A SQLite column without a type: any storage class."""
    return st.one_of(
        ints(-(2**63), 2**63 - 1),
        floats(64, special=False),
        texts(None, nul=False),
        st.sampled_from(["5", "5.0", "-0", "1e3"]),
    )


def nullable(values: Strategy) -> Strategy:
    return st.one_of(st.none(), values, values, values)


# --- tables per source dialect -----------------------------------------------------------

TS_LOW = dt.datetime(1, 1, 1)
MARIA_TS_LOW = dt.datetime(1970, 1, 2, tzinfo=dt.UTC)
MARIA_TS_HIGH = dt.datetime(2038, 1, 18, tzinfo=dt.UTC)


def columns(dialect: str, enum_type: str) -> list[Col]:
    """Every supported column type of ``dialect``, each with its adversarial values."""
    if dialect == "sqlite":
        return [
            Col("i", "int", "INTEGER", ints(-(2**63), 2**63 - 1)),
            Col("n", "decimal", "NUMERIC", decimals(40, 20, special=False).map(str)),
            Col("d", "decimal", "DECIMAL(30,10)", decimals(20, 10, special=False).map(str)),
            Col("r", "float", "REAL", floats(64, special=True)),
            Col("b", "bool", "BOOLEAN", st.sampled_from([0, 1])),
            Col("t", "text", "TEXT", texts(None, huge=True)),
            Col("v", "text", "VARCHAR(40)", texts(40)),
            Col("bl", "binary", "BLOB", blobs()),
            Col("dy", "date", "DATE", dates(dt.date(1, 1, 1)).map(dt.date.isoformat)),
            Col("tm", "time", "TIME", times().map(lambda t: t.isoformat())),
            Col("ts", "timestamp", "DATETIME", offset_texts()),
            Col("j", "json", "JSON", json_texts(nul=True)),
            Col("u", "untyped", "", untyped()),
        ]
    if dialect == "postgresql":
        return [
            Col("i2", "int", "smallint", ints(-(2**15), 2**15 - 1)),
            Col("i4", "int", "integer", ints(-(2**31), 2**31 - 1)),
            Col("i8", "int", "bigint", ints(-(2**63), 2**63 - 1)),
            Col("n", "decimal", "numeric", decimals(60, 30, special=True)),
            Col("d", "decimal", "numeric(60,20)", decimals(40, 20, special=False)),
            Col("r4", "real", "real", floats(32, special=True)),
            Col("r8", "float", "double precision", floats(64, special=True)),
            Col("b", "bool", "boolean", st.booleans()),
            Col("t", "text", "text", texts(None, nul=False, huge=True)),
            Col("v", "text", "varchar(40)", texts(40, nul=False)),
            Col("bl", "binary", "bytea", blobs()),
            Col("dy", "date", "date", dates(dt.date(1, 1, 1))),
            Col("tm", "time", "time", times()),
            Col("ts", "timestamp", "timestamp", naive_datetimes(TS_LOW)),
            Col(
                "tz",
                "instant",
                "timestamptz",
                instants(
                    dt.datetime(2, 1, 1, tzinfo=dt.UTC), dt.datetime(9999, 1, 1, tzinfo=dt.UTC)
                ),
            ),
            Col("iv", "interval", "interval", intervals(), {"mariadb": "text"}),
            Col("j", "json", "json", json_texts(nul=True)),
            Col("jb", "json", "jsonb", json_texts(nul=False)),
            Col("id", "uuid", "uuid", st.uuids().map(str) | st.just(str(uuid.UUID(int=0)))),
            Col("e", "enum", enum_type, st.sampled_from(MOODS)),
        ]
    if dialect == "mariadb":
        return [
            Col("i1", "int", "TINYINT", ints(-128, 127)),
            Col("i2", "int", "SMALLINT", ints(-(2**15), 2**15 - 1)),
            Col("i3", "int", "MEDIUMINT", ints(-(2**23), 2**23 - 1)),
            Col("i4", "int", "INT", ints(-(2**31), 2**31 - 1)),
            Col("i8", "int", "BIGINT", ints(-(2**63), 2**63 - 1)),
            Col("u8", "int", "BIGINT UNSIGNED", ints(0, 2**64 - 1)),
            Col("y", "int", "YEAR", st.sampled_from([1901, 2000, 2155, 2024])),
            Col("n", "decimal", "DECIMAL(65,30)", decimals(35, 30, special=False)),
            Col("d", "decimal", "DECIMAL(60,20)", decimals(40, 20, special=False)),
            Col("r4", "real", "FLOAT", floats(32, special=False)),
            Col("r8", "float", "DOUBLE", floats(64, special=False)),
            Col("b", "bool", "BOOLEAN", st.sampled_from([0, 1])),
            Col("t", "text", "LONGTEXT", texts(None, huge=True)),
            Col("v", "text", "VARCHAR(40)", texts(40)),
            Col("bl", "binary", "LONGBLOB", blobs()),
            Col("dy", "date", "DATE", dates(dt.date(1000, 1, 1))),
            Col("tm", "time", "TIME(6)", times()),
            Col("ts", "timestamp", "DATETIME(6)", naive_datetimes(dt.datetime(1000, 1, 1))),
            Col(
                "tz",
                "instant",
                "TIMESTAMP(6) NULL",
                instants(MARIA_TS_LOW, MARIA_TS_HIGH),
            ),
            Col("j", "json", "JSON", json_texts(nul=True)),
            Col(
                "e",
                "enum",
                "ENUM(" + ",".join(f"'{m}'" for m in MARIA_MOODS) + ") " + BINARY,
                st.sampled_from(MARIA_MOODS),
            ),
            Col(
                "s",
                "set",
                "SET(" + ",".join(f"'{m}'" for m in SET_MEMBERS) + ") " + BINARY,
                set_texts(),
                {"postgresql": "json", "sqlite": "json"},
            ),
        ]
    raise ValueError(dialect)


@dataclass
class Table:
    """One generated source table: its key's kind, its columns and its rows."""

    key_kind: str  # "int" or "text"
    columns: list[Col]
    rows: list[dict[str, Any]]
    chunk_rows: int

    def __repr__(self) -> str:  # what a failure shows: every value, the huge ones cut short
        def short(v: Any) -> str:
            text = repr(v)
            return text if len(text) <= 80 else f"{text[:60]}… ({len(v)} long)"

        rows = "\n".join(
            "  {" + ", ".join(f"{c}: {short(v)}" for c, v in row.items()) + "}" for row in self.rows
        )
        return f"Table(key {self.key_kind}, chunk_rows {self.chunk_rows}, rows:\n{rows})"


@st.composite
def tables(draw: st.DrawFn, dialect: str, enum_type: str) -> Table:
    cols = columns(dialect, enum_type)
    key_kind = draw(st.sampled_from(["int", "text"]))
    n = draw(st.integers(1, 6))
    if key_kind == "int":
        keys: list[Any] = draw(
            st.lists(ints(-(2**31), 2**31 - 1), min_size=n, max_size=n, unique=True)
        )
    else:
        keys = draw(st.lists(key_texts(dialect), min_size=n, max_size=n, unique=True))
    rows = []
    for k in keys:
        row: dict[str, Any] = {"k": k}
        for c in cols:
            row[c.name] = draw(nullable(c.values))
        rows.append(row)
    return Table(key_kind, cols, rows, draw(st.integers(1, 4)))
