"""``/api/v1/tokens``: admins list, create and revoke tokens; nobody else may."""

from __future__ import annotations

import pytest

from tests.integration.api_support import Api, bearer, error_body

TOKENS = "/api/v1/tokens"
ROW_FIELDS = {"id", "name", "role", "created_at", "revoked_at"}


def test_an_admin_creates_lists_and_revokes_tokens(secured: Api) -> None:
    admin = bearer(secured.token("admin"))
    # When an admin creates an operator token
    created = secured.client.post(TOKENS, json={"name": "ci", "role": "operator"}, headers=admin)
    # Then it is shown once, with its row, and works as an operator's
    assert created.status_code == 201, created.get_data(as_text=True)
    body = created.get_json()
    assert set(body) == ROW_FIELDS | {"token"}
    assert body["name"] == "ci" and body["role"] == "operator" and body["revoked_at"] is None
    ci = bearer(body["token"])
    assert secured.client.get("/api/v1/migrations", headers=ci).status_code == 200
    assert error_body(secured.client.get(TOKENS, headers=ci), 403).keys() == {"error"}
    # And the list shows both tokens' rows, never a token or a hash
    listed = secured.client.get(TOKENS, headers=admin)
    assert listed.status_code == 200
    page = listed.get_json()
    assert page["next"] is None
    assert [t["name"] for t in page["items"]] == ["test-admin", "ci"]
    assert all(set(t) == ROW_FIELDS for t in page["items"])
    assert body["token"] not in listed.get_data(as_text=True)
    # When it is revoked, its row comes back revoked and it no longer authenticates
    revoked = secured.client.delete(f"{TOKENS}/{body['id']}", headers=admin)
    assert revoked.status_code == 200
    assert revoked.get_json()["id"] == body["id"] and revoked.get_json()["revoked_at"]
    assert error_body(secured.client.get("/api/v1/migrations", headers=ci), 401)
    again = secured.client.delete(f"{TOKENS}/{body['id']}", headers=admin)
    assert again.get_json() == revoked.get_json()


@pytest.mark.parametrize("token_id", ["999", "99999999999999999999999"])
def test_revoking_an_unknown_token_is_404(secured: Api, token_id: str) -> None:
    admin = bearer(secured.token("admin"))
    resp = secured.client.delete(f"{TOKENS}/{token_id}", headers=admin)
    assert error_body(resp, 404)["error"] == f"no token {token_id}"


@pytest.mark.parametrize("role", ["viewer", "operator"])
def test_only_admins_manage_tokens(secured: Api, role: str) -> None:
    headers = bearer(secured.token(role))
    victim = secured.token("admin", name="victim")
    for resp in (
        secured.client.get(TOKENS, headers=headers),
        secured.client.post(TOKENS, json={"name": "x", "role": "admin"}, headers=headers),
        secured.client.delete(f"{TOKENS}/1", headers=headers),
    ):
        assert error_body(resp, 403).keys() == {"error"}
    assert secured.client.get(TOKENS, headers=bearer(victim)).status_code == 200


def test_without_a_token_tokens_are_401(secured: Api) -> None:
    for resp in (
        secured.client.get(TOKENS),
        secured.client.post(TOKENS, json={"name": "x", "role": "admin"}),
        secured.client.delete(f"{TOKENS}/1"),
    ):
        assert error_body(resp, 401).keys() == {"error"}


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"name": "x", "role": "root"}, "role"),
        ({"role": "viewer"}, "name"),
        ({"name": "", "role": "viewer"}, "name"),
        ({"name": "n" * 201, "role": "viewer"}, "name"),
        ({"name": "x", "role": "viewer", "scopes": []}, "scopes"),
        ([], ""),
    ],
)
def test_a_bad_token_request_is_422_and_creates_nothing(
    secured: Api, body: object, path: str
) -> None:
    admin = bearer(secured.token("admin"))
    resp = secured.client.post(TOKENS, json=body, headers=admin)
    answer = error_body(resp, 422)
    assert set(answer) == {"error", "errors"}
    assert [e["path"] for e in answer["errors"]] == [path]
    assert len(secured.client.get(TOKENS, headers=admin).get_json()["items"]) == 1


def test_a_token_request_that_is_not_json_is_415_or_400(secured: Api) -> None:
    admin = bearer(secured.token("admin"))
    post = secured.client.post
    assert error_body(post(TOKENS, data="x", content_type="text/plain", headers=admin), 415)
    assert error_body(post(TOKENS, data="{", content_type="application/json", headers=admin), 400)


def test_with_auth_off_the_local_user_manages_tokens(api: Api) -> None:
    created = api.client.post(TOKENS, json={"name": "first", "role": "admin"})
    assert created.status_code == 201
    assert [t["name"] for t in api.client.get(TOKENS).get_json()["items"]] == ["first"]
