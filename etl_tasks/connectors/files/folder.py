"""A file source's folder: which files a stream reads, and each file's fingerprint.

A stream's ``source_table`` is a file name or a glob (``*``, ``?``, ``[…]``) matched
against the names in the folder itself, never below it; its files are read in name
order. Every file's real path (symlinks resolved) must stay inside the folders
``BATON_ALLOWED_PATHS`` allows.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from etl_tasks.errors import PermanentError, TransientError

EDGE_BYTES = 64 * 1024  # of a file's head and of its tail, hashed into its fingerprint


def pattern_problem(pattern: str) -> str | None:
    """Why ``pattern`` cannot name files of the folder, or None."""
    if "/" in pattern or "\\" in pattern or pattern in (".", ".."):
        return "give a file name or glob inside the source folder, without a path"
    return None


def list_files(folder: Path, pattern: str, check: Callable[[str], Path]) -> list[str]:
    """The names of the folder's files that ``pattern`` matches, in name order; ``check``
    refuses (:class:`~etl_tasks.errors.BoundaryError`) a file that leads outside the
    allowed folders."""
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        raise PermanentError(f"the source folder {folder} does not exist") from None
    except OSError as exc:
        raise TransientError(f"cannot list the source folder {folder}: {exc.strerror}") from exc
    names = sorted(e.name for e in entries if fnmatch.fnmatchcase(e.name, pattern))
    found = []
    for name in names:
        real = check(str(folder / name))
        if real.is_file():
            found.append(name)
    return found


@dataclass(frozen=True)
class Fingerprint:
    """What a file was when it was planned: size, modification time, and a hash of its first
    and last ``EDGE_BYTES``. Written into each chunk bound as ``size:mtime_ns:hash``."""

    size: int
    mtime_ns: int
    digest: str

    def text(self) -> str:
        return f"{self.size}:{self.mtime_ns}:{self.digest}"

    @classmethod
    def parse(cls, text: str) -> Fingerprint:
        size, mtime, digest = text.split(":")
        return cls(int(size), int(mtime), digest)

    def change_from(self, planned: Fingerprint) -> str | None:
        """What differs from the planned fingerprint, in words; None when nothing does."""
        if self.size != planned.size:
            return f"its size went from {planned.size} to {self.size} bytes"
        if self.mtime_ns != planned.mtime_ns:
            return "it was modified (its modification time changed)"
        if self.digest != planned.digest:
            return "its content changed"
        return None


def fingerprint(path: Path) -> Fingerprint:
    try:
        with open(path, "rb") as fh:
            stat = os.fstat(fh.fileno())
            digest = hashlib.sha256(fh.read(EDGE_BYTES))
            if stat.st_size > EDGE_BYTES:
                fh.seek(max(EDGE_BYTES, stat.st_size - EDGE_BYTES))
                digest.update(fh.read(EDGE_BYTES))
    except FileNotFoundError:
        raise PermanentError(f"file {path.name!r} is gone from the source folder") from None
    except OSError as exc:
        raise TransientError(f"cannot read {path.name!r}: {exc.strerror}") from exc
    return Fingerprint(stat.st_size, stat.st_mtime_ns, digest.hexdigest()[:16])
