"""Request bodies: JSON only, within ``BATON_MAX_BODY_BYTES``, validated into pydantic models."""

from __future__ import annotations

from typing import TypeVar

import orjson
from flask import current_app, request
from pydantic import BaseModel, ValidationError
from werkzeug.exceptions import BadRequest, RequestEntityTooLarge, UnsupportedMediaType

from api.errors import InvalidRequest
from etl_tasks.errors import FieldError

M = TypeVar("M", bound=BaseModel)

_PIECE = 64 * 1024  # bytes read from the stream at a time
NUL = "\x00"


def json_body(what: str = "the body") -> object:
    """The request's JSON value: 415 unless declared JSON, 413 when too large, 400 if not JSON."""
    mimetype = request.mimetype or ""
    if not (mimetype == "application/json" or mimetype.endswith("+json")):
        raise UnsupportedMediaType(f"send {what} as application/json")
    raw = read_body(current_app.extensions["baton"].settings.max_body_bytes)
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the body is not JSON: {exc}") from None
    if b"\\u0000" in raw:  # JSON can only spell NUL so; skip the walk without it
        problems = [FieldError(path, "must not contain a NUL character") for path in _nuls(value)]
        if problems:
            raise InvalidRequest(problems)
    return value


def _nuls(value: object) -> list[str]:
    """Where a string (or a key) holds NUL: no text column stores one (PostgreSQL refuses).

    Walked with a stack rather than recursion: a JSON body may nest deeper than Python.
    """
    found: list[str] = []
    stack: list[tuple[str, object]] = [("", value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            found += [path] if NUL in item else []
            continue
        if isinstance(item, dict):
            pairs = [(str(k), v) for k, v in item.items()]
        elif isinstance(item, list):
            pairs = [(str(i), v) for i, v in enumerate(item)]
        else:
            continue
        for key, child in reversed(pairs):
            here = f"{path}/{key}" if path else key
            if NUL in key:
                found.append(here)
            else:
                stack.append((here, child))
    return found


def read_body(limit: int) -> bytes:
    """The whole body, or 413 when it is over ``limit`` bytes, however it is framed.

    A body sent with ``Transfer-Encoding: chunked`` has no length to check up
    front; werkzeug's own limit would cut it at ``limit`` bytes and hand on the
    truncated JSON. So the body is read here, one byte past the limit at most.
    """
    length = request.content_length
    if length is not None and length > limit:
        raise RequestEntityTooLarge(f"the body is larger than {limit} bytes")
    if length is None and not request.environ.get("wsgi.input_terminated"):
        return b""  # no length and a server that does not end the stream: nothing to read safely
    stream = request.environ["wsgi.input"]
    wanted = limit + 1 if length is None else length
    pieces: list[bytes] = []
    size = 0
    while size < wanted:
        piece = stream.read(min(_PIECE, wanted - size))
        if not piece:
            break
        pieces.append(piece)
        size += len(piece)
    if size > limit:
        raise RequestEntityTooLarge(f"the body is larger than {limit} bytes")
    return b"".join(pieces)


def parse_body(model: type[M], value: object) -> M:
    """``value`` as ``model``, or a 422 listing every problem by its path."""
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        errors = [
            FieldError("/".join(str(p) for p in e["loc"]), str(e["msg"])) for e in exc.errors()
        ]
        raise InvalidRequest(errors) from None
