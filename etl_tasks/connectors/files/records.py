"""Records of one file, read sequentially from a byte offset that starts a record.

Seeking into a CSV file cannot tell whether it landed inside a quoted newline, so
record boundaries are only ever found by reading from the file's start (planning
does, once) or from a boundary found that way (a chunk's bound remembers its byte
offset and line). Every record says where it ends, so the next one can be read from
there directly.

A record that cannot be read (bytes not valid in the encoding, a quote out of place,
a field count that differs from the header, a JSON line that is not an object) is
still a record, numbered like the others: it carries the reason, with its line
number, instead of values, and is quarantined downstream.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import IO, Any

from etl_tasks.connectors.files.encoding import Encoding
from etl_tasks.endpoints import FileSettings

_BLOCK = 1 << 16


@dataclass(frozen=True)
class Position:
    """Where a record starts: its byte offset, and the records and lines before it."""

    offset: int
    record: int  # records read before it (header and blank lines not counted)
    line: int  # physical lines before it


@dataclass(frozen=True)
class Record:
    number: int  # 1-based among the file's records
    line: int  # the physical line it starts on, 1-based
    end: Position  # where the next record starts
    fields: list[str | None] | dict[str, Any] | None  # None when malformed
    error: str | None = None


class Lines:
    """The file's physical lines as text, from a record's start, counting bytes and lines.

    A line whose bytes are not valid in the encoding is decoded with replacement
    characters and remembered in ``bad``, so the record holding it is refused.
    """

    def __init__(self, fh: IO[bytes], start: Position, encoding: Encoding) -> None:
        fh.seek(start.offset)
        self.offset = start.offset
        self.line = start.line
        self.encoding = encoding
        self.bad: str | None = None
        self._raw = _raw_lines(fh, encoding)

    def __iter__(self) -> Lines:
        return self

    def __next__(self) -> str:
        raw = next(self._raw)
        self.offset += len(raw)
        self.line += 1
        codec = self.encoding.codec
        try:
            return raw.decode(codec)
        except UnicodeDecodeError as exc:
            if self.bad is None:
                self.bad = f"line {self.line}: byte 0x{raw[exc.start]:02x} is not valid {codec}"
            return raw.decode(codec, "replace")


def _raw_lines(fh: IO[bytes], encoding: Encoding) -> Iterator[bytes]:
    if encoding.newline == b"\n":
        while line := fh.readline():
            yield line
        return
    newline, unit = encoding.newline, encoding.unit
    buffer = b""
    while True:
        block = fh.read(_BLOCK)
        buffer += block
        start = pos = 0
        while (found := buffer.find(newline, pos)) >= 0:
            if (found - start) % unit:
                pos = found + 1
                continue
            yield buffer[start : found + len(newline)]
            start = pos = found + len(newline)
        buffer = buffer[start:]
        if not block:
            if buffer:
                yield buffer
            return


def records(
    fh: IO[bytes], start: Position, encoding: Encoding, settings: FileSettings
) -> Iterator[Record]:
    """The file's records from ``start`` on, in order."""
    lines = Lines(fh, start, encoding)
    if settings.format == "jsonl":
        return _jsonl(lines, start.record)
    return _csv(lines, start.record, settings)


def _csv(lines: Lines, number: int, settings: FileSettings) -> Iterator[Record]:
    reader = csv.reader(lines, delimiter=settings.delimiter, quotechar=settings.quote, strict=True)
    while True:
        first = lines.line + 1
        lines.bad = None
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            number += 1
            yield _refused(number, first, lines, f"line {first}: {exc}")
            continue
        if not fields:
            continue  # a blank line
        number += 1
        end = Position(lines.offset, number, lines.line)
        if lines.bad is not None:
            yield Record(number, first, end, None, lines.bad)
        else:
            yield Record(number, first, end, [f if f != "" else None for f in fields])


def _jsonl(lines: Lines, number: int) -> Iterator[Record]:
    for text in lines:
        bad, lines.bad = lines.bad, None
        if not text.strip():
            continue
        number += 1
        line = lines.line
        end = Position(lines.offset, number, line)
        if bad is not None:
            yield Record(number, line, end, None, bad)
            continue
        try:
            value = json.loads(text, parse_float=Decimal)
        except ValueError as exc:
            yield Record(number, line, end, None, f"line {line}: not JSON ({exc})")
            continue
        if not isinstance(value, dict):
            yield Record(number, line, end, None, f"line {line}: not a JSON object")
            continue
        yield Record(number, line, end, {k: as_text(v) for k, v in value.items()})


def _refused(number: int, first: int, lines: Lines, reason: str) -> Record:
    return Record(number, first, Position(lines.offset, number, lines.line), None, reason)


def as_text(value: Any) -> str | None:
    """A JSON value as the text it arrives as: numbers exactly as written (``1.50`` stays
    ``1.50``), ``true``/``false``, nested values as JSON; ``null`` is NULL."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | Decimal):
        return str(value)
    return json.dumps(value, ensure_ascii=False, default=float, separators=(",", ":"))
