"""Table and column names a spec may use, by the rules of each database.

``baton_*`` tables are Baton's own (the target ledger, the state marker): no
stream may read or write one. System schemas (``pg_catalog``, ``mysql``, …)
hold the server's own secrets. Identifiers longer than a database allows are
refused here rather than truncated there (PostgreSQL silently cuts them at 63
bytes, so a long name would reach another table).
"""

from __future__ import annotations

RESERVED_TABLE_PREFIXES = ("baton_", "_baton")
SYSTEM_SCHEMAS = {
    "postgresql": ("pg_catalog", "information_schema", "pg_toast"),
    "mysql": ("mysql", "information_schema", "performance_schema", "sys"),
    "mariadb": ("mysql", "information_schema", "performance_schema", "sys"),
    "sqlite": (),
}
_PG_TEMP_PREFIXES = ("pg_temp", "pg_toast_temp")


def is_reserved_table(name: str) -> bool:
    """Whether ``name`` (``table`` or ``schema.table``) is one of Baton's own tables."""
    table = name.rsplit(".", 1)[-1].strip().strip('"`').lower()
    return table.startswith(RESERVED_TABLE_PREFIXES)


def control_character(name: str) -> bool:
    return any(ord(ch) < 32 or ord(ch) == 127 for ch in name)


def identifier_problem(name: str, backend: str) -> str | None:
    """Why ``name`` cannot be used on ``backend``, or ``None`` when it can."""
    parts = name.split(".", 1) if "." in name else [name]
    schema = parts[0].lower() if len(parts) == 2 else None
    if schema is not None and (
        schema in SYSTEM_SCHEMAS.get(backend, ())
        or (backend == "postgresql" and schema.startswith(_PG_TEMP_PREFIXES))
    ):
        return f"schema {parts[0]!r} belongs to the database server"
    for part in parts:
        if backend == "postgresql" and len(part.encode()) > 63:
            return f"{part[:20]!r}… is longer than PostgreSQL's 63 bytes"
        if backend in ("mysql", "mariadb") and len(part) > 64:
            return f"{part[:20]!r}… is longer than MySQL's 64 characters"
        if backend in ("mysql", "mariadb") and part != part.rstrip():
            return f"{part!r} ends with a space, which MySQL does not allow"
    if backend == "sqlite" and parts[-1].lower().startswith("sqlite_"):
        return f"{parts[-1]!r} is one of SQLite's own tables"
    return None
