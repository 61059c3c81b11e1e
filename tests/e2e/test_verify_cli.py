"""``baton verify`` as operators and scripts use it: a real API, real workers, its exit codes."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from etl_tasks.settings import Settings
from tests.api_process import ApiProcess
from tests.data import build_source, spec_for, sqlite_url
from tests.e2e.conftest import Cluster
from tests.harness import run_baton, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def api(tmp_path: Path, redis_server: str, key_prefix: str) -> Iterator[ApiProcess]:
    server = ApiProcess(tmp_path, redis_server, key_prefix, BATON_AUTH="on")
    try:
        yield server.wait_ready()
    finally:
        server.close()


def test_baton_verify_exit_codes(
    api: ApiProcess,
    cluster_factory: Callable[[Settings], Cluster],
    make_settings: Callable[..., Settings],
    tmp_path: Path,
) -> None:
    env = {**api.env, "BATON_API_URL": api.url, "BATON_API_TOKEN": api.token("operator")}
    headers = {"Authorization": f"Bearer {env['BATON_API_TOKEN']}"}

    def baton_verify(*args: str) -> tuple[int, str, str]:
        done = run_baton("verify", *args, env=env, cwd=tmp_path, timeout=120)
        return done.returncode, done.stdout, done.stderr

    # Given a migration submitted while no worker runs: it has not succeeded (6)
    source = sqlite_url(tmp_path / "legacy.db")
    target = tmp_path / "cloud.db"
    build_source(source, customers=900, orders=200, bad_every=11)
    spec = spec_for(source, sqlite_url(target), chunk_rows=150)
    resp = requests.post(f"{api.url}/api/v1/migrations", json=spec, headers=headers, timeout=30)
    assert resp.status_code == 201, resp.text
    mid = resp.json()["id"]
    code, _, err = baton_verify(mid)
    assert code == 6 and "has succeeded" in err, err
    assert baton_verify("0" * 32)[0] == 5  # no such migration
    assert baton_verify(mid, "--last")[0] == 5  # never verified
    # When a worker runs it to success, a verification waited for is equal (0)
    cluster = cluster_factory(make_settings(database_url=api.database_url))
    worker = cluster.start_worker()
    wait_for(lambda: _state(api, mid, headers) == "succeeded", 90, 0.2, "the migration")
    code, out, err = baton_verify(mid, "--wait", "--json")
    assert code == 0, out + err
    report = json.loads(out)
    assert report["state"] == "equal" and [s["state"] for s in report["streams"]] == ["equal"] * 2
    # A row changed behind Baton's back: different (1), and the text names it
    with sqlite3.connect(target) as conn:
        conn.execute("""UPDATE "Customers" SET full_name = 'Mallory' WHERE "CustomerId" = 42""")
    code, out, _ = baton_verify(mid, "--wait")
    assert code == 1, out
    assert "different" in out and '["42"]' in out and "'Mallory'" in out, out
    assert baton_verify(mid, "--last", "--json")[0] == 1
    # No worker: no verdict within the timeout (4); the verification stays pending
    assert worker.terminate() == 0, worker.log()
    code, out, _ = baton_verify(mid, "--timeout", "1")
    assert code == 4 and "pending" in out, out
    # A target table gone: the pending verification fails once a worker takes it (3)
    with sqlite3.connect(target) as conn:
        conn.execute("DROP TABLE order_lines")
    cluster.start_worker()
    code, out, _ = baton_verify(mid, "--wait", "--timeout", "60")
    assert code == 3 and "failed" in out, out
    # A token the API refuses (7)
    env["BATON_API_TOKEN"] = "bt_not-a-token"
    assert baton_verify(mid, "--last")[0] == 7


def _state(api: ApiProcess, migration_id: str, headers: dict[str, str]) -> str:
    resp = requests.get(f"{api.url}/api/v1/migrations/{migration_id}", headers=headers, timeout=5)
    state: str = resp.json()["state"]
    if state in ("failed", "cancelled"):
        raise AssertionError(resp.text)
    return state


def test_baton_verify_without_an_api_exits_7(tmp_path: Path) -> None:
    # `baton verify` is an API client only: without an API it says so (7), never hangs
    env = {**os.environ, "BATON_API_URL": "http://127.0.0.1:9"}
    done = run_baton("verify", "0" * 32, env=env, cwd=tmp_path, timeout=60)
    assert done.returncode == 7 and "cannot reach the API" in done.stderr, done.stderr
