"""Headers on every answer of the API: nothing cached, sniffed, framed or referred.

The API answers JSON (and Prometheus text), so its content policy forbids
everything. The dashboard's pages (``api.dashboard``) set :func:`page_policy`
instead: scripts, styles and images from this origin only (no inline script or
style, no ``eval``), and connections to this origin and the live process.
"""

from __future__ import annotations

from flask import Flask, Response

SECURITY_HEADERS: dict[str, str] = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
}


def page_policy(live_origin: str | None = None) -> str:
    """The content policy of a dashboard page; ``live_origin``: where its updates stream from."""
    connect = "'self'" + (f" {live_origin}" if live_origin else "")
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        f"connect-src {connect}; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    )


def add_security_headers(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def register_security_headers(app: Flask) -> None:
    app.after_request(add_security_headers)
