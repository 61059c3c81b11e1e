"""The target contract (:class:`etl_tasks.connectors.base.Target`), for every connector.

What a target holds is judged by reading it without the connector
(:meth:`TargetCase.stored`); refused rows go through the load step's own bisection
(:func:`etl_tasks.steps.load.write_bisecting`), as a load would send them. A
target without transactions (an HTTP API: ``transactional`` False) keeps each
write it confirmed, its ledger in the state DB skipping them when the chunk is
loaded again; the tests hold it to that instead.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence

import pytest

from etl_tasks.budget import SUB_BATCH_ROWS
from etl_tasks.connectors.base import (
    Batch,
    ChunkRef,
    LedgerRecord,
    QuarantineEntry,
    Target,
    Unpaced,
)
from etl_tasks.errors import BadRowError, PermanentError, TransientError
from etl_tasks.steps.load import Job, write_bisecting, write_chunk
from etl_tasks.values.types import Kind
from tests.contract.connectors import MIGRATION, MODES, Col, Row, TableDef, TargetCase, WriteMode

ACCOUNTS = TableDef(
    "accounts",
    [Col("id", "int", False), Col("name", "text"), Col("code", "text", nullable=False)],
    ["id"],
)
NOTES = TableDef("notes", [Col("id", "int", False), Col("a", "text"), Col("b", "text")], ["id"])
PAIRS = TableDef(
    "pairs",
    [Col("grp", "int", False), Col("code", "text", False), Col("n", "int")],
    ["grp", "code"],
)
COLUMNS = ACCOUNTS.names


def accounts(variant: str) -> TableDef:
    """A table of ACCOUNTS' shape for one variant of a test (a write mode, an outcome):
    the variants share the test's database, a table and a ledger stream each."""
    return TableDef(f"accounts_{variant}", ACCOUNTS.columns, ACCOUNTS.key)


EXISTING: list[Row] = [(1, "one", "a"), (2, "two", "b")]


def chunk(chunk_id: int = 1, token: int = 1, stream: str = "accounts") -> ChunkRef:
    # the whole key range: on PostgreSQL an empty table is written by COPY straight into it
    return ChunkRef(MIGRATION, stream, chunk_id, token, (None, None))


def batch(rows: Sequence[Row], columns: list[str] = COLUMNS) -> Batch:
    """Rows as the load step sends them: each with its source key and extract position."""
    return Batch(columns, list(rows), [[r[0]] for r in rows], list(range(len(rows))))


def record(rows_loaded: int, token: int = 1) -> LedgerRecord:
    return LedgerRecord(token, rows_loaded, [])


def load(target: Target, ref: ChunkRef, rows: Sequence[Row], rec: LedgerRecord) -> None:
    with target.begin_chunk(ref) as tx:
        assert tx.committed is None
        assert tx.write(batch(rows)) == []
        tx.commit(rec)


def test_key_and_columns_describe_the_table(case: TargetCase) -> None:
    target = case.target(ACCOUNTS, "upsert")

    assert target.key == ["id"]
    columns = target.columns()
    assert set(columns) == set(COLUMNS)
    assert columns["id"].kind is Kind.INTEGER and columns["name"].kind is Kind.TEXT


def test_prepare_again_changes_nothing(case: TargetCase) -> None:
    # Given a target that has committed a chunk
    target = case.target(ACCOUNTS, "upsert")
    rec = record(2)
    load(target, chunk(), EXISTING, rec)

    # When it is prepared again, twice (two workers start the stream)
    target.prepare()
    target.prepare()

    # Then its rows and its ledger are as they were, and it takes the next chunk
    assert case.stored(ACCOUNTS) == EXISTING
    assert target.ledger_lookup(chunk()) == rec
    load(target, chunk(2), [(3, "three", "c")], record(1))
    assert case.stored(ACCOUNTS) == [*EXISTING, (3, "three", "c")]


def test_rows_and_ledger_record_commit_together(case: TargetCase) -> None:
    target = case.target(ACCOUNTS, "upsert")
    rows: list[Row] = [(1, "one", "a"), (2, None, "b"), (3, "Zürich  ", "c")]
    rec = LedgerRecord(
        fencing_token=7,
        rows_loaded=3,
        quarantine=[QuarantineEntry("[4]", "value too long", {"id": 4, "name": "x" * 300})],
        cut=[3],
        deferred=[QuarantineEntry("[5]", "no parent", {"id": 5, "name": None})],
    )
    ref = chunk(token=7)
    assert target.ledger_lookup(ref) is None

    load(target, ref, rows, rec)

    assert case.stored(ACCOUNTS) == rows
    assert target.ledger_lookup(ref) == rec
    # the record is the chunk's alone: not another chunk's, nor another stream's
    assert target.ledger_lookup(chunk(2, token=7)) is None
    assert target.ledger_lookup(chunk(token=7, stream="other")) is None


class Boom(Exception):
    pass


def test_a_chunk_left_without_commit_leaves_neither_rows_nor_record(case: TargetCase) -> None:
    for how in ("exception", "no_commit"):
        # Given a target holding rows
        table = accounts(how)
        target = case.target(table, "upsert", EXISTING)
        ref = chunk(stream=table.name)

        # When a load writes (new rows, and over an existing one) but never commits
        with pytest.raises(Boom) if how == "exception" else contextlib.nullcontext():
            with target.begin_chunk(ref) as tx:
                tx.write(batch([(2, "TWO", "B"), (3, "three", "c")]))
                if how == "exception":
                    raise Boom()

        # Then nothing of it stays (without transactions: what the target confirmed stays,
        # and no ledger record), and the chunk can be loaded again
        written = [(1, "one", "a"), (2, "TWO", "B"), (3, "three", "c")]
        assert case.stored(table) == (EXISTING if case.transactional else written), how
        assert target.ledger_lookup(ref) is None, how
        again = chunk(token=2, stream=table.name)
        load(target, again, [(3, "three", "c")], record(1, token=2))
        assert case.stored(table) == (
            [*EXISTING, (3, "three", "c")] if case.transactional else written
        ), how
        assert target.ledger_lookup(again) == record(1, token=2), how


def test_rows_of_a_chunk_in_flight_are_not_read_back(case: TargetCase) -> None:
    target = case.target(ACCOUNTS, "upsert", EXISTING)

    with target.begin_chunk(chunk()) as tx:
        tx.write(batch([(2, "TWO", "B"), (3, "three", "c")]))
        if case.readable:
            seen = [r for b in target.read_back(None, None) for r in b.rows]
            assert seen == EXISTING
        else:  # an API is never read back: verify compares SQL targets only
            with pytest.raises(PermanentError):
                list(target.read_back(None, None))
        tx.commit(record(2))

    assert case.stored(ACCOUNTS) == [(1, "one", "a"), (2, "TWO", "B"), (3, "three", "c")]


def test_a_second_delivery_of_a_committed_chunk_writes_nothing(case: TargetCase) -> None:
    # Given a chunk that committed
    target = case.target(ACCOUNTS, "upsert")
    rec = record(2)
    load(target, chunk(), EXISTING, rec)

    # When it is delivered again (another worker, a newer fencing token)
    with target.begin_chunk(chunk(token=2)) as tx:
        # Then the delivery finds the first one's record, and may write nothing
        assert tx.committed == rec
        with pytest.raises(RuntimeError):
            tx.write(batch([(1, "ONE", "A"), (9, "nine", "z")]))
        with pytest.raises(RuntimeError):
            tx.commit(record(2, token=2))

    assert case.stored(ACCOUNTS) == EXISTING
    assert target.ledger_lookup(chunk(token=2)) == rec


def _lookup(target: Target, ref: ChunkRef, found: list[LedgerRecord | None]) -> None:
    found.append(target.ledger_lookup(ref))


def _second_load(target: Target, table: TableDef, seen: list[LedgerRecord | None]) -> None:
    """Another delivery of chunk 1: it reports the record it finds, or loads key 1 itself."""
    with target.begin_chunk(chunk(token=2, stream=table.name)) as tx:
        seen.append(tx.committed)
        if tx.committed is None:
            tx.write(batch([(1, "uno", "u")]))
            tx.commit(record(1, token=2))


def test_ledger_lookup_waits_for_a_load_in_flight(case: TargetCase) -> None:
    for outcome in ("commit", "rollback"):
        # Given a load of the chunk that has written but not finished
        table = accounts(outcome)
        target = case.target(table, "upsert")
        ref = chunk(stream=table.name)
        found: list[LedgerRecord | None] = []
        with target.begin_chunk(ref) as tx:
            tx.write(batch(EXISTING))

            # When the ledger is asked about the chunk meanwhile
            asking = threading.Thread(target=_lookup, args=(target, ref, found))
            asking.start()
            asking.join(0.3)

            # Then the answer waits for the load's outcome (without a transaction to wait
            # for, it says at once that no record is there yet)
            if case.transactional:
                assert asking.is_alive() and not found, outcome
            else:
                asking.join(20)
                assert found == [None], outcome
                found.clear()
            if outcome == "commit":
                tx.commit(record(2))
        asking.join(20)
        if not case.transactional:
            _lookup(target, ref, found)

        assert found == ([record(2)] if outcome == "commit" else [None]), outcome


def test_a_second_load_of_a_chunk_in_flight_waits_for_the_first(case: TargetCase) -> None:
    for outcome in ("commit", "rollback"):
        # Given a load of the chunk that has written but not finished
        table = accounts(outcome)
        target = case.target(table, "upsert")
        seen: list[LedgerRecord | None] = []

        with target.begin_chunk(chunk(stream=table.name)) as tx:
            tx.write(batch(EXISTING))
            # When another delivery of the same chunk begins meanwhile
            other = threading.Thread(target=_second_load, args=(target, table, seen))
            other.start()
            other.join(0.3)
            # Then it waits, and finds what the first one did
            if case.transactional:
                assert other.is_alive() and not seen, outcome
            else:  # nothing to wait for: it sends what no confirmed request holds
                other.join(20)
                assert seen == [None], outcome
            if outcome == "commit":
                tx.commit(record(2))
        other.join(20)

        if not case.transactional:
            # Both loads' rows stay; the first record written stays (in a migration only the
            # load holding the chunk's lease commits: the fencing token decides)
            assert case.stored(table) == [(1, "uno", "u"), (2, "two", "b")], outcome
            assert target.ledger_lookup(chunk(stream=table.name)) == record(1, 2), outcome
            continue

        if outcome == "commit":
            assert seen == [record(2)] and case.stored(table) == EXISTING
        else:
            assert seen == [None] and case.stored(table) == [(1, "uno", "u")]
        expected = record(2) if outcome == "commit" else record(1, 2)
        assert target.ledger_lookup(chunk(stream=table.name)) == expected, outcome


UPDATE: list[Row] = [(2, "TWO", "B"), (3, "three", "c")]
REFUSED_BY_KEY = {"upsert": [], "insert": [2], "skip_existing": []}
STORED = {
    "upsert": [(1, "one", "a"), (2, "TWO", "B"), (3, "three", "c")],
    "insert": [(1, "one", "a"), (2, "two", "b"), (3, "three", "c")],
    "skip_existing": [(1, "one", "a"), (2, "two", "b"), (3, "three", "c")],
}


def modes(case: TargetCase, among: Sequence[WriteMode] = MODES) -> list[WriteMode]:
    """The write modes the target takes (an HTTP API: upsert by key only)."""
    return [m for m in among if m in case.write_modes]


def test_write_modes_over_rows_already_there(case: TargetCase) -> None:
    for mode in modes(case):
        # Given a target holding keys 1 and 2
        table = accounts(mode)
        target = case.target(table, mode, EXISTING)

        # When a chunk writes keys 2 and 3
        with target.begin_chunk(chunk(stream=table.name)) as tx:
            refused = tx.write(batch(UPDATE))
            tx.commit(record(2 - len(refused)))

        # Then upsert replaces 2, skip_existing keeps it, insert keeps it and refuses the row
        assert [r.row[0] for r in refused] == REFUSED_BY_KEY[mode], mode
        assert all(r.reason and r.source_key == [r.row[0]] and not r.retry_later for r in refused)
        assert case.stored(table) == STORED[mode], mode


def test_a_key_twice_in_one_batch(case: TargetCase) -> None:
    for mode in modes(case):
        # Given an empty target, and a batch in which one key comes twice
        table = accounts(mode)
        target = case.target(table, mode)
        rows: list[Row] = [(1, "one", "a"), (5, "first", "f"), (5, "second", "s"), (6, "6", "x")]

        # When the load writes it
        with target.begin_chunk(chunk(stream=table.name)) as tx:
            refused, handled = write_bisecting(tx, batch(rows), stop=lambda: False)
            tx.commit(record(len(rows) - len(refused)))

        # Then the key is written once: upsert keeps the later row, the others the first,
        # and insert refuses the later one
        assert handled == len(rows)
        assert [r.row for r in refused] == ([rows[2]] if mode == "insert" else []), mode
        five = rows[2] if mode == "upsert" else rows[1]
        assert case.stored(table) == [rows[0], five, rows[3]], mode


def test_a_refused_row_is_named_and_the_rest_is_written(case: TargetCase) -> None:
    for mode in modes(case):
        for existing in ([], EXISTING):
            # Given a batch with a row that breaks a NOT NULL column
            table = accounts(f"{mode}_{len(existing)}")
            target = case.target(table, mode, existing)
            good: list[Row] = [(10 + i, f"n{i}", "c") for i in range(6)]
            bad: Row = (99, "bad", None)
            rows = [*good[:3], bad, *good[3:]]

            # When the load writes it (bisecting a batch the target refuses for a row it
            # does not name)
            with target.begin_chunk(chunk(stream=table.name)) as tx:
                refused, handled = write_bisecting(tx, batch(rows), stop=lambda: False)
                tx.commit(record(len(good)))

            # Then exactly that row comes back with the target's reason; the rest is written
            assert handled == len(rows)
            got = [(r.row, r.source_key, r.retry_later) for r in refused]
            assert got == [(bad, [99], False)], table.name
            assert refused[0].reason
            assert case.stored(table) == sorted([*existing, *good]), table.name


def test_a_batch_is_written_whole_or_its_refusals_named(case: TargetCase) -> None:
    # What write() alone does with a bad row: either raise BadRowError, leaving nothing
    # of the batch, or return the row refused and write the others
    target = case.target(ACCOUNTS, "upsert")
    rows: list[Row] = [(1, "one", "a"), (2, "two", None), (3, "three", "c")]

    with target.begin_chunk(chunk()) as tx:
        try:
            refused = tx.write(batch(rows))
        except BadRowError as exc:
            assert exc.reason
            expected: list[Row] = []
        else:
            assert [r.row for r in refused] == [rows[1]]
            expected = [rows[0], rows[2]]
        tx.write(batch([(4, "four", "d")]))  # the chunk goes on
        tx.commit(record(len(expected) + 1))

    assert case.stored(ACCOUNTS) == [*expected, (4, "four", "d")]


def test_upsert_writes_only_the_columns_it_is_given(case: TargetCase) -> None:
    target = case.target(NOTES, "upsert", [(1, "a1", "b1"), (2, "a2", "b2")])

    with target.begin_chunk(chunk(stream="notes")) as tx:
        tx.write(Batch(["id", "a"], [(2, "A2"), (3, "A3")], [[2], [3]], [0, 1]))
        tx.commit(record(2))

    assert case.stored(NOTES) == [(1, "a1", "b1"), (2, "A2", "b2"), (3, "A3", None)]


def test_read_back_returns_exactly_what_was_written_by_key_range(case: TargetCase) -> None:
    target = case.target(PAIRS, "upsert")
    rows: list[Row] = sorted(
        (g, c, g * 10 + i) for g in (1, 2, 3) for i, c in enumerate(["a", "b", "c ", "é"])
    )
    with target.begin_chunk(chunk(stream="pairs")) as tx:
        tx.write(Batch(PAIRS.names, list(reversed(rows)), [], []))
        tx.commit(record(len(rows)))
    order = case.stored(PAIRS)
    if not case.readable:  # an API is never read back: verify compares SQL targets only
        assert sorted(order) == rows
        with pytest.raises(PermanentError):
            list(target.read_back(None, None))
        return

    whole = [r for b in target.read_back(None, None) for r in b.rows]
    middle = [r for b in target.read_back(order[2][:2], order[7][:2]) for r in b.rows]

    assert sorted(whole) == rows and whole == order
    assert middle == order[3:8]


def test_finish_is_idempotent_and_leaves_the_rows(case: TargetCase) -> None:
    target = case.target(ACCOUNTS, "upsert")
    load(target, chunk(), EXISTING, record(2))

    said = target.finish()
    again = target.finish()

    assert all(isinstance(s, str) for s in [*said, *again])
    assert case.stored(ACCOUNTS) == EXISTING


def test_a_batch_naming_a_column_the_table_lacks_is_a_permanent_error(case: TargetCase) -> None:
    # No row of it could load: the stream's mapping is wrong, not a row
    target = case.target(ACCOUNTS, "upsert")

    with pytest.raises(PermanentError) as raised:
        with target.begin_chunk(chunk()) as tx:
            tx.write(Batch([*COLUMNS, "nope"], [(1, "one", "a", 1)], [[1]], [0]))

    assert not isinstance(raised.value, BadRowError)
    assert case.stored(ACCOUNTS) == []
    assert target.ledger_lookup(chunk()) is None


def test_a_missing_table_is_a_permanent_error(case: TargetCase) -> None:
    # Given a target that has loaded a chunk, whose table is then dropped
    target = case.target(ACCOUNTS, "upsert")
    load(target, chunk(), EXISTING, record(2))
    case.drop(ACCOUNTS)

    with pytest.raises(PermanentError):
        with target.begin_chunk(chunk(2)) as tx:
            tx.write(batch([(3, "three", "c")]))
    with pytest.raises(PermanentError):
        list(target.read_back(None, None))
    assert not isinstance(PermanentError(), TransientError)


def test_a_target_that_does_not_answer_is_a_transient_error(case: TargetCase) -> None:
    target = case.unreachable_target(ACCOUNTS)

    if case.ledger_in_target:
        with pytest.raises(TransientError):
            target.prepare()
        with pytest.raises(TransientError):
            target.ledger_lookup(chunk())
    else:  # preparing and the ledger reach only the state DB, which answers
        target.prepare()
        assert target.ledger_lookup(chunk()) is None
    with pytest.raises(TransientError):
        with target.begin_chunk(chunk()) as tx:
            tx.write(batch(EXISTING))


class NoRoomForAnother(Unpaced):
    """A deadline with time left now (bisection goes on) but not for another sub-batch."""

    def expired(self, ahead_s: float = 0.0) -> bool:
        return ahead_s > 0


def test_the_load_step_records_the_same_outcome_on_every_target(case: TargetCase) -> None:
    for mode in modes(case, MODES[:2]):
        # Given a target holding key 2, and a chunk of 1200 rows with a row breaking a NOT
        # NULL column and (for insert) a key already there
        table = accounts(mode)
        target = case.target(table, mode, [(2, "two", "b")])
        rows: list[Row] = [(i, f"n{i}", None if i == 7 else "c") for i in range(1, 1201)]
        job = Job(
            batch=batch(rows),
            earlier=[],
            key=target.key,
            fail_on_bad=False,
            pace=NoRoomForAnother(),
        )

        # When the load step writes it
        ref = chunk(token=3, stream=table.name)
        with target.begin_chunk(ref) as tx:
            rec = write_chunk(tx, 3, job)

        # Then it stops after one sub-batch, quarantines the refused rows by their target
        # key, and the ledger holds what the step reported
        refused = [7, 2] if mode == "insert" else [7]
        assert rec.cut == [SUB_BATCH_ROWS], mode
        assert rec.rows_loaded == SUB_BATCH_ROWS - len(refused), mode
        assert sorted(q.key for q in rec.quarantine) == sorted(f"[{k}]" for k in refused)
        assert all(q.reason and q.row and q.row["id"] == int(q.key[1:-1]) for q in rec.quarantine)
        assert target.ledger_lookup(ref) == rec
        two = (2, "n2", "c") if mode == "upsert" else (2, "two", "b")
        expected = [two if r[0] == 2 else r for r in rows[:SUB_BATCH_ROWS] if r[0] != 7]
        assert case.stored(table) == expected, mode
