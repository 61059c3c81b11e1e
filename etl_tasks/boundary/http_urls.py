"""An HTTP endpoint through the boundary: its host checked, its credential read by name.

The URL's host goes through ``BATON_ALLOWED_HOSTS`` (plain ``http://`` and
loopback are allowed unless that list says otherwise) and may never be
Baton's own broker or staging store. A URL carrying a user or password is
refused: credentials are given only by environment variable (``bearer_env``,
``basic_env``, ``{header, env}``), each through the ``*_env`` allow-list and
its host binding. What comes out holds the credential's header: it is never
logged, stored or put into an error message.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from etl_tasks.endpoints import HttpAuth, HttpSettings
from etl_tasks.errors import BoundaryError

if TYPE_CHECKING:
    from etl_tasks.boundary.policy import Boundary

DEFAULT_PORTS = {"http": 80, "https": 443}
TABLE = "{table}"


@dataclass(frozen=True)
class HttpAccess:
    """What a request to the endpoint needs: the URL (``{table}`` still in it), the
    credential's header, and the address the host was checked at."""

    url: str
    host: str
    address: str
    headers: dict[str, str] = field(repr=False)  # holds the credential: never printed
    check_url: str | None = None

    def url_for(self, table: str) -> str:
        """The stream's URL: ``{table}`` replaced by the target table, escaped as a path part."""
        return self.url.replace(TABLE, quote(table, safe=""))


SECRET_WORDS = ("pass", "secret", "token", "key", "auth", "sig")


def redact_http(url: str) -> str:
    """An HTTP URL safe to show: a password in it, and query values whose names look
    secret, replaced (``{table}`` kept as written)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url.split(":", 1)[0] + "://…"
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    query = [
        (k, "***" if any(w in k.lower() for w in SECRET_WORDS) else v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
    ]
    shown = urlunsplit(parts._replace(netloc=netloc, query=urlencode(query, safe="{}*")))
    return shown if parts.query or "@" in parts.netloc else url


def _host_port(url: str, field_name: str) -> tuple[str, int]:
    if TABLE in urlsplit(url).netloc:
        raise BoundaryError("{table} may only stand in the URL's path or query", field_name)
    parts = urlsplit(url.replace(TABLE, "table"))
    if parts.scheme.lower() not in DEFAULT_PORTS or not parts.hostname:
        raise BoundaryError("give an http:// or https:// URL with a host", field_name)
    if parts.username is not None or parts.password is not None:
        raise BoundaryError(
            "a URL may not carry a user or password: name the credential in 'auth'", field_name
        )
    try:
        port = parts.port or DEFAULT_PORTS[parts.scheme.lower()]
    except ValueError:
        raise BoundaryError("the URL's port is not a number", field_name) from None
    return parts.hostname, port


def http_access(boundary: Boundary, settings: HttpSettings, timeout_s: float) -> HttpAccess:
    """Check the endpoint; raise :class:`BoundaryError` (its ``field`` under ``http``)
    before anything is sent (name resolution aside, bounded by ``timeout_s``)."""
    host, port = _host_port(settings.url, "http/url")
    if settings.check_url is not None:
        check_host, _ = _host_port(settings.check_url, "http/check_url")
        if check_host.lower() != host.lower():
            raise BoundaryError("check_url must be on the same host as url", "http/check_url")
    try:
        address = boundary.hosts.pick(host, port, timeout_s)
    except BoundaryError as exc:
        exc.field = "http/url"
        raise
    try:
        boundary.own.check_address(address, port, timeout_s)
    except BoundaryError as exc:
        exc.field = "http/url"
        raise
    headers = auth_headers(boundary, settings.auth, host) if settings.auth else {}
    return HttpAccess(settings.url, host, address, headers, settings.check_url)


def auth_headers(boundary: Boundary, auth: HttpAuth, host: str) -> dict[str, str]:
    """The credential's header, its value read through the ``*_env`` allow-list."""
    if auth.bearer_env is not None:
        token = _secret(boundary, auth.bearer_env, "http/auth/bearer_env", host)
        return {"Authorization": f"Bearer {token}"}
    if auth.basic_env is not None:
        pair = _secret(boundary, auth.basic_env, "http/auth/basic_env", host)
        if ":" not in pair:
            raise BoundaryError(
                f"environment variable {auth.basic_env} must hold user:password",
                "http/auth/basic_env",
            )
        return {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode()}
    assert auth.header is not None and auth.env is not None
    return {auth.header: _secret(boundary, auth.env, "http/auth/env", host)}


def _secret(boundary: Boundary, name: str, field_name: str, host: str) -> str:
    value = boundary.env.resolve(name, field_name)
    hosts = boundary.env.hosts_for(name)
    if hosts is not None and host.lower().rstrip(".") not in hosts:
        raise BoundaryError(
            f"environment variable {name} may not be used with this host "
            "(BATON_ENV_ALLOWED binds it to others)",
            field_name,
        )
    if any(c in value for c in "\r\n\x00"):
        raise BoundaryError(f"environment variable {name} holds a line break", field_name)
    return value
