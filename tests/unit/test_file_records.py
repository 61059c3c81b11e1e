"""The file source's reading, without a migration: boundaries, seeks, cuts and fingerprints."""

from __future__ import annotations

import codecs
from pathlib import Path

import pytest

from etl_tasks.connectors.base import Unpaced
from etl_tasks.connectors.files.encoding import detect, resolve
from etl_tasks.connectors.files.source import FileSet, FileSource
from etl_tasks.connectors.registry import kinds
from etl_tasks.endpoints import FileSettings
from etl_tasks.errors import PermanentError
from tests.exports import customer, write_csv, write_jsonl


def _source(folder: Path, pattern: str, **settings: object) -> FileSource:
    files = FileSet(folder, pattern, FileSettings(path=str(folder), **settings), Path)
    columns = files.columns()
    return FileSource(files, columns, ["_file", "_record", *columns])


class Deadline:
    """A pace whose deadline passes after ``checks`` looks at it."""

    def __init__(self, checks: int) -> None:
        self.left = checks

    def expired(self, ahead_s: float = 0.0) -> bool:
        self.left -= 1
        return self.left < 0

    def tick(self) -> None:
        return None


@pytest.mark.parametrize(("written", "given"), [("utf-16-le", "utf-16"), ("cp1252", "cp1252")])
def test_reading_from_every_planned_bound_gives_the_whole_file_once(
    tmp_path: Path, written: str, given: str
) -> None:
    rows = [customer(i) for i in range(1, 48)]  # a third hold a quoted CRLF
    bom = written.startswith("utf-16")
    write_csv(tmp_path / "a.csv", rows[:30], encoding=written, bom=bom)
    write_csv(tmp_path / "b.csv", rows[30:], encoding=written, bom=bom)
    source = _source(tmp_path, "*.csv", encoding=given, delimiter=";")
    whole, _ = source.read_range(None, None, Unpaced())
    ranges, done = source.boundaries(None, 7, 100)
    assert done
    # chunks never span files: 30 records make 7+7+7+7+2, 17 make 7+7+3
    assert [int(hi[1]) for _, hi in ranges if hi] == [7, 14, 21, 28, 30, 7, 14, 17]
    read = []
    for lower, upper in ranges:
        batch, cut = source.read_range(lower, upper, Unpaced())
        assert cut is None and not batch.malformed
        read += batch.rows
    assert read == whole.rows
    assert [r[2:] for r in read] == [tuple(r.values()) for r in rows]
    # a bound that is only a row's key (a load's cut) reads the same rest, by counting
    key_only = ranges[2][0][:2]
    assert source.read_range(key_only, ranges[2][1], Unpaced())[0].rows == read[14:21]
    # planning in windows lands on the same bounds
    first, more = source.boundaries(None, 7, 3)
    assert not more and first == ranges[:3]
    assert source.boundaries(first[-1][1], 7, 100)[0] == ranges[3:]


def test_a_read_cut_at_its_deadline_resumes_after_the_last_record(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "x.jsonl", [{"n": i, "s": "é" * (i % 4)} for i in range(2500)])
    source = _source(tmp_path, "x.jsonl", format="jsonl")
    [(lower, upper)], _ = source.boundaries(None, 5000, 10)
    part, cut = source.read_range(lower, upper, Deadline(1))
    assert len(part) == 2000 and cut is not None and cut[:2] == ("x.jsonl", 2000)
    rest, again = source.read_range(cut, upper, Unpaced())
    assert again is None
    assert [r[2] for r in part.rows + rest.rows] == [str(i) for i in range(2500)]
    # the deadline passing with no record left is no cut
    assert source.read_range(cut, upper, Deadline(0))[1] is None


def test_a_file_changed_after_planning_is_refused_with_what_changed(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "x.jsonl", [{"n": i} for i in range(10)])
    source = _source(tmp_path, "x.jsonl", format="jsonl")
    ranges, _ = source.boundaries(None, 4, 10)
    with open(tmp_path / "x.jsonl", "a") as fh:
        fh.write('{"n": 10}\n')
    with pytest.raises(PermanentError, match="its size went from 90 to 100 bytes"):
        source.read_range(*ranges[1], Unpaced())
    with pytest.raises(PermanentError, match="changed after the migration planned it"):
        source.boundaries(ranges[0][1], 4, 10)


def test_auto_detection_reads_boms_then_utf_8_validity(tmp_path: Path) -> None:
    cases = {
        "bom8": (codecs.BOM_UTF8 + "é".encode(), "utf-8 with BOM"),
        "bom16": (codecs.BOM_UTF16_BE + "é\n".encode("utf-16-be"), "utf-16-be with BOM"),
        "plain8": ("é\n".encode(), "utf-8"),
        "ansi": ("é€\n".encode("cp1252"), "cp1252"),
    }
    for name, (data, expected) in cases.items():
        (tmp_path / name).write_bytes(data)
        assert detect(tmp_path / name)[0].describe() == expected, name
    with pytest.raises(ValueError, match="not ASCII-compatible"):
        resolve("cp500", b"")
    # preflight's quick guess reads the head only; planning decides on the whole file
    (tmp_path / "late").write_bytes(b"a\n" * (1 << 20) + "é\n".encode("cp1252"))
    assert detect(tmp_path / "late", head_only=True)[0].codec == "utf-8"
    assert detect(tmp_path / "late")[0].codec == "cp1252"


def test_workers_advertise_files_as_a_source_only() -> None:
    found = kinds()
    assert "file" in found["sources"] and "file" not in found["targets"]


def test_an_empty_file_in_a_glob_adds_no_chunk_but_an_empty_first_file_has_no_columns(
    tmp_path: Path,
) -> None:
    write_csv(tmp_path / "a.csv", [customer(1), customer(2)])
    (tmp_path / "b.csv").write_bytes(b"")
    write_csv(tmp_path / "c.csv", [customer(3)])
    source = _source(tmp_path, "*.csv", encoding="cp1252", delimiter=";")
    ranges, done = source.boundaries(None, 10, 10)
    assert done and [r[1][:2] for r in ranges] == [("a.csv", 2), ("c.csv", 1)]
    assert len(source.read_range(*ranges[1], Unpaced())[0]) == 1
    with pytest.raises(PermanentError, match=r"'b\.csv' is empty"):
        _source(tmp_path, "b.csv")


def test_a_column_named_like_a_position_column_is_refused(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "x.jsonl", [{"id": 1, "_record": 7}])
    with pytest.raises(PermanentError, match="have a column '_record': the name is Baton's"):
        _source(tmp_path, "x.jsonl", format="jsonl")
    (tmp_path / "y.csv").write_text("id,_file\n1,a\n")
    with pytest.raises(PermanentError, match="has a column '_file'"):
        _source(tmp_path, "y.csv")
