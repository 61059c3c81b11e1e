"""Folders of exported files for the file-source tests: CSV and JSON Lines, any encoding.

Each builder writes its files and returns what a correct load holds, so a test
compares the target with the records as written, never with a second parse.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: Text with characters Windows-1252 has (and Latin-1 has but for the euro sign).
NAMES = ["Zoë", "Müller", "Ångström", "Ñandú", "Café", "Œuvre", "Façade", "Smørrebrød"]


def customer(i: int) -> dict[str, str | None]:
    """A customer as exported: a note with quoted newlines, the delimiter and quotes."""
    note: str | None = None
    if i % 3 == 0:
        note = f'line one\r\nline "two"; of {i}'
    elif i % 3 == 1:
        note = f"plain {i}"
    return {
        "id": str(i),
        "name": f"{NAMES[i % len(NAMES)]} {i}",
        "city": "Köln" if i % 2 else "Évry",
        "note": note,
    }


def write_csv(
    path: Path,
    rows: Sequence[dict[str, Any]],
    *,
    encoding: str = "cp1252",
    delimiter: str = ";",
    header: bool = True,
    bom: bool = False,
    columns: Sequence[str] | None = None,
) -> None:
    """``rows`` as a CSV file (CRLF line ends, quoted where needed; None as an empty field);
    ``columns`` name the header (default: the first row's keys)."""
    out = io.StringIO(newline="")
    writer = csv.writer(out, delimiter=delimiter, lineterminator="\r\n")
    columns = list(columns if columns is not None else rows[0] if rows else [])
    if header:
        writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if row[c] is None else row[c] for c in columns])
    data = out.getvalue().encode(encoding)
    path.write_bytes(_bom(encoding) + data if bom else data)


def write_jsonl(
    path: Path, records: Sequence[dict[str, Any]], *, encoding: str = "utf-8", bom: bool = False
) -> None:
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    data = text.encode(encoding)
    path.write_bytes(_bom(encoding) + data if bom else data)


def customers_folder(folder: Path, files: int, per_file: int, **csv_options: Any) -> list[dict]:
    """``files`` CSV exports of customers, ``customers-1.csv``…; returns every row written."""
    folder.mkdir(parents=True, exist_ok=True)
    written: list[dict[str, Any]] = []
    for f in range(files):
        rows = [customer(f * per_file + i + 1) for i in range(per_file)]
        write_csv(folder / f"customers-{f + 1}.csv", rows, **csv_options)
        written += rows
    return written


def file_spec(
    folder: Path,
    target: str,
    streams: list[dict[str, Any]],
    chunk_rows: int = 100,
    **file_settings: Any,
) -> dict[str, Any]:
    return {
        "name": "file export",
        "source": {"file": {"path": str(folder), **file_settings}},
        "target": {"url": target},
        "streams": streams,
        "chunk_rows": chunk_rows,
    }


def _bom(encoding: str) -> bytes:
    import codecs

    name = codecs.lookup(encoding).name
    if name.startswith("utf-16"):
        return codecs.BOM_UTF16_LE if name != "utf-16-be" else codecs.BOM_UTF16_BE
    if name.startswith("utf-8"):
        return codecs.BOM_UTF8
    raise ValueError(f"no BOM for {encoding}")
