"""Assertions every migration test ends with: target equals source, nothing twice."""

from __future__ import annotations

from typing import Any

from etl_tasks.connectors.sql.engines import create_sql_engine
from etl_tasks.connectors.sql.ledger import committed_chunks
from etl_tasks.spec import parse_spec
from etl_tasks.state.db import StateDB
from etl_tasks.verify import quarantine_keys, verify
from etl_tasks.views import migration_view


def assert_migrated(
    db: StateDB, migration_id: str, spec: dict[str, Any], expected_bad: dict[str, int] | None = None
) -> dict[str, Any]:
    """The migration succeeded; every stream's target equals its source; counts agree."""
    view = migration_view(db, migration_id)
    assert view["state"] == "succeeded", view
    parsed = parse_spec(spec)
    source = create_sql_engine(parsed.sql("source").unchecked_url())
    target = create_sql_engine(parsed.sql("target").unchecked_url())
    try:
        checks = verify(parsed, source, target, quarantine_keys(db, migration_id))
        ledger_rows = _ledger(target, migration_id)
    finally:
        source.dispose()
        target.dispose()
    streams = {st["name"]: st for st in view["streams"]}
    for check in checks:
        st = streams[check.name]
        assert check.ok, (check.name, check.missing[:5], check.unexpected[:5], check.different[:5])
        assert st["rows_loaded"] == check.target_rows == check.expected_rows, (st, check)
        assert st["rows_quarantined"] == check.bad_rows, (st, check)
        if expected_bad is not None:
            assert check.bad_rows == expected_bad.get(check.name, 0), check
        assert st["chunks_done"] == st["chunks_total"] == ledger_rows.get(check.name, 0), (
            st,
            ledger_rows,
        )
    return view


def _ledger(engine: Any, migration_id: str) -> dict[str, int]:
    with engine.connect() as conn:
        return committed_chunks(conn, migration_id)
