"""Preflight of a stream read from exported files: the source side's own checks.

The folder was checked against ``BATON_ALLOWED_PATHS`` when the side was opened;
here each stream's pattern must match at least one file, every file must be
readable in the spec's encoding with the same columns as the first, and a ``key``
must name columns the files have. The target side is checked exactly as for a SQL
source (:class:`~etl_tasks.preflight_streams.StreamCheck`), on a shape of the files'
columns, all text, and a few records go through the whole value path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.sql import FromClause

from etl_tasks import codec
from etl_tasks.bindings import Types
from etl_tasks.boundary.names import identifier_problem
from etl_tasks.boundary.policy import Boundary
from etl_tasks.connectors.files.binding import bind_file_stream, shape_table
from etl_tasks.connectors.files.folder import pattern_problem
from etl_tasks.connectors.files.source import POSITION, FileSet, FileSource, file_types
from etl_tasks.endpoints import FileEndpoint, FileSettings
from etl_tasks.errors import BadRowError, BoundaryError, FieldError, PermanentError, TransientError
from etl_tasks.preflight_streams import SAMPLE_ROWS, StreamCheck

if TYPE_CHECKING:
    from etl_tasks.preflight import Side
from etl_tasks.spec import MigrationSpec, Stream
from etl_tasks.values.path import build_path


@dataclass(frozen=True)
class FileSide:
    """A file source as preflight sees it: its real folder, and the path check."""

    settings: FileSettings
    folder: Path
    check: Callable[[str], Path]


def open_file_side(boundary: Boundary, endpoint: FileEndpoint) -> FileSide:
    """The endpoint's folder, checked; raises :class:`BoundaryError` (field ``path``)."""
    paths = boundary.paths

    def check(path: str) -> Path:
        return paths.check(path, "path")

    folder = check(endpoint.file.path)
    if not folder.exists():
        raise BoundaryError(f"folder {endpoint.file.path} does not exist", "path")
    if not folder.is_dir():
        raise BoundaryError(f"{endpoint.file.path} is not a folder", "path")
    return FileSide(endpoint.file, folder, check)


class FileStreamCheck(StreamCheck):
    """The checks of stream ``index`` when its source is files."""

    def __init__(
        self,
        index: int,
        spec: MigrationSpec,
        stream: Stream,
        files: FileSide,
        target: Side | None,
        problems: list[FieldError],
        notes: list[str] | None = None,
    ) -> None:
        super().__init__(index, spec, stream, None, target, problems, notes)
        self.files = files
        pattern = stream.source_table or ""
        self.file_set = FileSet(files.folder, pattern, files.settings, files.check, quick=True)
        self.columns: list[str] = []

    def _names_fit(self) -> bool:
        ok = True
        stream = self.stream
        if stream.query is not None:
            self.add("query", "a file source reads files: give source_table, a file name or glob")
            return False
        problem = pattern_problem(stream.source_table or "")
        if problem:
            self.add("source_table", problem)
            ok = False
        for j, _ in enumerate(stream.where):
            self.add(f"where/{j}", "a file source has no filters: every record is read")
            ok = False
        if stream.on_null_key != "fail":
            self.add("on_null_key", "a file source's rows are keyed by position, never NULL")
            ok = False
        if self.target is not None:  # an HTTP target's table is only a part of its URL
            problem = identifier_problem(stream.target_table, self.target.backend)
            if problem:
                self.add("target_table", problem)
                ok = False
        return ok

    def _source_table(self) -> tuple[FromClause, Types] | None:
        pattern = self.stream.source_table or ""
        try:
            names = self.file_set.names()
            if not names:
                self.add(
                    "source_table", f"no file in {self.files.settings.path} matches {pattern!r}"
                )
                return None
            self.columns = self.file_set.columns()
            source = self._source()
            for name in names[1:]:
                opened, _ = self.file_set.open(name)
                source.check_columns(opened)
        except (PermanentError, TransientError) as exc:
            self.add("source_table", str(exc))
            return None
        return shape_table(self.stream.source_name, self.columns), file_types(self.columns)

    def _check_key(self, table: FromClause, types: Types) -> list[str]:
        key = self.stream.key_columns
        if key is None:
            return list(POSITION)
        missing = [k for k in key if k not in table.c]
        if missing:
            self.add(
                "key", f"the files of {self.stream.source_name!r} have no column {missing[0]!r}"
            )
            return []
        return key

    def _source(self) -> FileSource:
        read = [*POSITION, *self.columns]
        return FileSource(self.file_set, self.columns, read)

    def _sample(self, table: FromClause, types: Types, target_types: Types) -> None:
        binding = bind_file_stream(self.spec, self.stream.stream_name, self.columns)
        path = build_path(binding.mapper, binding.origins, types, target_types)
        source = FileSource(self.file_set, self.columns, list(binding.source.columns))
        try:
            batch = source.head(SAMPLE_ROWS)
        except (PermanentError, TransientError) as exc:
            self.add("source_table", str(exc))
            return
        for pos, row in enumerate(batch.rows):
            if pos in batch.malformed:
                continue  # quarantined at run time, with its line number
            try:
                converted = path.convert(row)
            except BadRowError:
                continue
            for name, value in zip(path.target_columns, converted, strict=True):
                try:
                    codec.encode_value(value)
                except TypeError:
                    self.add(
                        f"columns/{name}", f"cannot carry values of type {type(value).__name__}"
                    )
                    return
