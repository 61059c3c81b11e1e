"""The deploy tools' side of a worker probe: the token they send, what a refusal becomes.

Each test asks a real probe (``worker.probe``, served on a loopback port in this
process) through ``ops.probe``, as ``baton drain`` and the preStop hook do.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from http.server import ThreadingHTTPServer

import pytest

from ops.embedded import probe_token
from ops.probe import NO_TOKEN, ProbeClient, ProbeRefused, drain_here, local_url
from worker.probe import ProbeState, start_probe

TOKEN = "client-side-probe-token-0123456789"

Serve = Callable[..., tuple[str, ProbeState]]


@pytest.fixture
def serve() -> Iterator[Serve]:
    servers: list[ThreadingHTTPServer] = []

    def start(token: str | None, in_flight: int = 0) -> tuple[str, ProbeState]:
        state = ProbeState(lambda: (in_flight, 0, 0))
        server = start_probe(state, "127.0.0.1", 0, token)
        assert server is not None
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}", state

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_start_drain_sends_the_token(serve: Serve) -> None:
    url, state = serve(TOKEN)
    answer = ProbeClient(url, TOKEN).start_drain()
    assert answer is not None and answer["draining"] is True
    assert state.draining


@pytest.mark.parametrize(
    ("worker_token", "client_token", "status"),
    [(None, TOKEN, 403), (TOKEN, None, 401), (TOKEN, "", 401), (TOKEN, "wrong", 401)],
)
def test_a_refusal_is_an_error_that_says_why(
    serve: Serve, worker_token: str | None, client_token: str | None, status: int
) -> None:
    url, state = serve(worker_token)
    with pytest.raises(ProbeRefused) as refused:
        ProbeClient(url, client_token).start_drain()
    assert refused.value.status == status
    assert "BATON_PROBE_TOKEN" in str(refused.value)
    assert not state.draining


def test_no_probe_is_none_not_an_error() -> None:
    client = ProbeClient(f"http://127.0.0.1:{_closed_port()}", TOKEN, timeout_s=1)
    assert client.start_drain() is None
    assert client.status() is None


def test_status_needs_no_token(serve: Serve) -> None:
    url, _ = serve(TOKEN)
    status = ProbeClient(url, None).status()
    assert status is not None and status["may_shut_down"] is False


def test_drain_here_drains_and_reports_may_shut_down(serve: Serve) -> None:
    url, state = serve(TOKEN)
    report = drain_here(ProbeClient(url, TOKEN), timeout_s=5, poll_s=0.05)
    assert report.ok and report.error is None and not report.refused
    assert report.in_flight_at_start == 0 and state.draining


def test_drain_here_without_a_token_sends_nothing_and_says_so(serve: Serve) -> None:
    url, state = serve(TOKEN)
    report = drain_here(ProbeClient(url, None), timeout_s=5)
    assert (report.ok, report.refused, report.error) == (False, True, NO_TOKEN)
    assert not state.draining


def test_drain_here_with_a_refused_token_is_a_refusal(serve: Serve) -> None:
    url, _ = serve(TOKEN)
    report = drain_here(ProbeClient(url, "wrong"), timeout_s=5)
    assert report.refused and not report.ok and "(401)" in (report.error or "")


def test_drain_here_gives_up_at_its_deadline_while_a_step_runs(serve: Serve) -> None:
    url, state = serve(TOKEN, in_flight=1)
    report = drain_here(ProbeClient(url, TOKEN), timeout_s=0.3, poll_s=0.05)
    assert not report.ok and not report.refused and "still busy" in (report.error or "")
    assert report.in_flight_at_start == 1 and state.draining


def test_drain_here_without_a_probe_ends_at_once() -> None:
    report = drain_here(ProbeClient(f"http://127.0.0.1:{_closed_port()}", TOKEN), timeout_s=5)
    assert not report.ok and not report.refused and "no probe answers" in (report.error or "")


def test_baton_up_uses_the_environments_token_else_makes_one() -> None:
    assert probe_token({"BATON_PROBE_TOKEN": TOKEN}) == (TOKEN, False)
    made, generated = probe_token({})
    assert generated and len(made) >= 32
    assert probe_token({"BATON_PROBE_TOKEN": ""})[1] is True
    assert probe_token({})[0] != made


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("0.0.0.0", "http://127.0.0.1:8081"),
        ("127.0.0.1", "http://127.0.0.1:8081"),
        ("10.1.2.3", "http://10.1.2.3:8081"),
        ("::", "http://[::1]:8081"),
        ("fd00::5", "http://[fd00::5]:8081"),
    ],
)
def test_drain_local_asks_where_the_probe_listens(host: str, url: str) -> None:
    assert local_url(host, 8081) == url
