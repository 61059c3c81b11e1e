"""Lists tell their total and their next page; events; quarantined rows in plain JSON,
as a page or as a whole download (CSV, JSON Lines), masked for viewers.

On a PostgreSQL state DB, as in production, with tokens on.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

from etl_tasks.codec import encode_value, quarantine_key
from etl_tasks.settings import Settings
from etl_tasks.state.models import Chunk, Migration, QuarantinedRow, Stream
from tests.integration.api_support import MIGRATIONS, Api, Spec, bearer, error_body, make_api

STORED_ROW = {
    "amount": {"$": "dec", "v": "12.50"},
    "paid_at": {"$": "dt", "v": "2024-01-02T03:04:05.000006"},
    "photo": {"$": "b", "v": "AAEC"},
    "late_by": {"$": "td", "v": 90_061_500_000},
    "ref": {"$": "uuid", "v": "12345678-1234-5678-1234-567812345678"},
    "big": {"$": "int", "v": "123456789012345678901234567890"},
    "tags": {"$": "json", "v": {"a": [1, 2]}},
    "name": "Zoë",
    "qty": 3,
    "note": None,
}
PLAIN_ROW = {
    "amount": "12.50",
    "paid_at": "2024-01-02T03:04:05.000006",
    "photo": "AAEC",
    "late_by": "PT90061.5S",
    "ref": "12345678-1234-5678-1234-567812345678",
    "big": "123456789012345678901234567890",
    "tags": {"a": [1, 2]},
    "name": "Zoë",
    "qty": 3,
    "note": None,
}
MASKED_ROW = {c: None if v is None else "***" for c, v in PLAIN_ROW.items()}
MANY = 1205  # more than a default page, and more than the list once capped itself at


@pytest.fixture
def pg_api(make_settings: Callable[..., Settings], pg_state_url: str) -> Api:
    return make_api(make_settings(database_url=pg_state_url, auth="on"))


def _quarantine(api: Api, migration_id: str, n: int) -> None:
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
        s.add_all(
            QuarantinedRow(
                migration_id=migration_id,
                stream_id=stream.id,
                chunk_id=chunk.id,
                key=quarantine_key([Decimal(i) / 2]),
                reason=f"amount: not an integer: '{i}.5'",
                row=STORED_ROW,
                fencing_token=1,
                created_at=now,
            )
            for i in range(n)
        )


def _get(api: Api, path: str, token: str) -> Any:
    resp = api.client.get(path, headers=bearer(token))
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return resp


def _walk(api: Api, path: str, token: str, limit: int) -> tuple[list[Any], set[int]]:
    """Every item of a list, following next; and the totals each page told."""
    items: list[Any] = []
    totals: set[int] = set()
    sep = "&" if "?" in path else "?"
    url = f"{path}{sep}limit={limit}"
    while True:
        page = _get(api, url, token).get_json()
        assert set(page) >= {"items", "total", "next"}
        assert len(page["items"]) <= limit
        items += page["items"]
        totals.add(page["total"])
        if page["next"] is None:
            return items, totals
        url = f"{path}{sep}limit={limit}&cursor={page['next']}"


def test_migration_lists_page_by_cursor_and_tell_their_total(pg_api: Api, spec: Spec) -> None:
    # Given five migrations
    operator = pg_api.token("operator")
    ids = [pg_api.created({**spec, "name": f"m{i}"}, bearer(operator)) for i in range(5)]
    viewer = pg_api.token("viewer")
    # When a viewer walks the list two at a time
    items, totals = _walk(pg_api, MIGRATIONS, viewer, 2)
    # Then every migration comes once, newest first, and every page told the same total
    assert [m["id"] for m in items] == [
        m["id"] for m in _get(pg_api, MIGRATIONS, viewer).json["items"]
    ]
    assert sorted(m["id"] for m in items) == sorted(ids)
    assert totals == {5}
    # And a filter counts only what it matches; an id prefix narrows to that id
    page = _get(pg_api, f"{MIGRATIONS}?state=pending&limit=1", viewer).get_json()
    assert page["total"] == 5 and len(page["items"]) == 1 and page["next"]
    by_prefix = _get(pg_api, f"{MIGRATIONS}?prefix={ids[3][:12]}", viewer).get_json()
    assert [m["id"] for m in by_prefix["items"]] == [ids[3]] and by_prefix["total"] == 1
    assert _get(pg_api, f"{MIGRATIONS}?prefix=%25", viewer).get_json()["total"] == 0


def test_chunks_page_by_cursor(pg_api: Api, spec: Spec) -> None:
    operator = pg_api.token("operator")
    mid = pg_api.created(spec, bearer(operator))
    db = pg_api.app.extensions["baton"].db
    with db.session() as s:
        stream = s.scalars(select(Stream).where(Stream.migration_id == mid)).first()
        assert stream is not None
        now = db.now(s)
        for seq in range(7):
            s.add(
                Chunk(
                    migration_id=mid,
                    stream_id=stream.id,
                    seq=seq,
                    state="done" if seq % 2 else "pending",
                    step="extract",
                    created_at=now,
                )
            )
    items, totals = _walk(pg_api, f"{MIGRATIONS}/{mid}/chunks", operator, 3)
    assert [c["seq"] for c in items] == list(range(7)) and totals == {7}
    done, totals = _walk(pg_api, f"{MIGRATIONS}/{mid}/chunks?state=done", operator, 2)
    assert [c["seq"] for c in done] == [1, 3, 5] and totals == {3}


@pytest.mark.parametrize(
    "query",
    [
        "?limit=0",
        "?limit=1001",
        "?limit=ten",
        "?cursor=not-a-cursor",
        "?cursor=WyJ4IiwieSJd",  # a well-formed cursor whose time is no time
        "?prefix=" + "a" * 33,
    ],
)
def test_a_list_refuses_a_limit_or_cursor_it_cannot_honour(
    pg_api: Api, spec: Spec, query: str
) -> None:
    error_body(pg_api.client.get(MIGRATIONS + query, headers=bearer(pg_api.token("viewer"))), 400)


def test_events_say_what_happened_and_who_asked(pg_api: Api, spec: Spec) -> None:
    # Given a migration an operator submitted, paused, resumed and cancelled
    operator = pg_api.token("operator", "alice")
    mid = pg_api.created(spec, bearer(operator))
    for action in ("pause", "resume", "cancel"):
        assert pg_api.control(mid, action, bearer(operator)).status_code == 200
    viewer = pg_api.token("viewer")
    # When a viewer reads its events
    events = _get(pg_api, f"{MIGRATIONS}/{mid}/events", viewer).get_json()
    # Then they come oldest first, each with its actor
    asked = [e for e in events["items"] if e["actor"]]
    assert [e["kind"] for e in asked] == ["submitted", "pause", "resume", "cancel"]
    assert {e["actor"] for e in asked} == {asked[0]["actor"]}
    assert asked[0]["actor"].endswith("(alice)")
    assert events["total"] == len(events["items"]) and events["next"] is None
    ids = [e["id"] for e in events["items"]]
    assert ids == sorted(ids)
    # And paging by `after` (an event id) gives the rest, without the one given
    rest = _get(pg_api, f"{MIGRATIONS}/{mid}/events?after={ids[1]}&limit=2", viewer).get_json()
    assert [e["id"] for e in rest["items"]] == ids[2:4]
    assert rest["next"] == (str(ids[3]) if len(ids) > 4 else None)
    walked, _ = _walk(pg_api, f"{MIGRATIONS}/{mid}/events", viewer, 1)
    assert [e["id"] for e in walked] == ids
    # And a cursor and an `after` at once, or an unknown migration, are refused
    both = f"{MIGRATIONS}/{mid}/events?after=1&cursor=1"
    error_body(pg_api.client.get(both, headers=bearer(viewer)), 400)
    error_body(pg_api.client.get(f"{MIGRATIONS}/{'0' * 32}/events", headers=bearer(viewer)), 404)


def test_quarantine_list_pages_with_plain_values(pg_api: Api, spec: Spec) -> None:
    # Given more quarantined rows than a page holds, with typed values
    operator = pg_api.token("operator")
    mid = pg_api.created(spec, bearer(operator))
    _quarantine(pg_api, mid, MANY)
    path = f"{MIGRATIONS}/{mid}/quarantine"
    # When an operator lists them
    first = _get(pg_api, path, operator).get_json()
    # Then the page says there are more, and its values are plain JSON
    assert len(first["items"]) == 1000 and first["total"] == MANY and first["next"]
    item = first["items"][0]
    assert item["row"] == PLAIN_ROW
    assert item["key"] == quarantine_key([Decimal(0)]) and item["key_values"] == ["0"]
    rest = _get(pg_api, f"{path}?cursor={first['next']}", operator).get_json()
    assert len(rest["items"]) == MANY - 1000 and rest["next"] is None
    assert rest["items"][-1]["key_values"] == [str(Decimal(MANY - 1) / 2)]


def test_quarantine_downloads_every_row(pg_api: Api, spec: Spec) -> None:
    operator = pg_api.token("operator")
    mid = pg_api.created(spec, bearer(operator))
    _quarantine(pg_api, mid, MANY)
    path = f"{MIGRATIONS}/{mid}/quarantine"
    # When an operator downloads them as JSON Lines, then as CSV
    lines = _get(pg_api, f"{path}?format=jsonl", operator)
    csv_answer = _get(pg_api, f"{path}?format=csv", operator)
    # Then every row is there, values plain
    assert lines.mimetype == "application/x-ndjson"
    rows = [json.loads(line) for line in lines.get_data(as_text=True).splitlines()]
    assert len(rows) == MANY and rows[0]["row"] == PLAIN_ROW
    assert rows[0]["reason"] == "amount: not an integer: '0.5'"
    assert csv_answer.mimetype == "text/csv"
    assert "attachment" in csv_answer.headers["Content-Disposition"]
    table = list(csv.DictReader(io.StringIO(csv_answer.get_data(as_text=True))))
    assert len(table) == MANY
    assert json.loads(table[1]["row"]) == PLAIN_ROW and json.loads(table[1]["key"]) == ["0.5"]
    assert table[1]["stream"] == rows[1]["stream"] and table[1]["status"] == "quarantined"


@pytest.mark.parametrize("fmt", ["json", "jsonl", "csv"])
def test_a_viewer_downloads_masked_values(pg_api: Api, spec: Spec, fmt: str) -> None:
    mid = pg_api.created(spec, bearer(pg_api.token("operator")))
    _quarantine(pg_api, mid, 3)
    answer = _get(pg_api, f"{MIGRATIONS}/{mid}/quarantine?format={fmt}", pg_api.token("viewer"))
    text = answer.get_data(as_text=True)
    if fmt == "json":
        rows = [i["row"] for i in answer.get_json()["items"]]
        reasons = [i["reason"] for i in answer.get_json()["items"]]
    elif fmt == "jsonl":
        rows = [json.loads(line)["row"] for line in text.splitlines()]
        reasons = [json.loads(line)["reason"] for line in text.splitlines()]
    else:
        table = list(csv.DictReader(io.StringIO(text)))
        rows = [json.loads(r["row"]) for r in table]
        reasons = [r["reason"] for r in table]
    assert rows == [MASKED_ROW] * 3
    assert reasons == ["amount: not an integer: '***'"] * 3
    assert "12.50" not in text and "AAEC" not in text


def test_quarantine_download_refusals(pg_api: Api, spec: Spec) -> None:
    viewer = pg_api.token("viewer")
    mid = pg_api.created(spec, bearer(pg_api.token("operator")))
    error_body(
        pg_api.client.get(f"{MIGRATIONS}/{mid}/quarantine?format=xml", headers=bearer(viewer)), 400
    )
    unknown = f"{MIGRATIONS}/{'0' * 32}/quarantine?format=csv"
    error_body(pg_api.client.get(unknown, headers=bearer(viewer)), 404)
    empty = _get(pg_api, f"{MIGRATIONS}/{mid}/quarantine?format=csv", viewer)
    assert empty.get_data(as_text=True) == "id,stream,chunk_id,key,status,reason,row\r\n"
    assert _get(pg_api, f"{MIGRATIONS}/{mid}/quarantine?format=jsonl", viewer).data == b""


def test_plain_values_of_every_tag() -> None:
    from datetime import date, time, timedelta

    from etl_tasks.codec import plain_value

    assert plain_value(encode_value(Decimal("-0.10"))) == "-0.10"
    assert plain_value(encode_value(date(2024, 2, 29))) == "2024-02-29"
    assert plain_value(encode_value(time(23, 59, 1))) == "23:59:01"
    assert plain_value(encode_value(timedelta(days=-1, microseconds=1))) == "-PT86399.999999S"
    assert plain_value(encode_value(timedelta(0))) == "PT0S"
    assert plain_value(encode_value(bytes([0, 255]))) == "AP8="
    assert plain_value(encode_value(float("inf"))) == "inf"
    assert plain_value({"$": "x", "v": 1}) == {"$": "x", "v": 1}  # not a tag: a JSON object


def test_migrations_made_at_the_same_instant_page_without_gaps(
    each_state_db: Callable[..., Settings],
) -> None:
    # Given migrations recorded at one and the same instant (ties on created_at)
    api = make_api(each_state_db())
    db = api.app.extensions["baton"].db
    with db.session() as s:
        now = db.now(s)
        ids = [f"{n:032x}" for n in range(7)]
        for mid in ids:
            s.add(
                Migration(id=mid, name=mid, spec={}, state="paused", created_at=now, updated_at=now)
            )
    # When the list is walked two at a time
    items, totals = _walk(api, MIGRATIONS, "", 2)
    # Then each comes once, ties in id order
    assert [m["id"] for m in items] == ids and totals == {7}
