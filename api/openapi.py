"""The API's own OpenAPI 3 document; the spec schema comes from the pydantic model."""

from __future__ import annotations

from typing import Any

from etl_tasks.spec import MigrationSpec

_ERR = {"$ref": "#/components/schemas/Error"}
_ID = [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}]


def _op(summary: str, responses: dict[str, str], **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "summary": summary,
        "responses": {
            code: {"description": text, "content": {"application/json": {"schema": _ERR}}}
            if code[0] in "45"
            else {"description": text}
            for code, text in responses.items()
        },
    }
    out.update(extra)
    return out


def _controls() -> dict[str, Any]:
    return {
        f"/api/v1/migrations/{{id}}/{action}": {
            "post": _op(
                f"{action.capitalize()} a migration",
                {"200": "the migration", "404": "unknown id", "409": "not allowed in this state"},
                parameters=_ID,
            )
        }
        for action in ("pause", "resume", "cancel", "retry")
    }


def openapi_document(version: str) -> dict[str, Any]:
    spec_schema = MigrationSpec.model_json_schema(
        by_alias=True, ref_template="#/components/schemas/{model}"
    )
    defs = spec_schema.pop("$defs", {})
    paths: dict[str, Any] = {
        "/api/v1/migrations": {
            "post": _op(
                "Submit a migration",
                {
                    "201": "created (or replayed for the same Idempotency-Key)",
                    "400": "the body is not JSON",
                    "409": "Idempotency-Key reused with another body",
                    "413": "body too large",
                    "415": "not application/json",
                    "422": "invalid spec or failed preflight (errors: path, message)",
                },
                parameters=[
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string", "maxLength": 200},
                    }
                ],
                requestBody={
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {"$ref": "#/components/schemas/MigrationSpec"}
                        }
                    },
                },
            ),
            "get": _op(
                "List migrations, newest first",
                {"200": "{items: [...]}"},
                parameters=[{"name": "state", "in": "query", "schema": {"type": "string"}}],
            ),
        },
        "/api/v1/migrations/{id}": {
            "get": _op(
                "A migration with its streams, throughput and ETA",
                {"200": "the migration", "404": "unknown id"},
                parameters=_ID,
            )
        },
        "/api/v1/migrations/{id}/chunks": {
            "get": _op(
                "Chunks of a migration",
                {"200": "{items: [...]}", "404": "unknown id"},
                parameters=[*_ID, {"name": "state", "in": "query", "schema": {"type": "string"}}],
            )
        },
        "/api/v1/migrations/{id}/quarantine": {
            "get": _op(
                "Quarantined rows with their reasons",
                {"200": "{items: [...]}", "404": "unknown id"},
                parameters=_ID,
            )
        },
        **_controls(),
        "/api/v1/workers": {"get": _op("Workers and their state", {"200": "{items: [...]}"})},
        "/healthz": {"get": _op("Liveness", {"200": "alive"}, security=[])},
        "/readyz": {
            "get": _op(
                "Readiness (state DB reachable)", {"200": "ready", "503": "not ready"}, security=[]
            )
        },
        "/metrics": {
            "get": _op("Prometheus metrics", {"200": "text exposition format"}, security=[])
        },
        "/openapi.json": {"get": _op("This document", {"200": "OpenAPI 3"}, security=[])},
    }
    schemas = {
        "MigrationSpec": spec_schema,
        **defs,
        "Error": {
            "type": "object",
            "properties": {
                "error": {"type": "string"},
                "errors": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {"path": {"type": "string"}, "message": {"type": "string"}},
                    },
                },
            },
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "Baton", "version": version},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }
