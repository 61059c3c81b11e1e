"""The source contract (:class:`etl_tasks.connectors.base.Source`), for every connector.

Key order is the source's own (its collation): each test asks the case for it
without the connector (:meth:`SourceCase.key_order`) and checks the connector's
ranges and reads against it, never against Python's ordering. A positional
source (files: a row's key is its file and record number) returns each row with
its position first and its values as text (:meth:`SourceCase.as_read`); the
tests judge it by the same rules, on positions.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from typing import Any

import pytest

from etl_tasks.codec import NULL_KEYS, decode_key, encode_key
from etl_tasks.connectors.base import Key, Range, Source, Unpaced
from etl_tasks.connectors.files.source import POSITION
from etl_tasks.errors import PermanentError, TransientError
from etl_tasks.values.types import Kind
from tests.contract.connectors import SOURCES, Col, Expiring, Row, SourceCase, TableDef

ITEMS = TableDef("items", [Col("id", "int", False), Col("name", "text"), Col("qty", "int")], ["id"])
WORDS = TableDef("words", [Col("word", "text", False), Col("n", "int")], ["word"])
PAIRS = TableDef(
    "pairs",
    [Col("grp", "int", False), Col("code", "text", False), Col("n", "int")],
    ["grp", "code"],
)


KINDS = SOURCES


def width(case: SourceCase, table: TableDef) -> int:
    """How many leading values of a row are its key."""
    return len(POSITION) if case.positional else len(table.key)


def columns(case: SourceCase, table: TableDef) -> list[str]:
    return [*POSITION, *table.names] if case.positional else table.names


def items(n: int) -> list[Row]:
    """Keys 3, 6, 9 … so that a bound between two keys is easy to name."""
    return [(3 * i, f"item {i}" if i % 5 else None, i % 7) for i in range(1, n + 1)]


def rows_for(case: SourceCase, table: TableDef) -> list[Row]:
    if table is ITEMS:
        return items(23)
    if table is WORDS:
        return [(w, i) for i, w in enumerate(case.text_keys)]
    return [(g, c, g * 100 + i) for g in (2, 1, 3) for i, c in enumerate(case.text_keys[:6])]


def plan(source: Source, rows: int, count: int = 2, after: Key | None = None) -> list[Range]:
    """Every range of the stream, asking ``count`` at a time as the planner does."""
    ranges: list[Range] = []
    while True:
        more, complete = source.boundaries(after, rows, count)
        assert more and len(more) <= count
        ranges += more
        if complete:
            return ranges
        after = more[-1][1]


def keys_of(rows: Sequence[Row], width: int) -> list[Key]:
    return [tuple(r[:width]) for r in rows]


def test_describe_and_estimate_rows(case: SourceCase) -> None:
    source = case.source(PAIRS, rows_for(case, PAIRS))

    shape = source.describe()
    rows = len(rows_for(case, PAIRS))

    assert shape.columns == columns(case, PAIRS)
    assert set(shape.types) == set(shape.columns)
    assert shape.types["code"].kind is Kind.TEXT
    if case.positional:
        # keyed by position; every value arrives as text, for the transforms to convert
        assert shape.key == POSITION
        assert shape.types["_record"].kind is Kind.INTEGER
        assert shape.types["grp"].kind is Kind.TEXT
        # estimated from the files' size, not counted
        estimate = source.estimate_rows()
        assert estimate is not None and rows <= estimate <= rows * 1.25
        return
    assert shape.key == ["grp", "code"]
    assert shape.types["grp"].kind is Kind.INTEGER
    # a table far below any catalog statistics' threshold is counted
    assert source.estimate_rows() == rows


@pytest.mark.parametrize("table", [ITEMS, WORDS, PAIRS], ids=["int", "text", "composite"])
def test_boundaries_cover_every_row_once_in_key_order(case: SourceCase, table: TableDef) -> None:
    # Given a table whose text keys differ only by case, accents or spaces where the
    # source's collation keeps them apart
    rows = rows_for(case, table)
    source = case.source(table, rows)
    order = case.key_order(table)

    for per_range in (1, 4, 7):
        # When the whole stream is planned a few ranges at a time and each range is read
        ranges = plan(source, per_range)
        parts = [source.read_range(lower, upper, Unpaced()) for lower, upper in ranges]

        # Then the ranges follow each other, the last is open-ended (a positional source's
        # ends at its last record: a file that changes after planning fails the read) ...
        last = ranges[-1][1]
        assert ranges[0][0] is None, per_range
        if case.positional:
            assert last is not None and tuple(last[:2]) == order[-1], per_range
        else:
            assert last is None, per_range
        assert all(a[1] == b[0] for a, b in pairwise(ranges)), per_range
        assert all(upper is not None for _, upper in ranges[:-1]), per_range
        # ... none is cut, every one but the last holds rows, about as many as asked ...
        assert all(cut is None for _, cut in parts), per_range
        assert all(1 <= len(batch) <= 2 * per_range for batch, _ in parts[:-1]), per_range
        # ... and together they hold every row once, in the source's own key order
        read = [row for batch, _ in parts for row in batch.rows]
        assert keys_of(read, width(case, table)) == order, per_range
        assert sorted(read, key=repr) == sorted(case.as_read(table, rows), key=repr), per_range


def test_boundaries_after_a_key_plan_only_what_follows_it(case: SourceCase) -> None:
    source = case.source(WORDS, rows_for(case, WORDS))
    order = case.key_order(WORDS)

    for after in (order[4], list(order[4])):  # as read, and as stored in JSON
        ranges = plan(source, 3, after=after)  # type: ignore[arg-type]
        read = [r for lo, up in ranges for r in source.read_range(lo, up, Unpaced())[0]]

        assert tuple(ranges[0][0] or ()) == order[4]
        assert keys_of(read, width(case, WORDS)) == order[5:]


def test_boundaries_stop_at_count_and_an_empty_stream_is_one_open_range(case: SourceCase) -> None:
    source = case.source(ITEMS, items(23))
    empty = case.source(WORDS, [])

    ranges, complete = source.boundaries(None, 3, 2)
    if case.positional:  # a bound is the position, then what lets a read start there
        order = case.key_order(ITEMS)
        assert [r[1][:2] for r in ranges] == [order[2], order[5]] and not complete
        assert ranges[0][0] is None and ranges[1][0] == ranges[0][1]
    else:
        assert (ranges, complete) == ([(None, (9,)), ((9,), (18,))], False)
    assert empty.boundaries(None, 3, 2) == ([(None, None)], True)


#: (lower, upper) and the ids of ``items(23)`` that range holds
RANGES: list[tuple[Key | None, Key | None, list[int]]] = [
    ((6,), (15,), [9, 12, 15]),  # lower excluded, upper included
    (None, (6,), [3, 6]),
    ((7,), (11,), [9]),  # bounds need not be keys
    ((66,), None, [69]),
    ((69,), None, []),
]


def test_read_range_is_lower_exclusive_upper_inclusive(case: SourceCase) -> None:
    source = case.source(ITEMS, items(23))
    read = case.as_read(ITEMS, items(23))
    name = case.key_order(ITEMS)[0][0]

    def bound(key: Key | None) -> Key | None:
        # by position: id 3i is record i, so the bound after id k is record k // 3
        return (name, key[0] // 3) if case.positional and key is not None else key

    for lower, upper, ids in RANGES:
        batch, cut = source.read_range(bound(lower), bound(upper), Unpaced())

        assert cut is None
        assert batch.columns == columns(case, ITEMS)
        assert batch.rows == [r for r, o in zip(read, items(23), strict=True) if o[0] in ids], (
            lower,
            upper,
        )

    # a range within one sub-batch is read whole even past its deadline: no cut
    batch, cut = source.read_range(None, None, Expiring(after=0))
    assert cut is None and batch.rows == read


def test_read_range_takes_bounds_back_from_the_state_db(case: SourceCase) -> None:
    # Bounds are stored as JSON and come back as lists: the same range is read
    source = case.source(PAIRS, rows_for(case, PAIRS))
    (first, _), (_, upper) = plan(source, 5)[:2]
    stored = decode_key(encode_key(upper))
    assert stored is not None

    as_read, _ = source.read_range(first, upper, Unpaced())
    as_stored, _ = source.read_range(first, list(stored), Unpaced())  # type: ignore[arg-type]

    assert as_read.rows == as_stored.rows and len(as_read) == 10


def test_read_range_cuts_at_the_deadline_and_resumes_without_loss_or_repeat(
    case: SourceCase,
) -> None:
    # Given a stream longer than several sub-batches
    rows = items(2100)
    source = case.source(ITEMS, rows)

    # When every read finds its deadline passed after its first sub-batch
    read: list[Row] = []
    lower: Key | None = None
    cuts: list[Key] = []
    while True:
        batch, cut = source.read_range(lower, None, Expiring(after=0))
        assert len(batch) > 0
        read += batch.rows
        if cut is None:
            break
        # Then the cut is the last key read, and the rest is read from it
        w = width(case, ITEMS)
        assert tuple(cut[:w]) == tuple(batch.rows[-1][:w])
        cuts.append(cut)
        lower = cut

    assert len(cuts) >= 2
    assert read == case.as_read(ITEMS, rows)


def test_read_range_looks_at_the_pace_between_sub_batches(case: SourceCase) -> None:
    rows = items(2100)
    source = case.source(ITEMS, rows)
    pace = Expiring(after=1)  # the second look says stop

    batch, cut = source.read_range(None, None, pace)

    assert pace.ticks == 1  # renewed once, between the first two sub-batches
    assert cut is not None and 0 < len(batch) < len(rows)
    assert batch.rows == case.as_read(ITEMS, rows)[: len(batch)]


EVENTS = TableDef("events", [Col("k", "int", False), Col("seq", "int", False)], ["k"], unique=False)


def test_a_cut_never_separates_rows_that_share_a_key(case: SourceCase) -> None:
    # Given a key that repeats (a source read with write: insert), a run of equal keys
    # straddling the first sub-batch's end
    rows = [(i // 7, i) for i in range(2100)]
    source = case.source(EVENTS, rows)

    first, cut = source.read_range(None, None, Expiring(after=0))

    if case.positional:
        # A position never repeats: the cut may fall anywhere, and nothing is lost or repeated
        assert cut is not None
        rest, _ = source.read_range(cut, None, Unpaced())
        assert first.rows + rest.rows == case.as_read(EVENTS, rows)
        return
    if not case.equal_keys:
        # A source that keeps one row per key (memory) holds, and reads, one row per key
        assert cut is None and len(first) == 2100 // 7
        return
    rest, _ = source.read_range(cut, None, Unpaced())
    # Then the cut falls after the whole run, and nothing is lost or read twice
    assert cut is not None
    assert sorted(r for r in first.rows if r[0] == cut[0]) == [r for r in rows if r[0] == cut[0]]
    assert all(r[0] > cut[0] for r in rest.rows)
    assert sorted(first.rows + rest.rows) == rows


NULLABLE = TableDef(
    "loose", [Col("k", "int"), Col("v", "text")], ["k"], unique=False, key_nullable=True
)


def test_rows_whose_key_is_null_are_in_no_range_but_in_the_null_keys_chunk(
    case: SourceCase,
) -> None:
    rows: list[Row] = [(1, "a"), (None, "b"), (2, "c"), (None, "d"), (3, "e")]
    source = case.source(NULLABLE, rows)

    planned = [r for lo, up in plan(source, 2) for r in source.read_range(lo, up, Unpaced())[0]]
    if case.positional:  # a position is never NULL: every row is in a planned range
        assert planned == case.as_read(NULLABLE, rows)
        return
    nulls, cut = source.read_range((NULL_KEYS,), (NULL_KEYS,), Unpaced())

    assert planned == [(1, "a"), (2, "c"), (3, "e")]
    assert cut is None and sorted(nulls.rows, key=repr) == [(None, "b"), (None, "d")]


def test_read_keys_reads_those_keys_in_key_order_and_skips_absent_ones(case: SourceCase) -> None:
    pairs = rows_for(case, PAIRS)
    source = case.source(PAIRS, pairs)
    order = case.key_order(PAIRS)
    absent = ("absent.csv", 9) if case.positional else (9, "absent")
    wanted: list[Any] = [order[7], order[2], absent, order[11]]
    wanted.append(list(order[0]))  # as a key comes back from JSON

    batch = source.read_keys(wanted)

    assert batch.columns == columns(case, PAIRS)
    assert keys_of(batch.rows, 2) == [order[0], order[2], order[7], order[11]]
    assert set(batch.rows) <= set(case.as_read(PAIRS, pairs))

    # text keys the source's collation keeps apart are read apart
    words = rows_for(case, WORDS)
    texts = case.source(WORDS, words)
    for (word, _), key, row in zip(
        words, case.key_order(WORDS), case.as_read(WORDS, words), strict=True
    ):
        assert texts.read_keys([key if case.positional else (word,)]).rows == [row]


def test_a_missing_table_is_a_permanent_error(case: SourceCase) -> None:
    source = case.source(ITEMS, items(5))
    source.read_range(None, None, Unpaced())  # a source that has read once
    case.drop(ITEMS)

    with pytest.raises(PermanentError):
        source.read_range(None, None, Unpaced())
    with pytest.raises(PermanentError):
        source.boundaries(None, 2, 2)
    with pytest.raises(PermanentError):
        source.read_keys([case.key_order(ITEMS)[0] if case.positional else (3,)])


def test_a_source_that_does_not_answer_is_a_transient_error(case: SourceCase) -> None:
    source = case.unreachable_source(ITEMS)

    with pytest.raises(TransientError):
        source.read_range(None, None, Unpaced())
    with pytest.raises(TransientError):
        source.boundaries(None, 2, 2)
    with pytest.raises(TransientError):
        source.estimate_rows()


TAGS = TableDef(
    "tags", [Col("tag", "text", False), Col("seq", "int", False)], ["tag"], unique=False
)


def test_a_cut_keeps_together_keys_the_collation_finds_equal(case: SourceCase) -> None:
    # Given a repeating text key whose spellings differ by case, accent or trailing
    # space (one key to a case- and accent-insensitive collation), straddling the end of
    # the first sub-batch
    spellings = ["m", "M", "m ", "M ", "m", "M"]
    rows = [(f"a{i:04d}", i) for i in range(997)]
    rows += [(spellings[i % 6], 997 + i) for i in range(12)]
    rows += [(f"z{i:04d}", 1009 + i) for i in range(20)]
    source = case.source(TAGS, rows)

    first, cut = source.read_range(None, None, Expiring(after=0))
    assert cut is not None
    read = first.rows + source.read_range(cut, None, Unpaced())[0].rows

    if case.positional:  # keyed by position: the spellings are values, each row read once
        assert read == case.as_read(TAGS, rows)
        return
    if not case.equal_keys:
        # A source that keeps one row per key (memory) holds, and reads, one per spelling
        assert sorted(r[0] for r in read) == sorted({r[0] for r in rows})
        return
    # Then resuming after the cut neither loses nor repeats a row
    assert sorted(read, key=lambda r: r[1]) == rows


LOOSE_PAIRS = TableDef(
    "loose_pairs",
    [Col("a", "int"), Col("b", "int"), Col("v", "int")],
    ["a", "b"],
    unique=False,
    key_nullable=True,
)


def test_the_null_keys_chunk_is_never_cut(case: SourceCase) -> None:
    # Given more rows with a NULL in their composite key than a sub-batch holds: they
    # have no order, so no key to cut them at and resume from
    rows: list[Row] = [(None, i, i) if i % 2 else (i, None, i) for i in range(1500)]
    rows.append((1, 1, -1))
    source = case.source(LOOSE_PAIRS, rows)

    if case.positional:  # no position is NULL: no such chunk, and the stream reads whole
        ranges = plan(source, 2000)
        read = [r for lo, up in ranges for r in source.read_range(lo, up, Unpaced())[0]]
        assert read == case.as_read(LOOSE_PAIRS, rows)
        return
    # When the chunk is read past its deadline
    batch, cut = source.read_range((NULL_KEYS,), (NULL_KEYS,), Expiring(after=0))

    # Then it is read whole
    assert cut is None
    assert sorted(r[2] for r in batch.rows) == list(range(1500))
