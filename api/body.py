"""Request bodies: JSON only, within ``BATON_MAX_BODY_BYTES``, validated into pydantic models."""

from __future__ import annotations

from typing import TypeVar

import orjson
from flask import request
from pydantic import BaseModel, ValidationError
from werkzeug.exceptions import BadRequest, UnsupportedMediaType

from api.errors import InvalidRequest
from etl_tasks.errors import FieldError

M = TypeVar("M", bound=BaseModel)


def json_body(what: str = "the body") -> object:
    """The request's JSON value: 415 unless declared JSON, 413 when too large, 400 if not JSON."""
    mimetype = request.mimetype or ""
    if not (mimetype == "application/json" or mimetype.endswith("+json")):
        raise UnsupportedMediaType(f"send {what} as application/json")
    raw = request.get_data(cache=False)
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the body is not JSON: {exc}") from None


def parse_body(model: type[M], value: object) -> M:
    """``value`` as ``model``, or a 422 listing every problem by its path."""
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        errors = [
            FieldError("/".join(str(p) for p in e["loc"]), str(e["msg"])) for e in exc.errors()
        ]
        raise InvalidRequest(errors) from None
