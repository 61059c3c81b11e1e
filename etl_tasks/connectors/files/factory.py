"""Building a stream's file source from a worker's runtime (the registry calls this).

The folder and every file are checked against this worker's ``BATON_ALLOWED_PATHS``
when used: the API's check at submit does not stand for a worker on another machine.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import select

from etl_tasks.bindings import StreamBinding
from etl_tasks.connectors.files.binding import bind_file_stream
from etl_tasks.connectors.files.source import FileSet, FileSource
from etl_tasks.endpoints import FileEndpoint
from etl_tasks.errors import PermanentError
from etl_tasks.state.models import Event

if TYPE_CHECKING:
    from etl_tasks.runtime import Runtime

EVENT_KIND = "source_file"  # a file planned: its size, encoding (and how it was chosen)


def file_set(rt: Runtime, migration_id: str, stream: str) -> FileSet:
    spec = rt.spec(migration_id)
    endpoint = spec.source
    if not isinstance(endpoint, FileEndpoint):
        raise PermanentError(f"the migration's source is not files but {endpoint.kind}")
    paths = rt.boundary.paths

    def check(path: str) -> Path:
        return paths.check(path, "path")

    folder = check(endpoint.file.path)
    pattern = spec.stream(stream).source_table or ""
    return FileSet(folder, pattern, endpoint.file, check)


def binding(rt: Runtime, migration_id: str, stream: str) -> StreamBinding:
    columns = file_set(rt, migration_id, stream).columns()
    return bind_file_stream(rt.spec(migration_id), stream, columns)


def source(rt: Runtime, migration_id: str, stream: str) -> FileSource:
    bound = rt.binding(migration_id, stream)
    columns = [c.name for c in bound.source.table.columns][2:]
    return FileSource(
        file_set(rt, migration_id, stream),
        columns,
        list(bound.source.columns),
        note=_events(rt, migration_id, stream),
    )


def _events(rt: Runtime, migration_id: str, stream: str) -> Callable[[str], None]:
    def note(message: str) -> None:
        text = f"stream {stream!r}: {message}"[:2000]
        with rt.db.session() as s:
            said = select(Event.id).where(
                Event.migration_id == migration_id, Event.kind == EVENT_KIND, Event.message == text
            )
            if s.scalar(said.limit(1)) is None:  # two planners racing say it once (mostly)
                s.add(
                    Event(migration_id=migration_id, kind=EVENT_KIND, message=text, at=rt.db.now(s))
                )

    return note
