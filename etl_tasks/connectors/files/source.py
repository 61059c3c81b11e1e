"""A stream's files as a :class:`~etl_tasks.connectors.base.Source`.

A row's key is its position, ``(file name, record number)``: files in name order,
records in file order, numbered from 1 (a header and blank lines not counted). A
planned chunk bound is that key followed by what lets a read start there without
parsing the file again, and what the file was when planned::

    [file, record, byte offset after it, lines before the next record,
     fingerprint ("size:mtime_ns:hash"), codec]

Planning finds the bounds in one sequential parse, never by seeking (a seek cannot
tell whether it landed inside a quoted newline), and every range holds records of
one file only. A bound that is only a row's key (a load stopped at its deadline
after that row) has no offset: its file is then parsed from its start up to it.

A file whose fingerprint differs from the one in its chunk's bounds fails the read
(:class:`~etl_tasks.errors.PermanentError`), before and after reading it: a migration
never loads a mix of two versions of a file.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from etl_tasks.budget import SUB_BATCH_ROWS
from etl_tasks.connectors.base import Batch, Key, Pace, Range, Shape
from etl_tasks.connectors.files.encoding import AUTO, Encoding, detect, resolve
from etl_tasks.connectors.files.folder import Fingerprint, fingerprint, list_files
from etl_tasks.connectors.files.records import Position, Record, records
from etl_tasks.endpoints import FileSettings
from etl_tasks.errors import PermanentError, TransientError
from etl_tasks.values.types import ColumnType, Kind

log = logging.getLogger(__name__)

FILE, RECORD = "_file", "_record"
POSITION = [FILE, RECORD]  # every file stream's source key, and its first two columns
PLANNED_WIDTH = 6  # a planned bound: the key, offset, line, fingerprint, codec
SAMPLE_RECORDS = 1000  # JSON Lines: the first file's records whose fields make the columns
_ESTIMATE_RECORDS = 200


def file_types(columns: Sequence[str]) -> dict[str, ColumnType]:
    """Every value arrives as text (a transform or the target column's type converts it);
    the position columns are the file's name and the record's number."""
    types = {c: ColumnType("file", Kind.TEXT, "text") for c in columns}
    types[FILE] = ColumnType("file", Kind.TEXT, "text", nullable=False)
    types[RECORD] = ColumnType("file", Kind.INTEGER, "bigint", nullable=False, precision=64)
    return types


@dataclass(frozen=True)
class OpenFile:
    """One file as read now: its fingerprint, encoding, column names and first record."""

    name: str
    path: Path
    fingerprint: Fingerprint
    encoding: Encoding
    header: list[str] | None  # None: JSON Lines (records name their fields)
    data: Position

    def bound(self, record: Record) -> Key:
        end = record.end
        return (
            self.name,
            record.number,
            end.offset,
            end.line,
            self.fingerprint.text(),
            self.encoding.codec,
        )


class FileSet:
    """The files ``pattern`` matches in ``folder``, read as ``settings`` say."""

    def __init__(
        self,
        folder: Path,
        pattern: str,
        settings: FileSettings,
        check: Callable[[str], Path],
        quick: bool = False,
    ) -> None:
        self.folder = folder
        self.pattern = pattern
        self.settings = settings
        self.check = check
        self.quick = quick  # preflight: guess an "auto" encoding from each file's head
        self._encodings: dict[tuple[str, str], tuple[Encoding, str]] = {}

    def names(self) -> list[str]:
        return list_files(self.folder, self.pattern, self.check)

    def open(self, name: str, pinned: Key | None = None) -> tuple[OpenFile, str]:
        """The file now, and how its encoding was chosen; ``pinned`` (a planned bound of
        this file) fixes its fingerprint and codec: a file that changed since is refused."""
        path = self.folder / name
        self.check(str(path))
        now = fingerprint(path)
        if pinned is not None and len(pinned) >= PLANNED_WIDTH:
            changed = now.change_from(Fingerprint.parse(str(pinned[4])))
            if changed:
                raise changed_file(name, changed)
            encoding, why = self._resolve(path, str(pinned[5])), "as planned"
        else:
            encoding, why = self._encoding(path, now)
        header, data = self._header(path, encoding)
        return OpenFile(name, path, now, encoding, header, data), why

    def verify(self, opened: OpenFile) -> None:
        """Refuse a file that changed while it was read."""
        changed = fingerprint(opened.path).change_from(opened.fingerprint)
        if changed:
            raise changed_file(opened.name, changed)

    def columns(self) -> list[str]:
        """The stream's columns: the first file's header (``c1``… without one) or, for JSON
        Lines, the fields of its first records in the order first seen."""
        names = self.names()
        if not names:
            raise PermanentError(f"no file in the source folder matches {self.pattern!r}")
        opened, _ = self.open(names[0])
        if opened.header:
            return opened.header
        if self.settings.format == "csv":
            raise PermanentError(f"{names[0]!r} is empty: it has no columns to read")
        seen: dict[str, None] = {}
        with open(opened.path, "rb") as fh:
            for i, record in enumerate(records(fh, opened.data, opened.encoding, self.settings)):
                if i >= SAMPLE_RECORDS:
                    break
                if isinstance(record.fields, dict):
                    seen.update(dict.fromkeys(record.fields))
        if not seen:
            raise PermanentError(f"{names[0]!r} has no JSON object to take the columns from")
        problem = header_problem(list(seen))
        if problem:
            raise PermanentError(f"the objects of {names[0]!r} {problem.replace('has', 'have', 1)}")
        return list(seen)

    def _resolve(self, path: Path, codec: str) -> Encoding:
        with open(path, "rb") as fh:
            head = fh.read(4)
        try:
            return resolve(codec, head)
        except (LookupError, ValueError) as exc:
            raise PermanentError(f"cannot read {path.name!r}: {exc}") from None

    def _encoding(self, path: Path, now: Fingerprint) -> tuple[Encoding, str]:
        given = self.settings.encoding
        if given != AUTO:
            return self._resolve(path, given), "as the spec says"
        key = (path.name, now.text())
        if key not in self._encodings:  # a full read: once per file version and process
            try:
                self._encodings[key] = detect(path, head_only=self.quick)
            except OSError as exc:
                raise TransientError(f"cannot read {path.name!r}: {exc.strerror}") from exc
        encoding, why = self._encodings[key]
        return encoding, f"guessed: {why}"

    def _header(self, path: Path, encoding: Encoding) -> tuple[list[str] | None, Position]:
        start = Position(encoding.bom, 0, 0)
        if self.settings.format == "jsonl":
            return None, start
        with open(path, "rb") as fh:
            first = next(records(fh, start, encoding, self.settings), None)
        if first is None:
            return ([] if self.settings.header else None), start
        if first.error is not None or not isinstance(first.fields, list):
            what = "header" if self.settings.header else "first record"
            raise PermanentError(f"cannot read the {what} of {path.name!r}: {first.error}")
        if not self.settings.header:
            return [f"c{i}" for i in range(1, len(first.fields) + 1)], start
        names = [f or "" for f in first.fields]
        problem = header_problem(names)
        if problem:
            raise PermanentError(f"the header of {path.name!r} {problem}")
        return names, Position(first.end.offset, 0, first.end.line)


def header_problem(names: list[str]) -> str | None:
    """Why these column names cannot be a stream's (each answer starts with "has ")."""
    if any(not n.strip() for n in names):
        return "has an empty column name"
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        return f"has the column {repeated[0]!r} twice"
    taken = [n for n in names if n in POSITION]
    if taken:
        return f"has a column {taken[0]!r}: the name is Baton's (a row's file or record number)"
    return None


def changed_file(name: str, how: str) -> PermanentError:
    return PermanentError(
        f"file {name!r} changed after the migration planned it ({how}); the migration stops "
        "rather than load a mix of two versions: start a new one to load the file as it is now"
    )


@dataclass
class _Reading:
    """A range being read: its rows so far, the last record's bound, whether to stop."""

    batch: Batch
    pace: Pace
    last: Key | None = None
    stop: bool = False


class FileSource:
    """One stream's files, read chunk by chunk in (file, record) order."""

    kind = "file"

    def __init__(
        self,
        files: FileSet,
        columns: list[str],
        read: list[str],
        note: Callable[[str], None] = lambda message: None,
    ) -> None:
        self.files = files
        self.settings = files.settings
        self.columns = columns  # every column of the stream's files
        self.read = read  # the columns rows carry: the position first, then those mapped
        self.note = note

    def describe(self) -> Shape:
        return Shape(list(self.read), list(POSITION), file_types(self.read[2:]))

    def estimate_rows(self) -> int | None:
        """The files' total size over the average size of the first file's first records."""
        try:
            names = self.files.names()
            if not names:
                return 0
            opened, _ = self.files.open(names[0])
            sizes = sum((self.files.folder / n).stat().st_size for n in names)
            with open(opened.path, "rb") as fh:
                last = None
                for last in records(fh, opened.data, opened.encoding, self.settings):
                    if last.number >= _ESTIMATE_RECORDS:
                        break
            if last is None:
                return 0
            per_record = max(1, (last.end.offset - opened.data.offset) // last.number)
            return sizes // per_record
        except OSError as exc:
            raise TransientError(f"cannot read the source files: {exc.strerror}") from exc

    # -- planning ----------------------------------------------------------------------

    def boundaries(self, after: Key | None, rows: int, count: int) -> tuple[list[Range], bool]:
        ranges: list[Range] = []
        lower = after
        for name in self._names():
            if after is not None and name < after[0]:
                continue
            same = after is not None and name == after[0]
            opened, why = self.files.open(name, after if same else None)
            self.check_columns(opened)
            if not same:
                self.note(
                    f"{name} ({opened.fingerprint.size} bytes) is read as "
                    f"{opened.encoding.describe()} ({why}); fingerprint {opened.fingerprint.text()}"
                )
            start = self._start(opened, after if same else None)
            taken, last = 0, None
            with open(opened.path, "rb") as fh:
                for last in records(fh, start, opened.encoding, self.settings):
                    taken += 1
                    if taken == rows:
                        upper = opened.bound(last)
                        ranges.append((lower, upper))
                        lower, taken = upper, 0
                        if len(ranges) == count:
                            self.files.verify(opened)
                            return ranges, False
            self.files.verify(opened)
            if taken and last is not None:  # the file's last records: a smaller chunk
                upper = opened.bound(last)
                ranges.append((lower, upper))
                lower = upper
                if len(ranges) == count:
                    return ranges, False
        if not ranges:  # nothing after ``after``: one empty range closes the plan
            return [(after, after)], True
        return ranges, True

    def _names(self) -> list[str]:
        """The stream's files; none at all (preflight found some) means they are gone."""
        names = self.files.names()
        if not names:
            raise PermanentError(
                f"no file in the source folder matches {self.files.pattern!r} any more"
            )
        return names

    def check_columns(self, opened: OpenFile) -> None:
        """Every CSV file of a stream has the stream's columns (in any order)."""
        header = opened.header
        if header and sorted(header) != sorted(self.columns):
            raise PermanentError(
                f"{opened.name!r} has columns {header}, not the stream's {self.columns} "
                "(those of its first file)"
            )

    def _start(self, opened: OpenFile, bound: Key | None) -> Position:
        """Where the record after ``bound`` (a bound in this file) starts."""
        if bound is None:
            return opened.data
        if len(bound) >= PLANNED_WIDTH:
            return Position(int(bound[2]), int(bound[1]), int(bound[3]))
        wanted = int(bound[1])
        position = opened.data
        with open(opened.path, "rb") as fh:  # a row's key only: count records up to it
            for record in records(fh, opened.data, opened.encoding, self.settings):
                position = record.end
                if record.number >= wanted:
                    break
        return position

    # -- reading -----------------------------------------------------------------------

    def read_range(
        self, lower: Key | None, upper: Key | None, pace: Pace
    ) -> tuple[Batch, Key | None]:
        names = self._names()
        for bound in (lower, upper):
            if bound is not None and bound[0] not in names:
                raise PermanentError(f"file {bound[0]!r} is gone from the source folder")
        reading = _Reading(Batch(list(self.read), []), pace)
        for name in names:
            if lower is not None and name < lower[0]:
                continue
            if upper is not None and name > upper[0]:
                break
            starts_here = lower is not None and name == lower[0]
            until = int(upper[1]) if upper is not None and name == upper[0] else None
            pin = upper if until is not None and len(upper or ()) >= PLANNED_WIDTH else None
            opened, _ = self.files.open(name, pin or (lower if starts_here else None))
            self.check_columns(opened)
            start = self._start(opened, lower if starts_here else None)
            if self._read_file(reading, opened, start, until):
                return reading.batch, reading.last
        return reading.batch, None

    def _read_file(
        self, reading: _Reading, opened: OpenFile, start: Position, until: int | None
    ) -> bool:
        """Read the file's records from ``start`` up to record ``until`` (None: its end);
        True when the deadline passed with records left (cut after ``reading.last``)."""
        batch = reading.batch
        with open(opened.path, "rb") as fh:
            for record in records(fh, start, opened.encoding, self.settings):
                if until is not None and record.number > until:
                    break
                if reading.stop:
                    self.files.verify(opened)
                    return True
                self._add(batch, opened, record)
                reading.last = opened.bound(record)
                if not len(batch) % SUB_BATCH_ROWS:
                    reading.stop = reading.pace.expired()
                    if not reading.stop:
                        reading.pace.tick()
        self.files.verify(opened)
        return False

    def read_keys(self, keys: Sequence[Key], planned: Sequence[Key] = ()) -> Batch:
        """The records at these positions, in key order (a replay reads only them). A file
        that a ``planned`` bound pins is refused if it changed since: its record numbers may
        name other records now."""
        wanted: dict[str, set[int]] = {}
        for key in keys:
            wanted.setdefault(str(key[0]), set()).add(int(key[1]))
        pins = {str(b[0]): b for b in planned if len(b) >= PLANNED_WIDTH}
        batch = Batch(list(self.read), [])
        names = set(self._names())
        for name in sorted(wanted):
            if name not in names:
                if name in pins:
                    raise changed_file(name, "it is gone")
                continue
            opened, _ = self.files.open(name, pins.get(name))
            numbers, highest = wanted[name], max(wanted[name])
            with open(opened.path, "rb") as fh:
                for record in records(fh, opened.data, opened.encoding, self.settings):
                    if record.number > highest:
                        break
                    if record.number in numbers:
                        self._add(batch, opened, record)
        return batch

    def head(self, count: int) -> Batch:
        """The stream's first ``count`` records (preflight's sample)."""
        batch = Batch(list(self.read), [])
        for name in self.files.names():
            opened, _ = self.files.open(name)
            with open(opened.path, "rb") as fh:
                for record in records(fh, opened.data, opened.encoding, self.settings):
                    if len(batch) >= count:
                        return batch
                    self._add(batch, opened, record)
        return batch

    def _add(self, batch: Batch, opened: OpenFile, record: Record) -> None:
        values, error = self._values(opened, record)
        if error is not None:
            batch.malformed[len(batch.rows)] = error
        batch.rows.append((opened.name, record.number, *[values.get(c) for c in self.read[2:]]))

    def _values(self, opened: OpenFile, record: Record) -> tuple[dict[str, Any], str | None]:
        fields = record.fields
        if record.error is not None or fields is None:
            return {}, record.error or f"line {record.line}: unreadable"
        if isinstance(fields, dict):
            extra = [k for k in fields if k not in self.columns]
            if extra:
                return {}, (
                    f"line {record.line}: field {extra[0]!r} is not one of the stream's "
                    "columns (the fields of its first file's first records)"
                )
            return fields, None
        header = opened.header or []
        if len(fields) != len(header):
            return {}, (
                f"line {record.line}: {len(fields)} fields where the header has {len(header)}"
            )
        return dict(zip(header, fields, strict=True)), None
