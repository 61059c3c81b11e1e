"""Who is asking: bearer tokens and roles.

Viewers read, operators also submit and control migrations, admins also manage
tokens; with ``BATON_AUTH=off`` every caller is the local admin. A view declares
the role it needs with :func:`require`, and reads the caller with
:func:`current_principal`, the one source of "who is asking".
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar, cast

from flask import current_app, g, request
from werkzeug.datastructures import WWWAuthenticate
from werkzeug.exceptions import Forbidden, TooManyRequests, Unauthorized

from etl_tasks.spec import MigrationSpec
from etl_tasks.tokens import LOCAL, Principal, allows, authenticate

F = TypeVar("F", bound=Callable[..., Any])


def current_principal() -> Principal:
    """The caller of this request, as :func:`require` authenticated it."""
    principal = g.get("principal")
    if not isinstance(principal, Principal):
        raise RuntimeError("current_principal() is only known inside a view that requires a role")
    return principal


def require(role: str) -> Callable[[F], F]:
    """Let the view run only for a caller holding ``role`` (or a higher one)."""

    def decorate(view: F) -> F:
        @wraps(view)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            principal = _authenticate()
            if not allows(principal.role, role):
                raise Forbidden(f"this needs the {role} role")
            g.principal = principal
            return view(*args, **kwargs)

        return cast(F, wrapped)

    return decorate


def _authenticate() -> Principal:
    """The token's principal; a caller without a valid token is refused (401, or 429).

    The token is checked first, so a valid one is never throttled.
    """
    ext = current_app.extensions["baton"]
    if ext.settings.auth == "off":
        return LOCAL
    token = _bearer_token()
    principal = authenticate(ext.db, token) if token else None
    if principal is not None:
        return principal
    retry_after = ext.throttle.failed(request.remote_addr or "unknown")
    if retry_after is not None:
        raise TooManyRequests(
            f"too many failed authentications from this address; retry in {retry_after} s",
            retry_after=retry_after,
        )
    message = "unknown or revoked token" if token else "send 'Authorization: Bearer <token>'"
    raise Unauthorized(message, www_authenticate=WWWAuthenticate("Bearer"))


def _bearer_token() -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def require_admin_for_queries(spec: MigrationSpec, who: Principal) -> None:
    """A stream's ``query`` reads whatever the source's user can: admins only."""
    if not who.is_admin and any(s.query is not None for s in spec.streams):
        raise Forbidden("a stream with a query needs the admin role")
