"""Who is looking at a page: a signed session cookie made from a token at sign-in.

The cookie (``baton_session``) is signed with ``BATON_SESSION_KEY`` and holds the
token's id, never the token; every page looks the token up again, so a revoked
token signs its sessions out at once. It is ``HttpOnly``, ``SameSite=Strict``,
and ``Secure`` when the request came over TLS. Every form that changes
something carries the session's CSRF token (a hidden field, or the
``X-CSRF-Token`` header), checked here before anything is done.

The JSON API never reads this cookie: it keeps its bearer tokens.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable
from datetime import timedelta
from functools import wraps
from typing import Any, TypeVar, cast

from flask import Flask, current_app, g, redirect, request, session, url_for
from flask.sessions import SecureCookieSessionInterface, SessionMixin
from flask.wrappers import Response
from werkzeug.exceptions import Forbidden

from etl_tasks.settings import Settings
from etl_tasks.tokens import LOCAL, Principal, allows, principal_of

F = TypeVar("F", bound=Callable[..., Any])

COOKIE = "baton_session"
CSRF_FIELD = "csrf"
CSRF_HEADER = "X-CSRF-Token"


class _SessionInterface(SecureCookieSessionInterface):
    """Flask's signed cookie, marked ``Secure`` whenever the request came over TLS."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(request.is_secure) or super().get_cookie_secure(app)

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        # Only the dashboard's pages write the cookie: the JSON API's answers stay as
        # they were (no Set-Cookie, no Vary: Cookie), whatever cookie the client sends.
        if request.blueprint == "dashboard":
            super().save_session(app, session, response)


def configure_sessions(app: Flask, settings: Settings) -> None:
    """Sign dashboard sessions with ``BATON_SESSION_KEY`` (else a key of this app's own)."""
    app.secret_key = settings.session_key or secrets.token_hex(32)
    app.config.update(
        SESSION_COOKIE_NAME=COOKIE,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=settings.session_hours),
    )
    app.session_interface = _SessionInterface()


def csrf_token() -> str:
    """This session's CSRF token (made on first use)."""
    token = session.get(CSRF_FIELD)
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        session[CSRF_FIELD] = token
    return token


def check_csrf() -> None:
    """Refuse (403) a form whose CSRF token is not this session's."""
    sent = request.form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER) or ""
    expected = session.get(CSRF_FIELD)
    if not isinstance(expected, str) or not hmac.compare_digest(sent, expected):
        raise Forbidden("the form's CSRF token is missing or stale: reload the page")


def sign_in(principal: Principal) -> None:
    """Start a session for ``principal`` (a fresh one: a new CSRF token too)."""
    session.clear()
    session.permanent = True
    session["tid"] = principal.token_id
    session[CSRF_FIELD] = secrets.token_urlsafe(32)


def sign_out() -> None:
    session.clear()


def page_principal() -> Principal | None:
    """Who is signed in (the local admin with ``BATON_AUTH=off``); ``None``: nobody."""
    ext = current_app.extensions["baton"]
    if ext.settings.auth == "off":
        return LOCAL
    token_id = session.get("tid")
    if not isinstance(token_id, int):
        return None
    return principal_of(ext.db, token_id)


def page(role: str = "viewer") -> Callable[[F], F]:
    """A page for a signed-in caller holding ``role``; others go to the sign-in page."""

    def decorate(view: F) -> F:
        @wraps(view)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            principal = page_principal()
            if principal is None:
                if request.method != "GET":
                    raise Forbidden("sign in first")
                return redirect(url_for("dashboard.sign_in_form", next=request.full_path))
            if not allows(principal.role, role):
                raise Forbidden(f"this needs the {role} role")
            if request.method != "GET":
                check_csrf()
            g.principal = principal
            return view(*args, **kwargs)

        return cast(F, wrapped)

    return decorate
