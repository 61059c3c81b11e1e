"""Quarantine keys of any length, through expand (0003) then contract (0004).

Each phase is run against a real state DB (PostgreSQL and SQLite) while rows are
written the way the version before it writes them (no ``key_hash``) and the way
this version does, to show that both versions keep working at every step.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import insert, inspect, select, text

from etl_tasks.state.db import StateDB, upgrade
from etl_tasks.state.models import Chunk, Migration, QuarantinedRow, Stream, quarantine_key_hash

NOW = datetime(2026, 12, 2, 12, 0, 0)
OLD_INSERT = text(
    "INSERT INTO quarantine (migration_id, stream_id, chunk_id, key, reason, fencing_token, "
    "created_at) VALUES ('m1', :stream, :chunk, :key, 'bad', 1, :at)"
)


@pytest.fixture(params=["postgresql", "sqlite"])
def state_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'state.db'}"
    else:
        yield request.getfixturevalue("pg_url")


def _a_chunk(db: StateDB) -> tuple[int, int]:
    with db.session() as s:
        # Only the columns revision 0002 has: the model's later ones do not exist yet here.
        s.execute(
            insert(Migration).values(
                id="m1", name="m", spec={}, state="running", created_at=NOW, updated_at=NOW
            )
        )
        stream_id = s.execute(
            insert(Stream).values(
                migration_id="m1",
                name="items",
                position=0,
                state="running",
                prepared=True,
                key_columns=["id"],
                fully_planned=True,
                plan_seq=1,
                chunk_rows=10,
            )
        ).inserted_primary_key[0]
        chunk = Chunk(
            migration_id="m1",
            stream_id=stream_id,
            seq=1,
            state="running",
            step="load",
            attempts=0,
            retries=0,
            lease_token=1,
            created_at=NOW,
        )
        s.add(chunk)
        s.flush()
        return stream_id, chunk.id


def _old_version_writes(db: StateDB, ids: tuple[int, int], key: str) -> None:
    """An insert as the version before 0003 makes it: no key_hash."""
    with db.engine.begin() as conn:
        conn.execute(OLD_INSERT, {"stream": ids[0], "chunk": ids[1], "key": key, "at": NOW})


def _this_version_writes(db: StateDB, ids: tuple[int, int], key: str) -> None:
    """An insert as the version that brought 0003 and 0004 makes it: with key_hash (the
    columns later scripts add are left out: the state DB may not have them yet)."""
    table = QuarantinedRow.__table__
    with db.engine.begin() as conn:
        conn.execute(
            insert(table).values(
                migration_id="m1",
                stream_id=ids[0],
                chunk_id=ids[1],
                key=key,
                key_hash=quarantine_key_hash(key),
                reason="bad",
                row=None,
                fencing_token=1,
                created_at=NOW,
            )
        )


def _hashes(db: StateDB) -> dict[str, str | None]:
    with db.engine.connect() as conn:
        rows = conn.execute(select(QuarantinedRow.key, QuarantinedRow.key_hash)).all()
    return {k[:20]: h for k, h in rows}


def _sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def test_expand_then_contract_with_both_versions_writing(state_url: str) -> None:
    # Given a state DB at 0002 where the version before this one quarantined a row
    upgrade(state_url, "0002")
    db = StateDB(state_url)
    ids = _a_chunk(db)
    _old_version_writes(db, ids, '["k1"]')
    long_key = '["' + secrets.token_urlsafe(7500)[:10_000] + '"]'

    # When the expand script runs: both versions write, each keeps its rows unique
    upgrade(state_url, "0003")
    db.dispose()
    assert _hashes(db)['["k1"]'] == _sha('["k1"]')  # backfilled
    _old_version_writes(db, ids, '["k2"]')
    _this_version_writes(db, ids, '["k3"]')
    assert _hashes(db)['["k2"]'] is None and _hashes(db)['["k3"]'] == _sha('["k3"]')
    for writes, key in ((_old_version_writes, '["k2"]'), (_this_version_writes, '["k3"]')):
        with pytest.raises(sa_exc.IntegrityError):
            writes(db, ids, key)
    if db.dialect == "postgresql":  # the raw-key btree still refuses a long key
        with pytest.raises(sa_exc.DBAPIError):
            _this_version_writes(db, ids, long_key)

    # When the contract script runs (the old version may still be running)
    upgrade(state_url, "head")
    db.dispose()
    # Then every row has its hash, and a key of any length is kept whole, once
    assert _hashes(db)['["k2"]'] == _sha('["k2"]')
    _this_version_writes(db, ids, long_key)
    with pytest.raises(sa_exc.IntegrityError):
        _this_version_writes(db, ids, long_key)
    _old_version_writes(db, ids, '["k4"]')  # the old version's inserts still work
    with db.engine.connect() as conn:
        keys = conn.execute(select(QuarantinedRow.key)).scalars().all()
        raw = [
            uq
            for uq in inspect(conn).get_unique_constraints("quarantine")
            if uq["column_names"] == ["stream_id", "chunk_id", "key"]
        ]
    assert long_key in keys and len(keys) == 5
    assert raw == []
    db.dispose()
