"""The API's own OpenAPI 3.1 document, generated from pydantic models and the operations table.

Schemas come from the models (:mod:`api.schemas`, and the spec's own
:class:`etl_tasks.spec.MigrationSpec`) through pydantic's ``models_json_schema``;
paths, parameters and answers come from :data:`api.operations.OPERATIONS`. Each
operation documents 401 and 429 when it needs a token, 403 when it needs more
than a viewer, and the errors it produces itself (400, 404, 409, 413, 415, 422).

Why not a library. spectree (3.0) and flask-openapi3 (4.3) were weighed. Both
tie the document to their own request validation: the body is parsed with
``request.get_json`` and a failure answers their error shape (pydantic's list
of ``loc``/``msg``/``type``), where this API promises 415 before 400 before 422,
``{"error", "errors": [{"path", "message"}]}`` with slash-separated paths, its
own limit on chunked bodies, and a spec checked further by preflight. Both can
swap the error callback, but then validate every declared model themselves;
spectree can skip validation per route, which leaves it a doc generator bound to
decorators on every view and a registration that adds UI pages loading scripts
from a CDN. flask-openapi3 replaces the Flask class and the blueprints. Neither
buys more than the fifty lines below, and both would put a second source of
truth about bodies beside the one the views use.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from api.operations import OPERATIONS, Media, Operation, Param
from api.schemas import Error, InvalidBody

REF = "#/components/schemas/{model}"

ERRORS: dict[int, str] = {
    400: "the request is malformed: a body that is not JSON, an unknown filter value",
    401: "no valid bearer token (WWW-Authenticate: Bearer)",
    403: "the token's role does not allow this",
    404: "no such resource",
    409: "the resource's state does not allow this, or an Idempotency-Key was reused "
    "with another body",
    413: "the body is larger than BATON_MAX_BODY_BYTES",
    415: "the body is not declared application/json",
    422: "the body is not valid: every problem, each at its path",
    429: "too many failed authentications from this address: wait Retry-After seconds",
}
_RETRY_AFTER = {
    "Retry-After": {
        "description": "seconds until this address may try again",
        "schema": {"type": "integer", "minimum": 1},
    }
}


def _models() -> list[tuple[type[BaseModel], JsonSchemaMode]]:
    seen: dict[tuple[type[BaseModel], JsonSchemaMode], None] = {
        (Error, "serialization"): None,
        (InvalidBody, "serialization"): None,
    }
    for op in OPERATIONS:
        if op.body is not None:
            seen[(op.body, "validation")] = None
        for _, body in op.answers.values():
            for one in body if isinstance(body, list) else [body]:
                if isinstance(one, type):
                    seen[(one, "serialization")] = None
    return list(seen)


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _answers(op: Operation, refs: dict[type[BaseModel], dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for status, (text, body) in op.answers.items():
        content: dict[str, Any] = {}
        for one in body if isinstance(body, list) else [body]:
            media: Media = ("application/json", refs[one]) if isinstance(one, type) else one
            content[media[0]] = {"schema": media[1]}
        out[str(status)] = {"description": text, "content": content}
    codes = set(op.errors)
    if op.role is not None:
        codes |= {401, 429} | ({403} if op.role != "viewer" else set())
    for status in sorted(codes):
        model = InvalidBody if status == 422 else Error
        answer: dict[str, Any] = {"description": ERRORS[status], "content": _json(refs[model])}
        if status == 429:
            answer["headers"] = _RETRY_AFTER
        out[str(status)] = answer
    return out


def _param(p: Param) -> dict[str, Any]:
    out: dict[str, Any] = {"name": p.name, "in": p.where, "required": p.required}
    out["schema"] = p.schema
    if p.description:
        out["description"] = p.description
    return out


def _operation(op: Operation, refs: dict[type[BaseModel], dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"operationId": op.operation_id, "summary": op.summary}
    if op.role is None:
        out["security"] = []
    else:
        out["description"] = f"Needs the {op.role} role (or a higher one)."
    if op.params:
        out["parameters"] = [_param(p) for p in op.params]
    if op.body is not None:
        out["requestBody"] = {"required": op.body_required, "content": _json(refs[op.body])}
    out["responses"] = _answers(op, refs)
    return out


@cache
def openapi_document(version: str) -> dict[str, Any]:
    keys, defs = models_json_schema(_models(), by_alias=True, ref_template=REF)
    refs = {
        model: ref
        for (model, _), ref in keys.items()
        if isinstance(model, type) and issubclass(model, BaseModel)
    }
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method] = _operation(op, refs)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Baton", "version": version},
        "paths": paths,
        "components": {
            "schemas": defs.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }
