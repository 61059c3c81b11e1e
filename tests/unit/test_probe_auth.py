"""A worker probe's POST /drain needs the probe token; its GET answers stay open.

The decision is a pure function; the probe itself runs for real on a loopback
port in this process (no worker, no broker), asked over HTTP like a deploy
tool or an intruder would.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from http.server import ThreadingHTTPServer

import pytest
import requests

from worker.probe import ProbeState, start_probe
from worker.probe_auth import (
    NO_TOKEN,
    SHORT_TOKEN_CHARS,
    WRONG_TOKEN,
    bearer_token,
    drain_refusal,
    token_problem,
)

TOKEN = "s3cret-probe-token-of-some-length"


# --- the decision --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "token"),
    [
        (None, None),
        ("", None),
        ("Bearer", None),
        ("Bearer   ", None),
        ("Basic dXNlcjpwYXNz", None),
        (f"Bearer {TOKEN}", TOKEN),
        (f"bearer {TOKEN}", TOKEN),
        (f"  BEARER   {TOKEN}  ", TOKEN),
    ],
)
def test_bearer_token_reads_only_the_bearer_scheme(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token


@pytest.mark.parametrize("configured", [None, ""])
def test_without_a_configured_token_every_drain_is_refused_with_403(configured: str | None) -> None:
    for header in (None, "Bearer ", "Bearer anything", f"Bearer {TOKEN}"):
        refusal = drain_refusal(configured, header)
        assert refusal is not None and refusal.status == 403
        assert "BATON_PROBE_TOKEN" in refusal.error


@pytest.mark.parametrize(
    "header",
    [None, "", f"Basic {TOKEN}", "Bearer wrong", f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", TOKEN],
)
def test_a_missing_or_wrong_token_is_refused_with_401(header: str | None) -> None:
    refusal = drain_refusal(TOKEN, header)
    assert refusal is not None and (refusal.status, refusal.error) == (401, WRONG_TOKEN)


def test_the_right_token_drains() -> None:
    assert drain_refusal(TOKEN, f"Bearer {TOKEN}") is None


def test_a_token_beyond_ascii_compares_as_the_bytes_sent() -> None:
    # http.server decodes header values as Latin-1; the client sent UTF-8 bytes.
    token = "jeton-sécurité-0123456789"
    as_received = token.encode().decode("latin-1")
    assert drain_refusal(token, f"Bearer {as_received}") is None
    assert drain_refusal(token, f"Bearer {token}") is not None


def test_start_up_warns_about_a_missing_or_short_token() -> None:
    assert "not set" in (token_problem(None) or "")
    assert "shorter" in (token_problem("x" * (SHORT_TOKEN_CHARS - 1)) or "")
    assert token_problem(TOKEN) is None


# --- the probe, served for real ----------------------------------------------------------------


Serve = Callable[[str | None], tuple[str, ProbeState]]


@pytest.fixture
def serve() -> Iterator[Serve]:
    servers: list[ThreadingHTTPServer] = []

    def start(token: str | None) -> tuple[str, ProbeState]:
        state = ProbeState()
        state.ready = True
        server = start_probe(state, "127.0.0.1", 0, token)
        assert server is not None
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}", state

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_probe_without_a_token_refuses_post_drain_and_stays_ready(serve: Serve) -> None:
    url, state = serve(None)
    for headers in ({}, {"Authorization": f"Bearer {TOKEN}"}):
        resp = requests.post(f"{url}/drain", headers=headers, timeout=5)
        assert resp.status_code == 403
        assert resp.json() == {"error": NO_TOKEN}
    assert not state.draining
    assert requests.get(f"{url}/readyz", timeout=5).status_code == 200


def test_probe_with_a_token_refuses_a_wrong_one_then_drains_with_the_right_one(
    serve: Serve,
) -> None:
    url, state = serve(TOKEN)
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
        resp = requests.post(f"{url}/drain", headers=headers, timeout=5)
        assert resp.status_code == 401, headers
        assert resp.headers["WWW-Authenticate"].startswith("Bearer ")
        assert "BATON_PROBE_TOKEN" in resp.json()["error"]
    assert not state.draining
    resp = requests.post(f"{url}/drain", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
    assert resp.status_code == 202 and resp.json()["draining"] is True
    assert state.draining
    assert requests.get(f"{url}/readyz", timeout=5).status_code == 503


def test_get_answers_need_no_token(serve: Serve) -> None:
    url, _ = serve(TOKEN)
    assert requests.get(f"{url}/healthz", timeout=5).json() == {"status": "ok"}
    assert requests.get(f"{url}/readyz", timeout=5).status_code == 200
    drain = requests.get(f"{url}/drain", timeout=5).json()
    assert drain["draining"] is False and drain["may_shut_down"] is False


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/healthz"), ("GET", "/drain"), ("POST", "/drain"), ("GET", "/nope"), ("PUT", "/")],
)
def test_every_answer_is_uncacheable_unsniffable_and_names_no_version(
    serve: Serve, method: str, path: str
) -> None:
    url, _ = serve(TOKEN)
    resp = requests.request(method, url + path, timeout=5)
    assert resp.headers["Cache-Control"] == "no-store"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Server"] == "baton-probe"
    assert "Python" not in str(resp.headers)
