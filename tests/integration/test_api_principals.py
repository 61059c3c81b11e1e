"""Who is asking: the principal a view sees, the actor events record, whose keys replay."""

from __future__ import annotations

import re
from dataclasses import asdict

import pytest
from flask import jsonify
from flask.typing import ResponseReturnValue
from sqlalchemy import select

from api.auth import current_principal, require
from etl_tasks.state.models import Event, Migration
from etl_tasks.tokens import authenticate
from tests.integration.api_support import Api, Spec, bearer, error_body


def _whoami() -> ResponseReturnValue:
    who = current_principal()
    return jsonify({**asdict(who), "is_admin": who.is_admin})


def _add_whoami(api: Api) -> None:
    api.app.add_url_rule("/test/whoami", view_func=require("viewer")(_whoami))


@pytest.mark.parametrize("role", ["viewer", "operator", "admin"])
def test_a_view_knows_the_tokens_principal(secured: Api, role: str) -> None:
    _add_whoami(secured)
    token = secured.token(role, name="alice")
    principal = authenticate(secured.app.extensions["baton"].db, token)
    assert principal is not None
    resp = secured.client.get("/test/whoami", headers=bearer(token))
    assert resp.get_json() == {
        "name": "alice",
        "role": role,
        "token_id": principal.token_id,
        "is_admin": role == "admin",
    }


def test_with_auth_off_every_caller_is_the_local_admin(api: Api) -> None:
    _add_whoami(api)
    resp = api.client.get("/test/whoami", headers=bearer("bt_anything"))
    assert resp.get_json() == {"name": "local", "role": "admin", "token_id": None, "is_admin": True}


def test_the_principal_is_unknown_outside_a_view_that_requires_a_role(api: Api) -> None:
    with api.app.test_request_context("/healthz"), pytest.raises(RuntimeError):
        current_principal()


# --- owners and actors -----------------------------------------------------------------------


def _events(api: Api, migration_id: str) -> list[tuple[str, str | None]]:
    with api.app.extensions["baton"].db.reading() as s:
        rows = s.scalars(select(Event).where(Event.migration_id == migration_id).order_by(Event.id))
        return [(e.kind, e.actor) for e in rows]


def _owner(api: Api, migration_id: str) -> str | None:
    with api.app.extensions["baton"].db.reading() as s:
        return s.scalar(select(Migration.owner).where(Migration.id == migration_id))


def _token_id(api: Api, token: str) -> int:
    principal = authenticate(api.app.extensions["baton"].db, token)
    assert principal is not None and principal.token_id is not None
    return principal.token_id


def test_submit_and_controls_record_who_asked(secured: Api, spec: Spec) -> None:
    # Given two operators, alice and bob
    alice = secured.token("operator", name="alice")
    bob = secured.token("operator", name="bob")
    a, b = _token_id(secured, alice), _token_id(secured, bob)
    # When alice submits and pauses, and bob resumes, cancels
    mid = secured.created(spec, bearer(alice))
    for action, who in (("pause", alice), ("resume", bob), ("cancel", bob)):
        assert secured.control(mid, action, bearer(who)).status_code == 200
    # Then alice owns it, and every event names its actor
    assert _owner(secured, mid) == "alice"
    assert _events(secured, mid) == [
        ("submitted", f"token {a} (alice)"),
        ("pause", f"token {a} (alice)"),
        ("resume", f"token {b} (bob)"),
        ("cancel", f"token {b} (bob)"),
    ]


def test_with_auth_off_the_actor_is_local(api: Api, spec: Spec) -> None:
    mid = api.created(spec)
    assert api.control(mid, "pause").status_code == 200
    assert _owner(api, mid) == "local"
    assert _events(api, mid) == [("submitted", "local"), ("pause", "local")]


def test_a_refused_control_records_nothing(secured: Api, spec: Spec) -> None:
    operator = bearer(secured.token("operator"))
    mid = secured.created(spec, operator)
    assert error_body(secured.control(mid, "resume", operator), 409)
    assert error_body(secured.control(mid, "pause", bearer(secured.token("viewer"))), 403)
    assert [kind for kind, _ in _events(secured, mid)] == ["submitted"]


# --- Idempotency-Key, scoped to its sender ---------------------------------------------------


def test_an_idempotency_key_replays_only_for_the_token_that_sent_it(
    secured: Api, spec: Spec
) -> None:
    # Given two operators sending the same Idempotency-Key with the same body
    alice = bearer(secured.token("operator", name="alice"))
    bob = bearer(secured.token("operator", name="bob"))
    key = {"Idempotency-Key": "deploy-42"}
    first = secured.submit(spec, {**alice, **key})
    other = secured.submit(spec, {**bob, **key})
    # Then each gets a migration of their own; neither is a replay
    assert first.status_code == other.status_code == 201
    assert first.get_json()["id"] != other.get_json()["id"]
    assert "Idempotent-Replayed" not in other.headers
    # And the same key replays for its own sender only: alice gets hers back, and bob's
    # key with another body conflicts with his own migration
    again = secured.submit(spec, {**alice, **key})
    assert again.get_json()["id"] == first.get_json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert error_body(secured.submit({**spec, "name": "x"}, {**bob, **key}), 409)
    assert sorted(secured.plans()) == sorted([first.get_json()["id"], other.get_json()["id"]])


def test_the_stored_key_is_a_hash_not_the_key(api: Api, spec: Spec) -> None:
    mid = api.created(spec, {"Idempotency-Key": "deploy-43"})
    with api.app.extensions["baton"].db.reading() as s:
        stored = s.scalar(select(Migration.idempotency_key).where(Migration.id == mid))
    assert stored is not None and re.fullmatch(r"[0-9a-f]{64}", stored)
    assert "deploy-43" not in stored
