"""Which codec a file is read with: the spec's, or (``"auto"``) a guess from its bytes.

Records are found by splitting bytes at the codec's newline, so a codec qualifies when
its newline is a fixed byte sequence that no other character contains at the same
alignment: every ASCII-compatible codec (UTF-8, Windows-1252, Latin-1, …), and UTF-16
and UTF-32 (split on code-unit boundaries). A BOM at a file's start is skipped whenever
it matches the codec; ``utf-16`` and ``utf-32`` read one to learn their byte order
(little-endian without one).
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass
from pathlib import Path

AUTO = "auto"
FALLBACK = "cp1252"  # what "auto" takes a file that is not UTF-8 for
_BLOCK = 1 << 20

#: BOMs by the codec they announce, longest first (UTF-32 LE starts like UTF-16 LE).
_BOMS: list[tuple[bytes, str]] = [
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
]
_BY_ORDER = {"utf-16": ("utf-16-le", "utf-16-be"), "utf-32": ("utf-32-le", "utf-32-be")}


@dataclass(frozen=True)
class Encoding:
    """How one file's bytes become text."""

    codec: str  # a codec that reads no BOM itself: utf-8, utf-16-le, cp1252, …
    bom: int  # bytes of BOM at the file's start, skipped
    unit: int  # bytes per code unit: a newline counts only at a multiple of it
    newline: bytes

    def describe(self) -> str:
        return f"{self.codec} with BOM" if self.bom else self.codec


def canonical(name: str) -> str:
    """The codec's own name for an alias (``latin1`` → ``iso8859-1``, ``UTF8`` → ``utf-8``)."""
    return codecs.lookup(name).name


def bom_of(head: bytes) -> str | None:
    for bom, codec in _BOMS:
        if head.startswith(bom):
            return codec
    return None


def resolve(name: str, head: bytes) -> Encoding:
    """The encoding ``name`` (a codec name or alias, not ``auto``) means for a file starting
    with ``head``; raises ``ValueError`` for a codec whose newline cannot be found by bytes."""
    codec = canonical(name)
    if codec == "utf-8-sig":
        codec = "utf-8"
    found = bom_of(head)
    if codec in _BY_ORDER:
        little, big = _BY_ORDER[codec]
        codec = found if found in (little, big) else little
    bom = len(_bom_bytes(codec)) if found == codec else 0
    newline = "\n".encode(codec)
    unit = len("\x00".encode(codec))
    if len(newline) != unit or "\r\n".encode(codec) != "\r".encode(codec) + newline:
        raise ValueError(f"encoding {name!r} has no fixed newline: give another")
    if unit == 1 and newline != b"\n":
        raise ValueError(f"encoding {name!r} is not ASCII-compatible: give another")
    return Encoding(codec, bom, unit, newline)


def detect(path: Path, head_only: bool = False) -> tuple[Encoding, str]:
    """``auto``: a BOM says it; else UTF-8 when every byte of the file is valid UTF-8, else
    Windows-1252. Returns the encoding and why it was chosen (for the migration's events).

    ``head_only`` looks at the first MiB only: preflight's quick guess, to read a header
    and a few records within its deadline (planning decides on the whole file)."""
    with open(path, "rb") as fh:
        head = fh.read(4)
        found = bom_of(head)
        if found is not None:
            return resolve(found, head), f"its BOM says {found}"
        fh.seek(0)
        decoder = codecs.getincrementaldecoder("utf-8")()
        try:
            while block := fh.read(_BLOCK):
                decoder.decode(block)
                if head_only:
                    return resolve("utf-8", head), "its first MiB is valid UTF-8"
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return resolve(FALLBACK, head), f"it is not valid UTF-8, so {FALLBACK} was assumed"
    return resolve("utf-8", head), "every byte is valid UTF-8"


def _bom_bytes(codec: str) -> bytes:
    for bom, name in _BOMS:
        if name == codec:
            return bom
    return b""
