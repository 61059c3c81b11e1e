"""Bearer-token auth: viewers read, operators submit and control, admins do everything."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar, cast

from flask import current_app, request
from werkzeug.datastructures import WWWAuthenticate
from werkzeug.exceptions import Forbidden, Unauthorized

from etl_tasks.tokens import allows, role_of

F = TypeVar("F", bound=Callable[..., Any])


def require(role: str) -> Callable[[F], F]:
    def decorate(view: F) -> F:
        @wraps(view)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            ext = current_app.extensions["baton"]
            if ext.settings.auth == "on":
                header = request.headers.get("Authorization", "")
                scheme, _, token = header.partition(" ")
                if scheme.lower() != "bearer" or not token:
                    raise Unauthorized(
                        "send 'Authorization: Bearer <token>'",
                        www_authenticate=WWWAuthenticate("Bearer"),
                    )
                have = role_of(ext.db, token.strip())
                if have is None:
                    raise Unauthorized(
                        "unknown or revoked token", www_authenticate=WWWAuthenticate("Bearer")
                    )
                if not allows(have, role):
                    raise Forbidden(f"this needs the {role} role")
            return view(*args, **kwargs)

        return cast(F, wrapped)

    return decorate
