"""Tokens and roles on a real API: what an operator or a viewer cannot do, and what is kept.

(The token-less routes, the answer headers and the schema are exercised by
``tests/e2e/test_api_http.py`` and ``tests/e2e/test_api_schema.py``.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import requests
from sqlalchemy import select

from etl_tasks.state.models import Event
from tests.data import build_source, spec_for, sqlite_url
from tests.security.conftest import Live, errors_of
from tests.security.listeners import closed_port


def _spec(tmp_path: Path, name: str = "roles") -> dict[str, Any]:
    legacy = tmp_path / "legacy.db"
    if not legacy.exists():
        build_source(sqlite_url(legacy), customers=5, orders=1)
    spec = spec_for(sqlite_url(legacy), sqlite_url(tmp_path / f"{name}.db"))
    spec["name"] = name
    return spec


def test_an_operator_cannot_mint_or_list_tokens_and_an_admin_sees_no_hashes(live: Live) -> None:
    assert (
        live.request(
            "POST", "/api/v1/tokens", "operator", json={"name": "x", "role": "admin"}
        ).status_code
        == 403
    )
    assert live.request("GET", "/api/v1/tokens", "operator").status_code == 403
    listed = live.request("GET", "/api/v1/tokens", "admin")
    assert listed.status_code == 200
    hashes = {h for _, _, h in live.token_rows()}
    assert not [h for h in hashes if h in listed.text]
    assert not [t for t in live.tokens.values() if t in listed.text]


def test_a_revoked_token_is_refused_at_once(live: Live) -> None:
    made = live.request(
        "POST", "/api/v1/tokens", "admin", json={"name": "temp", "role": "operator"}
    )
    assert made.status_code == 201
    token, token_id = made.json()["token"], made.json()["id"]
    headers = {"Authorization": f"Bearer {token}"}
    assert requests.get(live.api.url + "/api/v1/migrations", headers=headers, timeout=10).ok
    assert live.request("DELETE", f"/api/v1/tokens/{token_id}", "admin").status_code == 200
    again = requests.get(live.api.url + "/api/v1/migrations", headers=headers, timeout=10)
    assert again.status_code == 401


def test_a_viewer_cannot_submit_or_control(live: Live, tmp_path: Path) -> None:
    assert live.submit(_spec(tmp_path), role="viewer").status_code == 403
    created = live.submit(_spec(tmp_path))
    assert created.status_code == 201, created.text
    mid = created.json()["id"]
    for action in ("pause", "resume", "cancel", "retry"):
        assert (
            live.request("POST", f"/api/v1/migrations/{mid}/{action}", "viewer").status_code == 403
        )
    workers = live.request("GET", "/api/v1/workers", "viewer").json()["items"]
    assert all(w["probe_url"] is None for w in workers)


def test_failed_logins_are_throttled_and_a_valid_token_never_is(live_factory: Any) -> None:
    live = live_factory(auth_failures_max=5, auth_failures_window_s=30)
    bad = {"Authorization": "Bearer bt_guessing"}
    codes = [
        requests.get(live.api.url + "/api/v1/migrations", headers=bad, timeout=10).status_code
        for _ in range(8)
    ]
    assert codes[:5] == [401] * 5 and set(codes[5:]) == {429}
    throttled = requests.get(live.api.url + "/api/v1/migrations", headers=bad, timeout=10)
    assert 0 < int(throttled.headers["Retry-After"]) <= 30
    assert live.request("GET", "/api/v1/migrations", "viewer").status_code == 200


def test_idempotency_keys_belong_to_the_token_that_sent_them(
    live_factory: Any, tmp_path: Path
) -> None:
    live = live_factory()
    live.tokens["other"] = live.request(
        "POST", "/api/v1/tokens", "admin", json={"name": "other", "role": "operator"}
    ).json()["token"]
    spec, key = _spec(tmp_path, "idem"), {"Idempotency-Key": "nightly-1"}
    first = live.request("POST", "/api/v1/migrations", "operator", json=spec, headers=key)
    replay = live.request("POST", "/api/v1/migrations", "operator", json=spec, headers=key)
    other = live.request("POST", "/api/v1/migrations", "other", json=spec, headers=key)
    assert first.status_code == replay.status_code == other.status_code == 201
    assert replay.json()["id"] == first.json()["id"]
    assert other.json()["id"] != first.json()["id"]
    assert replay.headers.get("Idempotent-Replayed") == "true"
    assert "Idempotent-Replayed" not in other.headers


def test_submits_and_controls_record_who_asked(live: Live, tmp_path: Path) -> None:
    mid = live.submit(_spec(tmp_path)).json()["id"]
    assert live.request("POST", f"/api/v1/migrations/{mid}/pause", "operator").status_code == 200
    assert live.request("POST", f"/api/v1/migrations/{mid}/cancel", "admin").status_code == 200
    with live.db.reading() as s:
        events = s.execute(
            select(Event.kind, Event.actor).where(Event.migration_id == mid).order_by(Event.id)
        ).all()
    actors = {kind: actor for kind, actor in events}
    assert actors["submitted"].endswith("(operator-1)")
    assert actors["pause"].endswith("(operator-1)")
    assert actors["cancel"].endswith("(admin-1)")


def test_only_an_admin_sees_the_drivers_own_words(live: Live, tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    spec["target"] = {"url": f"postgresql://u@127.0.0.1:{closed_port()}/x"}
    operator = errors_of(live.submit(spec, role="operator"))["target/url"]
    admin = errors_of(live.submit(spec, role="admin"))["target/url"]
    assert operator == "cannot connect to the target"
    assert admin.startswith("cannot connect to the target: ") and len(admin) > len(operator) + 5
