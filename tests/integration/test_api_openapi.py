"""The OpenAPI document: generated from the models, one operation per route, honest answers."""

from __future__ import annotations

import re
from typing import Any

import jsonschema
import pytest

from tests.integration.api_support import MIGRATIONS, Api, Spec, bearer

METHODS = {"get", "post", "put", "patch", "delete"}


def _document(api: Api) -> dict[str, Any]:
    doc = api.client.get("/openapi.json").get_json()
    assert isinstance(doc, dict)
    return doc


def _operations(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method, path): op
        for path, item in doc["paths"].items()
        for method, op in item.items()
        if method in METHODS
    }


def _shape(path: str) -> str:
    return re.sub(r"<[^>]+>|\{[^}]+\}", "{}", path)


def test_every_route_is_documented_and_every_operation_routed(api: Api) -> None:
    routes = {
        (method.lower(), _shape(rule.rule))
        for rule in api.app.url_map.iter_rules()
        if rule.endpoint != "static" and not rule.endpoint.startswith("dashboard.")  # HTML pages
        for method in rule.methods or ()
        if method.lower() in METHODS
    }
    documented = {(method, _shape(path)) for method, path in _operations(_document(api))}
    assert routes == documented


def test_each_operation_documents_the_refusals_it_can_give(api: Api) -> None:
    ops = _operations(_document(api))
    for (method, path), op in ops.items():
        codes = set(op["responses"])
        if op.get("security") == []:  # probes, metrics and this document need no token
            assert not codes & {"401", "403", "429"}, (method, path)
            continue
        assert {"401", "429"} <= codes, (method, path)
        assert "Retry-After" in op["responses"]["429"]["headers"]
        assert ("403" in codes) == (method != "get" or path.startswith("/api/v1/tokens"))
    assert {"400", "409", "413", "415", "422"} <= set(ops["post", MIGRATIONS]["responses"])
    assert {"400", "413", "415", "422"} <= set(ops["post", "/api/v1/tokens"]["responses"])
    for action in ("pause", "resume", "cancel", "retry"):
        assert "409" in ops["post", f"{MIGRATIONS}/{{id}}/{action}"]["responses"]


def test_error_and_list_shapes_are_the_contracts(api: Api) -> None:
    schemas = _document(api)["components"]["schemas"]
    assert schemas["Error"]["required"] == ["error"]
    assert schemas["InvalidBody"]["required"] == ["error", "errors"]
    assert set(schemas["Problem"]["required"]) == {"path", "message"}
    assert schemas["WorkerList"]["required"] == ["items"]
    for name in ("MigrationList", "ChunkList", "QuarantineList", "EventList"):
        assert set(schemas[name]["required"]) == {"items", "total", "next"}, name
    assert set(schemas["TokenPage"]["required"]) == {"items", "next"}
    assert "token" not in schemas["TokenView"]["properties"]
    assert "token" in schemas["TokenCreated"]["required"]


def _check(doc: dict[str, Any], schema_name: str, value: object) -> None:
    root = {**doc, "$ref": f"#/components/schemas/{schema_name}"}
    jsonschema.Draft202012Validator(root).validate(value)


@pytest.mark.parametrize("role", ["viewer", "admin"])
def test_real_answers_fit_their_documented_schemas(secured: Api, spec: Spec, role: str) -> None:
    doc = _document(secured)
    mid = secured.created(spec, bearer(secured.token("operator")))
    headers = bearer(secured.token(role))
    get = secured.client.get
    _check(doc, "MigrationView", get(f"{MIGRATIONS}/{mid}", headers=headers).get_json())
    _check(doc, "MigrationList", get(MIGRATIONS, headers=headers).get_json())
    _check(doc, "ChunkList", get(f"{MIGRATIONS}/{mid}/chunks", headers=headers).get_json())
    _check(doc, "QuarantineList", get(f"{MIGRATIONS}/{mid}/quarantine", headers=headers).get_json())
    _check(doc, "EventList", get(f"{MIGRATIONS}/{mid}/events", headers=headers).get_json())
    _check(doc, "WorkerList", get("/api/v1/workers", headers=headers).get_json())
    _check(doc, "Error", get(f"{MIGRATIONS}/nope", headers=headers).get_json())
    _check(doc, "Health", get("/healthz").get_json())
    _check(doc, "Readiness", get("/readyz").get_json())


def test_token_answers_fit_their_documented_schemas(secured: Api) -> None:
    doc = _document(secured)
    admin = bearer(secured.token("admin"))
    created = secured.client.post(
        "/api/v1/tokens", json={"name": "x", "role": "viewer"}, headers=admin
    )
    _check(doc, "TokenCreated", created.get_json())
    _check(doc, "TokenPage", secured.client.get("/api/v1/tokens", headers=admin).get_json())
    revoked = secured.client.delete(f"/api/v1/tokens/{created.get_json()['id']}", headers=admin)
    _check(doc, "TokenView", revoked.get_json())
    refused = secured.client.post("/api/v1/tokens", json={"role": "x"}, headers=admin)
    _check(doc, "InvalidBody", refused.get_json())
