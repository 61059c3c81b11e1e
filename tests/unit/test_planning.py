"""Unit tests for keyset planning: ``RangeQuery.next_boundary`` and ``read_range`` on SQLite.

``planning.boundaries`` needs a Runtime, so :func:`plan` below walks boundaries
the same way it does: each range is ``(lower, upper]``, the last one open.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, create_engine, func, select, text

from etl_tasks.connectors.sql.queries import (
    RangeQuery,
    range_condition,
    reflect_table,
    split_name,
)
from etl_tasks.spec import Filter

Key = tuple[Any, ...]
Range = tuple[Key | None, Key | None]

# --- fixtures and helpers ------------------------------------------------------------------


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    eng = create_engine(f"sqlite:///{tmp_path / 'source.db'}")
    yield eng
    eng.dispose()


def create(engine: Engine, ddl: str, insert: str, rows: Sequence[dict[str, Any]]) -> None:
    with engine.begin() as conn:
        conn.execute(text(ddl))
        if rows:
            conn.execute(text(insert), list(rows))


def add_rows(engine: Engine, insert: str, rows: Sequence[dict[str, Any]]) -> None:
    with engine.begin() as conn:
        conn.execute(text(insert), list(rows))


def source(engine: Engine, table: str, key: list[str], where: Sequence[Filter] = ()) -> RangeQuery:
    """A source reading every column of the reflected table, key columns first."""
    reflected = reflect_table(engine, table)
    columns = key + [c.name for c in reflected.columns if c.name not in key]
    return RangeQuery(reflected, key, columns, where)


def plan(src: RangeQuery, conn: Connection, rows: int, lower: Key | None = None) -> list[Range]:
    """Every range after ``lower``, the way ``planning.boundaries`` cuts them."""
    ranges: list[Range] = []
    while True:
        upper = src.next_boundary(conn, lower, rows)
        ranges.append((lower, upper))
        if upper is None:
            return ranges
        lower = upper


def read_chunks(src: RangeQuery, conn: Connection, ranges: list[Range]) -> list[list[Key]]:
    """The rows of each range (as tuples, key columns first)."""
    return [src.read_range(conn, lo, hi) for lo, hi in ranges]


def assert_partition(src: RangeQuery, engine: Engine, rows: int, expected_keys: list[Key]) -> None:
    """Planning in ``rows``-row ranges covers ``expected_keys`` once each, in key order."""
    width = len(src.key_cols)
    with engine.connect() as conn:
        ranges = plan(src, conn, rows)
        chunks = read_chunks(src, conn, ranges)

    keys = [r[:width] for chunk in chunks for r in chunk]
    assert keys == expected_keys, "every row once, in key order"
    *closed, last = chunks
    assert all(len(c) == rows for c in closed), [len(c) for c in chunks]
    assert len(last) < rows
    assert ranges[-1][1] is None, "the last range is open"
    for (_, upper), chunk in zip(ranges[:-1], closed, strict=True):
        assert upper == chunk[-1][:width], "a boundary is the last key of its range"
    assert len(ranges) == len(expected_keys) // rows + 1


# --- tables --------------------------------------------------------------------------------

ITEMS_DDL = "CREATE TABLE items (id INTEGER PRIMARY KEY, v TEXT)"
ITEMS_INSERT = "INSERT INTO items (id, v) VALUES (:id, :v)"

PAIRS_DDL = "CREATE TABLE pairs (a INTEGER NOT NULL, b TEXT NOT NULL, v REAL, PRIMARY KEY (a, b))"
PAIRS_INSERT = "INSERT INTO pairs (a, b, v) VALUES (:a, :b, :v)"

CUSTOMER_DDL = (
    'CREATE TABLE "Customer" ("CustomerId" TEXT PRIMARY KEY NOT NULL, "Email" TEXT, '
    '"SupportRepId" INTEGER)'
)
CUSTOMER_INSERT = (
    'INSERT INTO "Customer" ("CustomerId", "Email", "SupportRepId") VALUES (:cid, :email, :rep)'
)


def item_ids(count: int, seed: int = 7) -> list[int]:
    """Distinct, gappy ids in a shuffled insertion order."""
    return random.Random(seed).sample(range(-500, 10_000), count)


def make_items(engine: Engine, ids: list[int]) -> list[Key]:
    create(engine, ITEMS_DDL, ITEMS_INSERT, [{"id": i, "v": f"v{i}"} for i in ids])
    return sorted((i,) for i in ids)


def make_pairs(engine: Engine) -> list[Key]:
    rng = random.Random(11)
    keys = {
        (a, "".join(rng.choices("abcXYZ09", k=rng.randint(1, 4))))
        for a in range(1, 7)
        for _ in range(9)
    }
    shuffled = list(keys)
    rng.shuffle(shuffled)
    create(engine, PAIRS_DDL, PAIRS_INSERT, [{"a": a, "b": b, "v": a / 3} for a, b in shuffled])
    return sorted(keys)


CUSTOMER_IDS = [
    "alice",
    "Bob",
    "CAROL",
    "dave",
    "Émile",
    "eve",
    "Zed",
    "zoë",
    "_x",
    "0042",
    "42",
    "a",
    "A",
    "aa",
    "aA",
    "Aa",
    "b",
]


def rep_of(cid: str) -> int | None:
    """Support rep of a customer: 3 for about half of them, None for some."""
    return None if len(cid) == 2 else 3 if sum(map(ord, cid)) % 2 else 4


def make_customers(engine: Engine) -> list[Key]:
    rows = [{"cid": c, "email": f"{c}@EXAMPLE.com", "rep": rep_of(c)} for c in CUSTOMER_IDS]
    create(engine, CUSTOMER_DDL, CUSTOMER_INSERT, rows)
    return sorted((c,) for c in CUSTOMER_IDS)


# --- full coverage, in key order -----------------------------------------------------------


@pytest.mark.parametrize("rows", [1, 2, 7, 10, 49, 50, 51, 1000])
def test_single_int_key_is_covered_once_in_order(engine: Engine, rows: int) -> None:
    expected = make_items(engine, item_ids(50))

    assert_partition(source(engine, "items", ["id"]), engine, rows, expected)


@pytest.mark.parametrize("rows", [1, 4, 9, 13])
def test_composite_key_is_covered_once_in_order(engine: Engine, rows: int) -> None:
    expected = make_pairs(engine)

    assert_partition(source(engine, "pairs", ["a", "b"]), engine, rows, expected)


@pytest.mark.parametrize("rows", [1, 3, 5])
def test_text_key_with_mixed_case_names_is_covered_once_in_order(engine: Engine, rows: int) -> None:
    expected = make_customers(engine)

    src = source(engine, "Customer", ["CustomerId"])

    assert src.columns[0] == "CustomerId"
    assert_partition(src, engine, rows, expected)


def test_composite_key_order_follows_the_key_list(engine: Engine) -> None:
    # Given the (a, b) table keyed as (b, a) instead
    keys = make_pairs(engine)

    # When it is planned and read
    src = source(engine, "pairs", ["b", "a"])

    # Then rows come in (b, a) order
    assert_partition(src, engine, 5, sorted((b, a) for a, b in keys))


@pytest.mark.parametrize("rows", [1, 2, 4])
def test_where_filter_limits_planning_and_reading(engine: Engine, rows: int) -> None:
    # Given customers of several support reps
    make_customers(engine)
    expected = sorted((c,) for c in CUSTOMER_IDS if rep_of(c) == 3)
    assert 0 < len(expected) < len(CUSTOMER_IDS)

    # When the stream only takes rep 3's customers
    rep_3 = Filter(column="SupportRepId", op="=", value=3)
    src = source(engine, "Customer", ["CustomerId"], [rep_3])

    # Then ranges are counted in filtered rows, and only those are read
    assert_partition(src, engine, rows, expected)


@pytest.mark.parametrize(
    ("flt", "keep"),
    [
        (Filter(column="SupportRepId", op="=", value=3), lambda r: r == 3),
        (Filter(column="SupportRepId", op="!=", value=3), lambda r: r is not None and r != 3),
        (Filter(column="SupportRepId", op="<", value=4), lambda r: r is not None and r < 4),
        (Filter(column="SupportRepId", op="<=", value=3), lambda r: r is not None and r <= 3),
        (Filter(column="SupportRepId", op=">", value=3), lambda r: r is not None and r > 3),
        (Filter(column="SupportRepId", op=">=", value=4), lambda r: r is not None and r >= 4),
        (Filter(column="SupportRepId", op="in", value=[4, 9]), lambda r: r in (4, 9)),
        (Filter(column="SupportRepId", op="in", value=[]), lambda r: False),
        (Filter(column="SupportRepId", op="is_null"), lambda r: r is None),
        (Filter(column="SupportRepId", op="is_null", value=True), lambda r: r is None),
        (Filter(column="SupportRepId", op="is_null", value=False), lambda r: r is not None),
    ],
    ids=lambda v: f"{v.op}-{v.value!r}" if isinstance(v, Filter) else "",
)
def test_each_filter_op(engine: Engine, flt: Filter, keep: Callable[[int | None], bool]) -> None:
    make_customers(engine)
    expected = sorted((c,) for c in CUSTOMER_IDS if keep(rep_of(c)))

    assert_partition(source(engine, "Customer", ["CustomerId"], [flt]), engine, 2, expected)


def test_several_filters_all_apply(engine: Engine) -> None:
    make_customers(engine)
    flts = [
        Filter(column="SupportRepId", op="=", value=3),
        Filter(column="CustomerId", op=">=", value="a"),
    ]
    expected = sorted((c,) for c in CUSTOMER_IDS if rep_of(c) == 3 and c >= "a")

    assert_partition(source(engine, "Customer", ["CustomerId"], flts), engine, 2, expected)


# --- edge cases ----------------------------------------------------------------------------


def test_empty_table_has_one_open_range_and_no_rows(engine: Engine) -> None:
    make_items(engine, [])
    src = source(engine, "items", ["id"])

    with engine.connect() as conn:
        assert src.next_boundary(conn, None, 10) is None
        assert plan(src, conn, 10) == [(None, None)]
        assert src.read_range(conn, None, None) == []


def test_filter_that_matches_nothing_plans_one_open_range(engine: Engine) -> None:
    make_customers(engine)
    nobody = Filter(column="SupportRepId", op="=", value=99)
    src = source(engine, "Customer", ["CustomerId"], [nobody])

    with engine.connect() as conn:
        assert plan(src, conn, 1) == [(None, None)]


def test_exactly_n_rows_leave_an_empty_open_range(engine: Engine) -> None:
    make_items(engine, [10, 20, 30])
    src = source(engine, "items", ["id"])

    with engine.connect() as conn:
        ranges = plan(src, conn, 3)
        chunks = read_chunks(src, conn, ranges)

    assert ranges == [(None, (30,)), ((30,), None)]
    assert [[r[0] for r in c] for c in chunks] == [[10, 20, 30], []]


def test_one_row_per_range(engine: Engine) -> None:
    make_items(engine, [5, 1, 3])
    src = source(engine, "items", ["id"])

    with engine.connect() as conn:
        ranges = plan(src, conn, 1)

    assert ranges == [(None, (1,)), ((1,), (3,)), ((3,), (5,)), ((5,), None)]


def test_boundary_after_a_key_that_no_longer_exists(engine: Engine) -> None:
    make_items(engine, [1, 2, 4, 8, 16])
    src = source(engine, "items", ["id"])

    with engine.connect() as conn:
        assert src.next_boundary(conn, (3,), 2) == (8,)
        assert src.next_boundary(conn, (16,), 1) is None
        assert src.next_boundary(conn, (-1,), 5) == (16,)
        assert src.next_boundary(conn, (-1,), 6) is None


def test_rows_added_after_planning_fall_in_the_last_open_range(engine: Engine) -> None:
    # Given a table planned into ranges of 4 rows
    ids = item_ids(10)
    make_items(engine, ids)
    src = source(engine, "items", ["id"])
    with engine.connect() as conn:
        ranges = plan(src, conn, 4)
    top = max(ids)

    # When rows with higher keys arrive after planning
    add_rows(engine, ITEMS_INSERT, [{"id": top + d, "v": "late"} for d in (1, 50, 10**6)])

    # Then the closed ranges are unchanged and the open one holds every new row
    with engine.connect() as conn:
        chunks = read_chunks(src, conn, ranges)
    assert [len(c) for c in chunks[:-1]] == [4, 4]
    assert [r[0] for r in chunks[-1]] == [*sorted(ids)[8:], top + 1, top + 50, top + 10**6]


def test_planning_resumes_from_a_recorded_boundary(engine: Engine) -> None:
    # Given the first two ranges were planned, then planning stopped
    expected = make_items(engine, item_ids(23))
    src = source(engine, "items", ["id"])
    with engine.connect() as conn:
        first = plan(src, conn, 5)[:2]

        # When planning resumes after the last recorded upper bound
        rest = plan(src, conn, 5, lower=first[-1][1])

        chunks = read_chunks(src, conn, first + rest)

    # Then together the ranges still cover every row once
    assert [r[:1] for c in chunks for r in c] == expected


def test_composite_boundary_compares_as_a_row_value(engine: Engine) -> None:
    create(
        engine,
        PAIRS_DDL,
        PAIRS_INSERT,
        [{"a": a, "b": b, "v": 0} for a, b in [(1, "z"), (2, "a"), (2, "m"), (3, "a")]],
    )
    src = source(engine, "pairs", ["a", "b"])

    with engine.connect() as conn:
        assert src.next_boundary(conn, (1, "z"), 1) == (2, "a")
        assert src.next_boundary(conn, (2, "b"), 2) == (3, "a")
        assert [r[:2] for r in src.read_range(conn, (1, "zz"), (2, "m"))] == [(2, "a"), (2, "m")]


# --- range_condition -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lower", "upper", "expected"),
    [
        (None, None, [1, 2, 3, 4, 5]),
        ((2,), None, [3, 4, 5]),
        (None, (2,), [1, 2]),
        ((2,), (4,), [3, 4]),
        ((3,), (3,), []),
        ((4,), (2,), []),
    ],
    ids=["open", "lower-only", "upper-only", "both", "equal", "inverted"],
)
def test_range_condition_is_lower_exclusive_upper_inclusive(
    engine: Engine, lower: Key | None, upper: Key | None, expected: list[int]
) -> None:
    make_items(engine, [1, 2, 3, 4, 5])
    table = reflect_table(engine, "items")
    cond = range_condition([table.c.id], lower, upper)

    with engine.connect() as conn:
        got = conn.scalars(select(table.c.id).where(cond).order_by(table.c.id)).all()

    assert got == expected


def test_range_condition_without_bounds_only_leaves_out_null_keys(engine: Engine) -> None:
    make_items(engine, [1])
    table = reflect_table(engine, "items")

    sql = str(range_condition([table.c.id], None, None).compile(engine))

    assert "<" not in sql and ">" not in sql
    assert sql == "items.id IS NOT NULL"  # those rows are in the NULL_KEYS chunk, or refused


def test_read_range_without_bounds_reads_every_row(engine: Engine) -> None:
    expected = make_pairs(engine)
    src = source(engine, "pairs", ["a", "b"])

    with engine.connect() as conn:
        rows = src.read_range(conn, None, None)
        count = conn.scalar(select(func.count()).select_from(src.table))

    assert [r[:2] for r in rows] == expected
    assert len(rows) == count


def test_read_range_returns_tuples_in_columns_order(engine: Engine) -> None:
    make_customers(engine)
    table = reflect_table(engine, "Customer")
    src = RangeQuery(table, ["CustomerId"], ["CustomerId", "SupportRepId", "Email"], [])

    with engine.connect() as conn:
        first = src.read_range(conn, None, ("0042",))

    assert first == [("0042", rep_of("0042"), "0042@EXAMPLE.com")]
    assert type(first[0]) is tuple


@pytest.mark.parametrize(
    ("name", "parts"),
    [
        ("Customer", (None, "Customer")),
        ("main.Customer", ("main", "Customer")),
        ("s.t.u", ("s", "t.u")),
    ],
)
def test_split_name(name: str, parts: tuple[str | None, str]) -> None:
    assert split_name(name) == parts
