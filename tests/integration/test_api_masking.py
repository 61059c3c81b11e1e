"""Viewers see quarantined rows masked and no worker probe; operators and admins see all."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from etl_tasks.state.models import Chunk, QuarantinedRow, Stream
from etl_tasks.workers import WorkerInfo, heartbeat
from tests.integration.api_support import MIGRATIONS, Api, Spec, bearer

ROW = {"CustomerId": 5, "Email": "bob@example.com", "Phone": None}
REASONS = [
    "BirthDate: not a date: '31/04/2018'",
    "duplicate key value violates unique constraint DETAIL:  Key (id)=(5) already exists.",
]


def _quarantine_two_rows(api: Api, migration_id: str) -> None:
    db = api.app.extensions["baton"].db
    with db.session() as s:
        stream = s.scalars(select(Stream).where(Stream.migration_id == migration_id)).first()
        assert stream is not None
        now = db.now(s)
        chunk = Chunk(
            migration_id=migration_id,
            stream_id=stream.id,
            seq=0,
            state="done",
            step="load",
            created_at=now,
        )
        s.add(chunk)
        s.flush()
        for n, reason in enumerate(REASONS):
            s.add(
                QuarantinedRow(
                    migration_id=migration_id,
                    stream_id=stream.id,
                    chunk_id=chunk.id,
                    key=f"[{n}]",
                    reason=reason,
                    row=ROW,
                    fencing_token=1,
                    created_at=now,
                )
            )


def _items(api: Api, path: str, role: str) -> list[dict[str, object]]:
    resp = api.client.get(path, headers=bearer(api.token(role)))
    assert resp.status_code == 200, resp.get_data(as_text=True)
    items: list[dict[str, object]] = resp.get_json()["items"]
    return items


def test_a_viewer_sees_quarantined_rows_masked(secured: Api, spec: Spec) -> None:
    # Given a migration with two quarantined rows
    mid = secured.created(spec, bearer(secured.token("operator")))
    _quarantine_two_rows(secured, mid)
    # When a viewer lists them
    items = _items(secured, f"{MIGRATIONS}/{mid}/quarantine", "viewer")
    # Then every value is masked (nulls stay null), and so are the reasons' literals
    assert [i["row"] for i in items] == [{"CustomerId": "***", "Email": "***", "Phone": None}] * 2
    assert [i["reason"] for i in items] == [
        "BirthDate: not a date: '***'",
        "duplicate key value violates unique constraint DETAIL:  Key (id)=(***) already exists.",
    ]
    assert [i["key"] for i in items] == ["[0]", "[1]"]


@pytest.mark.parametrize("role", ["operator", "admin"])
def test_operators_and_admins_see_whole_rows(secured: Api, spec: Spec, role: str) -> None:
    mid = secured.created(spec, bearer(secured.token("operator")))
    _quarantine_two_rows(secured, mid)
    items = _items(secured, f"{MIGRATIONS}/{mid}/quarantine", role)
    assert [i["row"] for i in items] == [ROW, ROW]
    assert [i["reason"] for i in items] == REASONS


def _register_worker(api: Api) -> None:
    info = WorkerInfo("w1@host", "0.1.0", "host", 123, "http://10.1.2.3:8081")
    heartbeat(api.app.extensions["baton"].db, info, state="active", in_flight=0, steps_done=0)


def test_a_viewer_is_not_told_where_worker_probes_listen(secured: Api) -> None:
    _register_worker(secured)
    assert [w["probe_url"] for w in _items(secured, "/api/v1/workers", "viewer")] == [None]
    for role in ("operator", "admin"):
        probes = [w["probe_url"] for w in _items(secured, "/api/v1/workers", role)]
        assert probes == ["http://10.1.2.3:8081"]
