"""Quarantined rows as a download: CSV or JSON Lines, streamed a row at a time.

Every row is in it (the JSON list pages; a download does not). Values are plain
JSON (:func:`etl_tasks.codec.plain_value`). In CSV, rows of different streams
have different columns, so the columns are fixed: the row itself is one cell, a
JSON object, and so is the key (a JSON array).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import orjson
from flask import Response

from etl_tasks.listing import quarantined_rows
from etl_tasks.masking import mask_quarantined
from etl_tasks.state.db import StateDB

CSV_COLUMNS = ("id", "stream", "chunk_id", "key", "status", "reason", "row")
MEDIA = {"csv": "text/csv", "jsonl": "application/x-ndjson"}


def _json_text(value: Any) -> str:
    return orjson.dumps(value).decode()


def _csv_lines(items: Iterable[dict[str, Any]]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for item in items:
        key = item["key_values"] if item["key_values"] is not None else item["key"]
        cells = {**item, "key": _json_text(key), "row": _json_text(item["row"])}
        writer.writerow([cells[c] for c in CSV_COLUMNS])
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    yield buffer.getvalue()  # the header alone, when there is no row


def _jsonl_lines(items: Iterable[dict[str, Any]]) -> Iterator[str]:
    for item in items:
        yield _json_text(item) + "\n"


WRITERS: dict[str, Callable[[Iterable[dict[str, Any]]], Iterator[str]]] = {
    "csv": _csv_lines,
    "jsonl": _jsonl_lines,
}


def download(items: Iterable[dict[str, Any]], fmt: str, filename: str) -> Response:
    """A streamed answer of every item, in ``fmt`` (``csv`` or ``jsonl``)."""
    response = Response(
        (line for line in WRITERS[fmt](items) if line),
        mimetype=MEDIA[fmt],
        content_type=f"{MEDIA[fmt]}; charset=utf-8",
    )
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}.{fmt}"'
    return response


def quarantine_download(db: StateDB, migration_id: str, fmt: str, masked: bool) -> Response:
    """Every quarantined row of a migration as ``fmt``, values masked for a viewer (the API's
    download and the dashboard's link answer the same); :class:`NotFound` before streaming."""
    rows = quarantined_rows(db, migration_id)
    items = (mask_quarantined(i) for i in rows) if masked else rows
    return download(items, fmt, f"quarantine-{migration_id}")
