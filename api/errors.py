"""The one place where Baton's errors become HTTP answers."""

from __future__ import annotations

import logging

from flask import Flask, jsonify, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException

from etl_tasks.errors import BadQuery, Conflict, FieldError, NotFound, SpecError

log = logging.getLogger(__name__)


class InvalidRequest(Exception):
    """Raised when a request body (other than a spec) does not fit its model; answered 422."""

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("; ".join(f"{e.path}: {e.message}" for e in errors))
        self.errors = errors


def _json(status: int, message: str, **extra: object) -> ResponseReturnValue:
    return jsonify({"error": message, **extra}), status


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(SpecError)
    def _spec(exc: SpecError) -> ResponseReturnValue:
        errors = [{"path": e.path, "message": e.message} for e in exc.errors]
        return _json(422, "the spec is not valid", errors=errors)

    @app.errorhandler(InvalidRequest)
    def _invalid(exc: InvalidRequest) -> ResponseReturnValue:
        errors = [{"path": e.path, "message": e.message} for e in exc.errors]
        return _json(422, "the request is not valid", errors=errors)

    @app.errorhandler(NotFound)
    def _not_found(exc: NotFound) -> ResponseReturnValue:
        return _json(404, str(exc))

    @app.errorhandler(BadQuery)
    def _bad_query(exc: BadQuery) -> ResponseReturnValue:
        return _json(400, str(exc))

    @app.errorhandler(Conflict)
    def _conflict(exc: Conflict) -> ResponseReturnValue:
        return _json(409, str(exc))

    @app.errorhandler(Exception)
    def _internal(exc: Exception) -> ResponseReturnValue:
        # Anything else is a bug or an outage: logged whole, answered without its text,
        # which may carry a driver's message, a host name or a value.
        log.error("unexpected error: %s %s", request.method, request.path, exc_info=exc)
        return _json(500, "internal error; the API's log has the details")

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> ResponseReturnValue:
        # keep the exception's own headers (Allow on 405, WWW-Authenticate on 401)
        headers = [(k, v) for k, v in exc.get_headers() if k.lower() != "content-type"]
        return jsonify({"error": exc.description or exc.name}), exc.code or 500, headers
