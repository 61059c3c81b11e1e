"""The ``baton`` command as operators use it: ``baton up``, ``submit --wait``, ``status``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests
import yaml

from ops.embedded import free_port
from tests.data import build_source, spec_for
from tests.harness import ROOT, run_baton, wait_for

pytestmark = pytest.mark.slow


def test_baton_up_then_submit_wait_status_workers(tmp_path: Path) -> None:
    # Given `baton up` on embedded defaults, in a folder of its own
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "BATON_API_URL": f"http://127.0.0.1:{port}",
        "BATON_SWEEP_INTERVAL_S": "1",
        "BATON_WORKER_HEARTBEAT_S": "0.5",
    }
    for name in ("BATON_BROKER_URL", "BATON_DATABASE_URL", "BATON_KEY_PREFIX", "BATON_PROBE_TOKEN"):
        env.pop(name, None)
    up = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ops.cli",
            "up",
            "--workers",
            "2",
            "--port",
            str(port),
            "--home",
            str(tmp_path / ".baton"),
        ],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        wait_for(lambda: _answers(port), 60, 0.2, "baton up's API")
        wait_for(
            lambda: len(_get(port, "/api/v1/workers")["items"]) == 2,
            60,
            0.2,
            "two workers registered",
        )
        # And each worker got the probe token `baton up` made: a drain without it is
        # refused as unauthorised (401), not as unconfigured (403)
        for worker in _get(port, "/api/v1/workers")["items"]:
            assert requests.post(f"{worker['probe_url']}/drain", timeout=5).status_code == 401
        # (in ./data: `baton up` lets specs reach its own folder and ./data only)
        data = tmp_path / "data"
        data.mkdir()
        source = f"sqlite:///{data / 'legacy.db'}"
        build_source(source, customers=900, orders=200, bad_every=7)
        spec_path = tmp_path / "spec.yaml"
        spec_path.write_text(yaml.safe_dump(spec_for(source, f"sqlite:///{data / 'c.db'}")))
        # When a spec is submitted as YAML and waited for
        done = run_baton("submit", str(spec_path), "--wait", env=env, cwd=tmp_path)
        # Then the command exits 0 and shows the summary
        assert done.returncode == 0, done.stdout + done.stderr
        assert "succeeded" in done.stdout
        listed = json.loads(run_baton("status", "--json", env=env, cwd=tmp_path).stdout)
        assert [m["state"] for m in listed["items"]] == ["succeeded"]
        one = run_baton("status", listed["items"][0]["id"], env=env, cwd=tmp_path)
        assert "order_lines" in one.stdout and one.returncode == 0
        workers = json.loads(run_baton("workers", "--json", env=env, cwd=tmp_path).stdout)
        assert {w["state"] for w in workers["items"]} == {"active"}
        # And rows were quarantined (every 7th order line is bad): --strict says so (1),
        # given the migration by a prefix of its id
        mid = listed["items"][0]["id"]
        detail = json.loads(run_baton("status", mid[:8], "--json", env=env, cwd=tmp_path).stdout)
        assert detail["id"] == mid and detail["rows_quarantined"] > 0
        strict = run_baton("watch", mid[:8], "--strict", env=env, cwd=tmp_path)
        assert strict.returncode == 1 and "quarantined" in strict.stderr, strict.stderr
        # And a spec that fails preflight exits non-zero with the located error
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps(spec_for(source.replace("legacy", "nope"), source)))
        refused = run_baton("submit", str(bad), env=env, cwd=tmp_path)
        assert refused.returncode != 0 and "source/url" in refused.stderr
    finally:
        os.killpg(up.pid, signal.SIGTERM)
        out, _ = up.communicate(timeout=60)
    assert up.returncode == 0, out
    assert "probe token was made for this run" in out, out
    # And it told where the CLI must point, port and state DB included (also in HOME/env)
    state_db = f"sqlite:///{(tmp_path / '.baton' / 'state.db').resolve()}"
    exports = f"export BATON_API_URL=http://127.0.0.1:{port} BATON_DATABASE_URL={state_db} "
    assert exports in out, out
    assert (tmp_path / ".baton" / "env").read_text().startswith(exports)


def _answers(port: int) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).ok
    except requests.RequestException:
        return False


def _get(port: int, path: str) -> dict[str, object]:
    return requests.get(f"http://127.0.0.1:{port}{path}", timeout=5).json()  # type: ignore[no-any-return]


def test_db_upgrade_twice_and_token_create(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "BATON_DATABASE_URL": f"sqlite:///{tmp_path / 's.db'}",
        "PYTHONPATH": str(ROOT),
    }
    for _ in range(2):
        result = run_baton("db", "upgrade", env=env, cwd=tmp_path)
        assert result.returncode == 0 and "up to date" in result.stdout, result.stderr
    token = run_baton(
        "token", "create", "--name", "ci", "--role", "operator", env=env, cwd=tmp_path
    )
    assert token.returncode == 0 and token.stdout.startswith("bt_")


def test_baton_api_serves_with_gunicorn_and_requires_tokens(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "BATON_DATABASE_URL": f"sqlite:///{tmp_path / 's.db'}",
        "PYTHONPATH": str(ROOT),
    }
    env.pop("BATON_AUTH", None)
    assert run_baton("db", "upgrade", env=env, cwd=tmp_path).returncode == 0
    api = subprocess.Popen(
        [sys.executable, "-m", "ops.cli", "api", "--port", str(port), "--workers", "1"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for(lambda: _answers(port), 30, 0.2, "gunicorn")
        assert (
            requests.get(f"http://127.0.0.1:{port}/api/v1/migrations", timeout=5).status_code == 401
        )
        token = run_baton(
            "token", "create", "--name", "t", "--role", "viewer", env=env, cwd=tmp_path
        ).stdout.strip()
        ok = requests.get(
            f"http://127.0.0.1:{port}/api/v1/migrations",
            timeout=5,
            headers={"Authorization": f"Bearer {token}"},
        )
        assert ok.status_code == 200 and ok.json()["items"] == []
    finally:
        api.terminate()
        api.communicate(timeout=30)


def test_auth_off_is_refused_off_loopback(tmp_path: Path) -> None:
    env = {**os.environ, "BATON_AUTH": "off", "PYTHONPATH": str(ROOT)}
    result = run_baton("api", "--host", "0.0.0.0", env=env, cwd=tmp_path)
    assert result.returncode == 2 and "loopback" in result.stderr
