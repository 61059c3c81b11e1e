"""Every answer of the app: security headers, and JSON for every error, never a traceback."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable

import pytest
from flask import Response
from werkzeug.exceptions import RequestHeaderFieldsTooLarge
from werkzeug.test import TestResponse

from api.headers import SECURITY_HEADERS
from etl_tasks.errors import TransientError
from etl_tasks.settings import Settings
from tests.integration.api_support import MIGRATIONS, Api, Spec, bearer, error_body, make_api


def assert_hardened(resp: TestResponse) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert resp.headers.get(name) == value, (name, dict(resp.headers))


def test_answers_of_every_kind_carry_the_security_headers(secured: Api) -> None:
    viewer = bearer(secured.token("viewer"))
    for resp in (
        secured.client.get("/healthz"),
        secured.client.get("/metrics"),
        secured.client.get("/openapi.json"),
        secured.client.get(MIGRATIONS, headers=viewer),
        secured.client.get(MIGRATIONS),
        secured.client.get("/nowhere"),
        secured.client.put(MIGRATIONS, headers=viewer),
    ):
        assert_hardened(resp)


def _raise(exc: Exception) -> Response:
    raise exc


@pytest.mark.parametrize(
    "exc",
    [
        RuntimeError("boom at db.internal:5432 with password hunter2"),
        TransientError("target unavailable: password hunter2"),
    ],
)
def test_an_uncaught_exception_is_a_json_500_without_its_text(
    api: Api, exc: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    api.app.add_url_rule("/test/boom", view_func=lambda: _raise(exc))
    with caplog.at_level(logging.ERROR, logger="api.errors"):
        resp = api.client.get("/test/boom")
    assert error_body(resp, 500).keys() == {"error"}
    assert "hunter2" not in resp.get_data(as_text=True)
    assert_hardened(resp)
    assert "hunter2" in caplog.text  # the log keeps it for whoever runs the API


def test_http_errors_raised_anywhere_are_json(api: Api) -> None:
    api.app.add_url_rule("/test/431", view_func=lambda: _raise(RequestHeaderFieldsTooLarge()))
    resp = api.client.get("/test/431")
    assert error_body(resp, 431).keys() == {"error"}
    assert_hardened(resp)


def test_a_view_may_set_its_own_content_policy(api: Api) -> None:
    def page() -> Response:
        return Response("<p>hi</p>", headers={"Content-Security-Policy": "default-src 'self'"})

    api.app.add_url_rule("/test/page", view_func=page)
    resp = api.client.get("/test/page")
    assert resp.headers["Content-Security-Policy"] == "default-src 'self'"
    assert resp.headers["X-Frame-Options"] == "DENY"


def _post_unsized(api: Api, path: str, body: bytes) -> TestResponse:
    """A body without a length, as a server hands on a chunked one (the stream ends it)."""
    resp = api.client.post(
        path,
        input_stream=io.BytesIO(body),
        content_type="application/json",
        headers={"Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert resp.request.content_length is None
    return resp


def test_an_unsized_body_over_the_limit_is_413(api: Api) -> None:
    limit = api.app.extensions["baton"].settings.max_body_bytes
    body = b'{"name": "' + b"x" * limit + b'"}'
    resp = _post_unsized(api, MIGRATIONS, body)
    assert error_body(resp, 413).keys() == {"error"}
    assert api.client.get(MIGRATIONS).get_json() == {"items": [], "total": 0, "next": None}


def test_an_unsized_body_at_the_limit_is_read_whole(api: Api) -> None:
    limit = api.app.extensions["baton"].settings.max_body_bytes
    body = b'{"name": "n", "role": "viewer"}'
    body = body[:-1] + b" " * (limit - len(body)) + b"}"
    assert len(body) == limit
    resp = _post_unsized(api, "/api/v1/tokens", body)
    assert resp.status_code == 201, resp.get_data(as_text=True)


# --- what PostgreSQL refuses to store or compare -----------------------------------------------


@pytest.fixture
def on_postgres(make_settings: Callable[..., Settings], pg_state_url: str) -> Api:
    return make_api(make_settings(database_url=pg_state_url))


def test_an_id_with_a_nul_names_nothing(on_postgres: Api) -> None:
    client = on_postgres.client
    for resp in (
        client.get(f"{MIGRATIONS}/%00"),
        client.get(f"{MIGRATIONS}/a%00b/chunks"),
        client.get(f"{MIGRATIONS}/%00/quarantine"),
        client.post(f"{MIGRATIONS}/%00/pause"),
    ):
        assert error_body(resp, 404).keys() == {"error"}


def test_a_body_with_a_nul_is_422_at_its_path(on_postgres: Api, spec: Spec) -> None:
    token = on_postgres.client.post("/api/v1/tokens", json={"name": "a\x00b", "role": "viewer"})
    errors = error_body(token, 422)["errors"]
    assert errors == [{"path": "name", "message": "must not contain a NUL character"}]
    spec["streams"][0]["columns"]["tenant_id"] = {"value": ["ok", "\x00"]}
    refused = on_postgres.submit({**spec, "name": "x\x00"})
    paths = [e["path"] for e in error_body(refused, 422)["errors"]]
    assert paths == ["name", "streams/0/columns/tenant_id/value/1"]
    assert on_postgres.client.get(MIGRATIONS).get_json() == {"items": [], "total": 0, "next": None}
