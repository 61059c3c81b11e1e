"""Folders a spec's SQLite (and, later, file) endpoints may be in.

``BATON_ALLOWED_PATHS`` lists folders. Both the folders and a spec's path are
compared after resolving symlinks, so a link inside an allowed folder cannot
point outside it. Unset, any absolute path is allowed; ``baton up`` and
``baton demo`` set it to their own folder and ``./data``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from etl_tasks.errors import BoundaryError


@dataclass(frozen=True)
class PathPolicy:
    folders: tuple[Path, ...] | None  # None: any

    @classmethod
    def parse(cls, text: str | None) -> PathPolicy:
        if text is None or not text.strip():
            return cls(None)
        folders = [
            Path(os.path.realpath(Path(item.strip()).expanduser()))
            for item in text.split(",")
            if item.strip()
        ]
        return cls(tuple(folders))

    def check(self, path: str, field: str = "url") -> Path:
        """The real path behind ``path``; raises :class:`BoundaryError` outside the folders."""
        given = Path(path)
        if not given.is_absolute():
            raise BoundaryError(
                "give an absolute path: a relative one means a different file "
                "for the API and for each worker",
                field,
            )
        real = Path(os.path.realpath(given))
        if self.folders is not None and not any(
            real == folder or folder in real.parents for folder in self.folders
        ):
            raise BoundaryError(
                f"{path} is outside the allowed folders (BATON_ALLOWED_PATHS)", field
            )
        return real
