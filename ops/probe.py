"""Talking to one worker's probe: start its drain (with the probe token), ask how it is doing.

``POST /drain`` needs ``BATON_PROBE_TOKEN`` as a bearer token; ``GET /drain``
is open. Used by ``baton drain`` (through the state DB's ``probe_url``),
``baton rollout``, and ``baton drain --local``, the preStop hook in a pod.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import requests

NO_TOKEN = "BATON_PROBE_TOKEN is not set: a worker's probe refuses POST /drain without it"


class ProbeRefused(Exception):
    """Raised when a probe refuses ``POST /drain``: no token on the worker (403) or not its
    token (401)."""

    def __init__(self, status: int, error: str) -> None:
        self.status = status
        super().__init__(f"the probe refused POST /drain ({status}): {error}")


class ProbeClient:
    """One worker's probe at ``url`` (``http://host:port``), asked with ``token``."""

    def __init__(self, url: str, token: str | None, timeout_s: float = 2) -> None:
        self.url = url.rstrip("/")
        self.token = token or None
        self.timeout_s = timeout_s

    def start_drain(self) -> dict[str, Any] | None:
        """``POST /drain``: the worker's counts, or ``None`` when no probe answers.

        Raises :class:`ProbeRefused` on 401 or 403 (sent even without a token: a worker
        of an older release drains without one, a newer one says why it will not)."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            resp = requests.post(f"{self.url}/drain", headers=headers, timeout=self.timeout_s)
        except requests.RequestException:
            return None
        if resp.status_code in (401, 403):
            raise ProbeRefused(resp.status_code, _error_of(resp))
        return _body(resp)

    def status(self) -> dict[str, Any] | None:
        """``GET /drain`` (open): draining, in flight, may it shut down; ``None`` if no answer."""
        try:
            return _body(requests.get(f"{self.url}/drain", timeout=self.timeout_s))
        except requests.RequestException:
            return None


def local_url(host: str, port: int) -> str:
    """Where a probe listening on ``host:port`` answers on its own machine (``0.0.0.0``,
    every interface, answers on loopback)."""
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _body(resp: requests.Response) -> dict[str, Any] | None:
    try:
        body = resp.json()
    except ValueError:
        return None
    return body if resp.ok and isinstance(body, dict) else None


def _error_of(resp: requests.Response) -> str:
    try:
        return str(resp.json()["error"])
    except (ValueError, KeyError, TypeError):
        return resp.reason or "refused"


@dataclass
class LocalDrain:
    """What ``baton drain --local`` did to the worker whose probe it asked."""

    url: str
    ok: bool = False
    in_flight_at_start: int | None = None
    waited_s: float = 0.0
    error: str | None = None
    refused: bool = False  # no token here, or the probe would not take it

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def drain_here(probe: ProbeClient, timeout_s: float, poll_s: float = 0.5) -> LocalDrain:
    """Drain the worker behind ``probe`` and wait until it may shut down (at most
    ``timeout_s``). It keeps running: its warm shutdown (SIGTERM) comes next."""
    report = LocalDrain(probe.url)
    if probe.token is None:
        report.error, report.refused = NO_TOKEN, True
        return report
    try:
        first = probe.start_drain()
    except ProbeRefused as exc:
        report.error, report.refused = str(exc), True
        return report
    if first is None:
        report.error = f"no probe answers at {probe.url}"
        return report
    report.in_flight_at_start = int(first.get("in_flight", 0))
    started = time.monotonic()
    while True:
        answer = probe.status()
        report.waited_s = round(time.monotonic() - started, 3)
        if answer is None:
            report.error = "the probe stopped answering (the worker has gone)"
            return report
        if answer.get("may_shut_down"):
            report.ok = True
            return report
        if report.waited_s >= timeout_s:
            report.error = f"still busy after {timeout_s:g} s"
            return report
        time.sleep(poll_s)
