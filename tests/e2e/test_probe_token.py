"""A real worker's probe: POST /drain needs BATON_PROBE_TOKEN; SIGTERM needs nothing.

Each worker is a real ``celery -A worker worker`` process with a watchdog
(``tests/harness.py``); its probe takes a free loopback port, found through its
row in the state DB as deploy tooling finds it.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable

import pytest
import requests

from etl_tasks.settings import Settings
from etl_tasks.workers import list_workers
from tests.e2e.conftest import Cluster
from tests.harness import WorkerProcess, run_baton, wait_for

pytestmark = pytest.mark.slow

TOKEN = "e2e-probe-token-0123456789abcdef"
EXIT_PROBE_TOKEN = 3  # `baton drain --local`: no token here, or the probe refused it


@pytest.fixture(autouse=True)
def _no_token_from_the_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    # Each test says which token its worker and its commands have, and no other.
    monkeypatch.delenv("BATON_PROBE_TOKEN", raising=False)


def _probe_url(cluster: Cluster, worker: WorkerProcess) -> str:
    def registered() -> str | None:
        rows = {w["name"]: w for w in list_workers(cluster.db)}
        url = rows.get(worker.name, {}).get("probe_url")
        return str(url) if url else None

    url: str = wait_for(registered, 30, 0.1, f"{worker.name}'s probe in the state DB")
    return url


def _drain_local(
    settings: Settings, url: str, token: str | None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **settings.as_env()}
    env.pop("BATON_PROBE_TOKEN", None)
    if token is not None:
        env["BATON_PROBE_TOKEN"] = token
    return run_baton("drain", "--local", "--url", url, "--timeout", "10", "--json", env=env)


def _post_drain(url: str, token: str | None) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return requests.post(f"{url}/drain", headers=headers, timeout=5)


def test_a_worker_without_a_token_refuses_every_drain_request_but_sigterm_drains_it(
    cluster_factory: Callable[[Settings], Cluster], make_settings: Callable[..., Settings]
) -> None:
    # Given a real worker started without BATON_PROBE_TOKEN
    cluster = cluster_factory(make_settings())
    worker = cluster.start_worker()
    url = _probe_url(cluster, worker)
    assert "BATON_PROBE_TOKEN is not set" in worker.log()
    # When anyone asks it to drain, with or without a token
    for token in (None, TOKEN):
        resp = _post_drain(url, token)
        # Then it refuses (403) and says what to set
        assert resp.status_code == 403, resp.text
        assert "set BATON_PROBE_TOKEN" in resp.json()["error"]
    refused = _drain_local(cluster.settings, url, TOKEN)
    assert refused.returncode == EXIT_PROBE_TOKEN, refused.stdout + refused.stderr
    assert json.loads(refused.stdout)["refused"] is True
    # And it keeps taking steps
    assert requests.get(f"{url}/readyz", timeout=5).status_code == 200
    assert requests.get(f"{url}/drain", timeout=5).json()["draining"] is False
    # And SIGTERM, which needs no token, still drains it: warm shutdown, exit 0
    assert worker.terminate() == 0, worker.log()
    assert "handed back=" in worker.log()


def test_a_worker_with_a_token_drains_only_for_that_token(
    cluster_factory: Callable[[Settings], Cluster], make_settings: Callable[..., Settings]
) -> None:
    # Given a real worker whose probe token is TOKEN
    cluster = cluster_factory(make_settings(probe_token=TOKEN))
    worker = cluster.start_worker()
    url = _probe_url(cluster, worker)
    # When drain requests come without the token, or with another one
    for token in (None, "not-the-token", TOKEN + "x"):
        resp = _post_drain(url, token)
        # Then each is refused (401), and the worker keeps taking steps
        assert resp.status_code == 401, (token, resp.text)
    assert requests.get(f"{url}/readyz", timeout=5).status_code == 200
    # And `baton drain --local` with no token here says so, and sends nothing
    missing = _drain_local(cluster.settings, url, None)
    assert missing.returncode == EXIT_PROBE_TOKEN, missing.stdout + missing.stderr
    assert "BATON_PROBE_TOKEN is not set" in json.loads(missing.stdout)["error"]
    assert requests.get(f"{url}/drain", timeout=5).json()["draining"] is False
    # When the right token comes
    resp = _post_drain(url, TOKEN)
    # Then the worker drains: 202, no longer ready, and nothing in flight
    assert resp.status_code == 202, resp.text
    assert resp.json()["draining"] is True
    assert requests.get(f"{url}/readyz", timeout=5).status_code == 503
    done = _drain_local(cluster.settings, url, TOKEN)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["ok"] is True
    # And SIGTERM then ends it as before: warm shutdown, exit 0
    assert worker.terminate() == 0, worker.log()
    assert "handed back=" in worker.log()
