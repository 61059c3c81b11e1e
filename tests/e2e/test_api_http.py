"""The HTTP answers of a real ``baton api`` (gunicorn): headers, JSON errors, body limits."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator

import pytest
import requests

from api.headers import SECURITY_HEADERS
from tests import services
from tests.api_process import ApiProcess

MAX_BODY = 1000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, redis_server: str) -> Iterator[ApiProcess]:
    prefix = f"baton-test-{uuid.uuid4().hex[:10]}:"
    api = ApiProcess(
        tmp_path_factory.mktemp("api"),
        redis_server,
        prefix,
        BATON_AUTH="on",
        BATON_MAX_BODY_BYTES=str(MAX_BODY),
    )
    try:
        yield api.wait_ready()
    finally:
        api.close()
        services.delete_prefix(redis_server, prefix)


def _assert_hardened(resp: requests.Response) -> None:
    assert "Server" not in resp.headers, resp.headers
    for name, value in SECURITY_HEADERS.items():
        assert resp.headers.get(name) == value, (name, resp.headers)


def _assert_json_error(resp: requests.Response, status: int) -> None:
    assert resp.status_code == status, resp.text
    assert resp.headers["Content-Type"].startswith("application/json")
    body = resp.json()
    assert isinstance(body, dict) and isinstance(body["error"], str) and body["error"]
    _assert_hardened(resp)


def test_every_answer_is_hardened_and_names_no_server(server: ApiProcess) -> None:
    ok = requests.get(f"{server.url}/healthz", timeout=5)
    assert ok.status_code == 200
    _assert_hardened(ok)
    _assert_hardened(requests.get(f"{server.url}/metrics", timeout=5))
    _assert_json_error(requests.get(f"{server.url}/api/v1/migrations", timeout=5), 401)
    _assert_json_error(requests.get(f"{server.url}/nowhere", timeout=5), 404)
    _assert_json_error(requests.delete(f"{server.url}/api/v1/migrations", timeout=5), 405)


def _chunks(data: bytes, size: int = 100) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def test_a_chunked_body_over_the_limit_is_413(server: ApiProcess) -> None:
    # Given a body larger than BATON_MAX_BODY_BYTES, sent without a length
    headers = {
        "Authorization": f"Bearer {server.token('operator')}",
        "Content-Type": "application/json",
    }
    body = b'{"name": "' + b"x" * (MAX_BODY * 3) + b'"}'
    # When it is posted in chunks, Then it is refused whole as too large (not cut and parsed)
    resp = requests.post(
        f"{server.url}/api/v1/migrations", data=_chunks(body), headers=headers, timeout=10
    )
    assert resp.request.headers.get("Transfer-Encoding") == "chunked"
    _assert_json_error(resp, 413)
    # And so is the same body sent with its length
    sized = requests.post(f"{server.url}/api/v1/migrations", data=body, headers=headers, timeout=10)
    _assert_json_error(sized, 413)


def test_a_chunked_body_within_the_limit_is_read_whole(server: ApiProcess) -> None:
    headers = {
        "Authorization": f"Bearer {server.token('admin')}",
        "Content-Type": "application/json",
    }
    body = b'{"name": "chunky", "role": "viewer"}'
    resp = requests.post(
        f"{server.url}/api/v1/tokens", data=_chunks(body, 7), headers=headers, timeout=10
    )
    assert resp.status_code == 201, resp.text
    assert resp.json()["name"] == "chunky"
    _assert_hardened(resp)


def test_requests_gunicorn_refuses_itself_get_json_too(server: ApiProcess) -> None:
    # A header field over gunicorn's limit never reaches the app: 431, still JSON
    huge = {"X-Padding": "p" * 10_000}
    _assert_json_error(requests.get(f"{server.url}/healthz", headers=huge, timeout=5), 431)
    # And a request line that is not HTTP: 400, still JSON, still no Server header
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        raw = _read_all(sock)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ")
    assert b"\r\nserver:" not in head.lower()
    assert b"Content-Type: application/json" in head and body.startswith(b'{"error":')


def _read_all(sock: socket.socket) -> bytes:
    out = b""
    while chunk := sock.recv(65536):
        out += chunk
    return out


def test_the_server_logged_no_traceback(server: ApiProcess) -> None:
    assert "Traceback" not in server.log()
